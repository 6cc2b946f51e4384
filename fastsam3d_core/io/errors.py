"""The error raised for anything that cannot be read as a volume or a segmentation."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ITK_PREFIX = re.compile(r"^(ITK ERROR|sitk::ERROR): (\w+\(0x[0-9a-fA-F]+\): )?")
# ITK's warnings: "WARNING: In /source/file.cxx, line 123" then "ClassName (0x55d0…): text".
_ITK_WARNING_SOURCE = re.compile(r"^WARNING: In .*, line \d+$")
_ITK_OBJECT = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\): ")


class ITKWarning(UserWarning):
    """A warning that ITK printed while reading or writing a file, with the file's name."""


class VolumeReadError(ValueError):
    """A file or folder that cannot be read; the message names it and says what is wrong.

    It is a :class:`ValueError`, so code that catches bad input in general catches it too.
    """


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
) -> Iterator[None]:
    """Turn what ITK prints on the process's stderr into :class:`ITKWarning` s naming ``path``.

    ITK writes its warnings (e.g. "Non-orthogonal direction matrix coerced to orthogonal") to
    file descriptor 2 from C++, with source file names and object addresses, where callers can
    neither catch nor reword them. Here they are captured for the duration of the block and
    re-issued as Python warnings, which applications show in their own way. Messages that
    contain one of the ``ignore`` texts are dropped.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
    for message in _itk_messages(text):
        if any(ignored in message for ignored in ignore):
            continue
        warnings.warn(f"{Path(path).name}: {message}", ITKWarning, stacklevel=3)


def _itk_messages(text: str) -> list[str]:
    """The messages in ITK's stderr text, without source locations and object addresses."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        if line and not _ITK_WARNING_SOURCE.match(line):
            messages.append(_ITK_OBJECT.sub("", line))
    return messages
