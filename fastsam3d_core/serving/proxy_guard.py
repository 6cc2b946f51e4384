"""What Ray Serve's HTTP proxy checks before a request may reach a replica.

Ray Serve's proxy answers ``/-/routes`` and ``/-/healthz`` itself, and hands a request to a
replica as soon as its headers arrive: the replica then reads the body from the proxy while it
holds one of its few request slots. A handful of clients that send a few bytes of a crop and
stall would hold every slot, and nobody else's request would be answered.

This middleware runs inside the proxy (Serve imports :func:`middlewares` from the import path in
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, which ``fastsam3d serve`` sets for the Ray it
starts): it asks every request, Ray's own paths included, for the token, and receives the whole
body, within a deadline (408) and a crop's size (413), before passing the request on. The proxy
is asynchronous and has no request slots: a stalled upload costs it one idle coroutine.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Awaitable
from typing import Any, Callable

from . import protocol
from .request_rules import RequestError, check_length, error_body

# The import path Serve calls in its proxy for a list of middlewares.
CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
# Settings for the proxy process, which only inherits Ray's environment. The token travels as
# its SHA-256: the environment of Ray's processes need not hold the secret itself.
TOKEN_SHA256_VARIABLE = "FASTSAM3D_PROXY_TOKEN_SHA256"
BODY_TIMEOUT_VARIABLE = "FASTSAM3D_PROXY_BODY_TIMEOUT_S"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def proxy_environment(token: str | None, body_timeout_s: float) -> dict[str, str]:
    """The environment variables that install the guard in the proxy of a Ray started with
    them."""
    environment = {
        CALLBACK_VARIABLE: f"{__name__}.middlewares",
        BODY_TIMEOUT_VARIABLE: repr(float(body_timeout_s)),
    }
    if token is not None:
        environment[TOKEN_SHA256_VARIABLE] = token_sha256(token)
    return environment


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def middlewares() -> list:
    """Serve's proxy callback: the guard, configured from this process's environment."""
    from starlette.middleware import Middleware

    return [
        Middleware(
            ProxyGuard,
            token_sha256=os.environ.get(TOKEN_SHA256_VARIABLE) or None,
            body_timeout_s=float(os.environ.get(BODY_TIMEOUT_VARIABLE, "30")),
        )
    ]


class ProxyGuard:
    """ASGI middleware: the token on every path, and a complete body in time, or an error."""

    def __init__(self, app: Any, token_sha256: str | None, body_timeout_s: float) -> None:
        self.app = app
        self.token_sha256 = token_sha256
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the service has none; refused before it is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        try:
            self._check_token(headers.get("authorization", b"").decode("latin-1"))
            check_length(headers.get("content-length", b"").decode("latin-1") or None)
            messages = await asyncio.wait_for(_whole_body(receive), self.body_timeout_s)
        except asyncio.TimeoutError:
            message = f"the body did not arrive within {self.body_timeout_s:g} s"
            await _reply(send, 408, message, close=True)
            return
        except RequestError as error:
            await _reply(send, error.status, str(error))
            return
        if messages is None:  # the client left
            return
        await self.app(scope, _replay(messages, receive), send)

    def _check_token(self, authorization: str) -> None:
        if self.token_sha256 is None:
            return
        given = protocol.bearer_token(authorization)
        if not hmac.compare_digest(token_sha256(given), self.token_sha256):
            raise RequestError(401, "missing or wrong token (send Authorization: Bearer TOKEN)")


async def _whole_body(receive: Receive) -> list[Message] | None:
    """The request's body messages up to the last; None if the client disconnects first.

    Raises:
        RequestError: 413 as soon as the body outgrows a float32 crop.
    """
    largest, size, messages = protocol.crop_bytes("float32"), 0, []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
        if size > largest:
            raise RequestError(413, f"the body exceeds {largest} bytes, the most a crop takes")
        messages.append(message)
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the body received already, then waits on the connection (for
    its disconnect) as the original does."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _reply(send: Send, status: int, message: str, close: bool = False) -> None:
    """A JSON error; with ``close``, the connection closes after it (a stalled client's)."""
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
