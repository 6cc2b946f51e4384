"""The error raised for anything that cannot be read as a volume or a segmentation."""

from __future__ import annotations

import re

_ITK_PREFIX = re.compile(r"^(ITK ERROR|sitk::ERROR): (\w+\(0x[0-9a-fA-F]+\): )?")


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
