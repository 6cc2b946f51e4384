"""The error raised for anything that cannot be read as a volume or a segmentation."""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_ITK_PREFIX = re.compile(r"^(ITK ERROR|sitk::ERROR): (\w+\(0x[0-9a-fA-F]+\): )?")
# ITK's warnings: "WARNING: In /source/file.cxx, line 123" then "ClassName (0x55d0…): text".
_ITK_WARNING_SOURCE = re.compile(r"^WARNING: In .*, line \d+$")
_ITK_OBJECT = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\): ")


_CAPTURE_LOCK = threading.Lock()


class ITKWarning(UserWarning):
    """A warning that ITK printed while reading or writing a file, with the file's name."""


class VolumeReadError(ValueError):
    """A file or folder that cannot be read; the message names it and says what is wrong.

    It is a :class:`ValueError`, so code that catches bad input in general catches it too.
    """


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is, in words, when it exists but is neither a regular file nor a folder.

    Reading a named pipe blocks until another program writes to it, and reading ``/dev/zero``
    never ends: such paths are refused by name before anything opens them.

    Returns:
        e.g. ``"a named pipe (FIFO)"``, ``"a character device"``; None for a regular file, a
        folder, or a path that does not exist.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for is_kind, words in kinds if is_kind(mode)), "a special file")


def itk_reason(error: BaseException, limit: int = 300) -> str:
    """The informative part of a SimpleITK exception, without source file names and pointers.

    Args:
        error: the exception SimpleITK raised (its text spans several lines).
        limit: the most characters to keep.

    Returns:
        One line, e.g. ``"_nrrdEncodingGzip_read: expected 120000 bytes but received 79931"``.
    """
    lines = [line.strip() for line in str(error).splitlines()[1:]]
    kept = []
    for line in lines:
        line = _ITK_PREFIX.sub("", line).removeprefix("[nrrd] ")
        if line and "trouble" not in line and not line.endswith(":"):
            kept.append(line)
    reason = " ".join(kept) or str(error).strip()
    return reason if len(reason) <= limit else "…" + reason[-limit:]


@contextmanager
def itk_warnings_as_python(
    path: str | os.PathLike[str], ignore: tuple[str, ...] = ()
) -> Iterator[list[str]]:
    """Turn what ITK prints on the process's stderr into :class:`ITKWarning` s naming ``path``.

    ITK writes its warnings (e.g. "Non-orthogonal direction matrix coerced to orthogonal") to
    file descriptor 2 from C++, with source file names and object addresses, where callers can
    neither catch nor reword them. Here they are captured for the duration of the block and, once
    it completes, re-issued as Python warnings, which applications show in their own way. When
    the block raises, they are not warned: they usually explain the error, and the list this
    yields holds them for its message. Messages that contain an ``ignore`` text are dropped.

    File descriptor 2 belongs to the whole process: one capture runs at a time, and a block
    entered meanwhile (another thread, or nested) runs without one. What other threads write to
    stderr during a capture is re-issued with it. Where stderr cannot be redirected (no
    descriptor 2, as in some GUI processes) the block runs without capture.

    Yields:
        A list that holds the captured messages, without source locations, once the block ends.
    """
    messages: list[str] = []
    if not _CAPTURE_LOCK.acquire(blocking=False):
        yield messages
        return
    try:
        capture = _redirect_stderr()
        try:
            yield messages
        finally:
            text = _restore_stderr(capture)
            messages += [m for m in _itk_messages(text) if not any(i in m for i in ignore)]
    finally:
        _CAPTURE_LOCK.release()
    for message in messages:
        warnings.warn(f"{Path(path).name}: {message}", ITKWarning, stacklevel=3)


def _redirect_stderr() -> tuple[IO[bytes], int] | None:
    """Point descriptor 2 at a temporary file; (file, saved descriptor), or None if impossible."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        captured = tempfile.TemporaryFile()
    except (OSError, ValueError):
        return None
    try:
        saved = os.dup(2)
    except OSError:
        captured.close()
        return None
    os.dup2(captured.fileno(), 2)
    return captured, saved


def _restore_stderr(capture: tuple[IO[bytes], int] | None) -> str:
    """Put descriptor 2 back; what was written to it meanwhile."""
    if capture is None:
        return ""
    captured, saved = capture
    os.dup2(saved, 2)
    os.close(saved)
    with captured:
        captured.seek(0)
        return captured.read().decode("utf-8", errors="replace")


def _itk_messages(text: str) -> list[str]:
    """The messages in ITK's stderr text, without source locations and object addresses."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        if line and not _ITK_WARNING_SOURCE.match(line):
            messages.append(_ITK_OBJECT.sub("", line))
    return messages
