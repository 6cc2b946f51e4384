"""The rules a request must keep that both the replica (:mod:`.service`) and the proxy guard
(:mod:`.proxy_guard`) enforce, and the JSON reply that refuses one. Neither imports the other for
them: the guard runs inside Ray's HTTP proxy, the replica starts the guard's Ray."""

from __future__ import annotations

import json

from . import protocol


class RequestError(Exception):
    """A bad request: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_length(content_length: str | None) -> None:
    """Refuse (413) a body larger than a float32 crop before reading it into memory."""
    largest = protocol.crop_bytes("float32")
    if content_length is not None and content_length.isdigit() and int(content_length) > largest:
        raise RequestError(413, f"the body is {content_length} bytes; a crop is at most {largest}")


def error_body(message: str) -> bytes:
    """The JSON body of a refusal: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
