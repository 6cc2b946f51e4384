"""Text for people: one-line messages from exceptions (no torch or ITK import here)."""

from __future__ import annotations


def one_line(text: str) -> str:
    """The text's non-empty lines joined with spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def os_error_reason(error: OSError) -> str:
    """An OSError's reason and file, e.g. "Permission denied: /x", without "[Errno 13]"."""
    if not error.strerror:
        return str(error)
    return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
