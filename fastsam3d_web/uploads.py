"""What an uploaded image may be, checked before the scene's readers open it.

The readers do what a header says: a MetaImage's ``ElementDataFile`` or a detached NRRD's
``data file`` may name any file the server can read (``/etc/passwd``, ``../../secret``), which
the page would then show in its views. So an uploaded header may name only files uploaded with
it. And a small compressed file can announce, or inflate to, gigabytes: its size is checked
from its header, and gzip streams are inflated with a cap, before any reader allocates it.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

# The largest image an upload may hold once decompressed, in GB (10^9 bytes); the server's
# operator may raise (or, in tests, lower) it.
MAX_IMAGE_GB_ENV = "FASTSAM3D_WEB_MAX_IMAGE_GB"
DEFAULT_MAX_IMAGE_GB = 4.0
# Inflated this much at a time while counting a gzip stream's bytes.
INFLATE_CHUNK = 1 << 24

# The header fields that name data files, wherever they stand (a parser that finds one where
# these patterns do not would need a file that they refuse anyway): MetaImage's key takes
# '=' or ':', NRRD's field ': ' (and ':=' is refused alike).
_DATA_FILE_FIELDS = (
    re.compile(rb"ElementDataFile[ \t]*[=:][ \t]*([^\r\n]*)", re.IGNORECASE),
    re.compile(rb"data[ \t]*file[ \t]*:=?[ \t]*([^\r\n]*)", re.IGNORECASE),
)
# ITK's MetaImage reader also takes its key followed by line breaks, NULs or other text before
# the '=' ("ElementDataFile\n = /etc/passwd" reads /etc/passwd): the key anywhere else than in
# the form above names a file by rules this check does not follow, so it is refused.
_METAIMAGE_KEY = re.compile(rb"ElementDataFile", re.IGNORECASE)
# A numbered series of data files: "slice%03d.raw 1 40 1 [subdim]" (printf format, first, last,
# step), as MetaImage and NRRD write it. One integer conversion, nothing else.
_NUMBERED = re.compile(r"([^%]*)(%0?[0-9]{0,2}d)([^%]*)")


class UploadRefused(ValueError):
    """An upload that the page does not open; the message says why, in one line."""


def check_uploads(paths: list[Path]) -> None:
    """Refuse uploaded files (all in one folder) whose headers name files that were not
    uploaded with them, or that decompress to more than :func:`max_image_bytes`.

    Raises:
        UploadRefused: naming the file and what to do.
    """
    names = {path.name for path in paths}
    for path in paths:
        for name in data_file_names(path.read_bytes(), len(names)):
            if name.upper() == "LOCAL":  # MetaImage: the voxels follow the header
                continue
            if name not in names:
                raise UploadRefused(
                    f"{path.name}: its header reads its voxels from {name!r}, which is not a "
                    "file uploaded with it; upload the header together with its data file "
                    "(named in the header without a folder); the current image stays"
                )
    limit = max_image_bytes()
    for path in paths:
        _check_decompressed_size(path, limit)


def data_file_names(content: bytes, most: int) -> Iterator[str]:
    """Every data file name that a header in ``content`` gives, as written (a LIST's lines, a
    numbered series' names, up to ``most`` + 1 of them); text that names them oddly yields
    itself, to be refused."""
    written_plainly = {match.start() for match in _DATA_FILE_FIELDS[0].finditer(content)}
    for key in _METAIMAGE_KEY.finditer(content):
        if key.start() not in written_plainly:
            yield content[key.start() : key.end() + 40].decode("latin-1")
    for field in _DATA_FILE_FIELDS:
        for match in field.finditer(content):
            value = match.group(1).decode("latin-1").strip()
            if value.upper().startswith("LIST"):
                # The file names follow, one a line, to the end of the header file.
                rest = content[match.end() :].decode("latin-1")
                yield from (line.strip() for line in rest.splitlines() if line.strip())
            elif "%" in value:
                yield from _numbered_names(value, most)
            else:
                yield value


def _numbered_names(value: str, most: int) -> Iterator[str]:
    """The names of a numbered series ``format first last step [subdim]``; the value itself
    when it is not one, or when it names more than ``most`` files (they cannot all have come)."""
    fields = value.split()
    pattern = _NUMBERED.fullmatch(fields[0]) if fields else None
    try:
        first, last, step = (int(number) for number in fields[1:4])
        numbers = range(first, last + (1 if step > 0 else -1), step)
    except ValueError:  # too few numbers, or a step of 0
        pattern = None
    if pattern is None or len(fields) > 5 or not 0 < len(numbers) <= most:
        yield value
        return
    for number in numbers:
        yield fields[0] % number


def max_image_bytes() -> int:
    """The most bytes an uploaded image may decompress to: ``$FASTSAM3D_WEB_MAX_IMAGE_GB``, or
    :data:`DEFAULT_MAX_IMAGE_GB`.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get(MAX_IMAGE_GB_ENV, "").strip()
    try:
        gigabytes = float(text) if text else DEFAULT_MAX_IMAGE_GB
    except ValueError:
        gigabytes = -1.0
    if not gigabytes > 0:
        raise ValueError(f"{MAX_IMAGE_GB_ENV}={text}: give the largest upload in GB, e.g. 4")
    return int(gigabytes * 1e9)


def memory_short_for(image_bytes: int) -> int | None:
    """The server's free memory, in bytes, when it cannot hold an image of ``image_bytes``
    twice (the scene's image and the logic's copy); None when it can, or is not known."""
    from fastsam3d_core.io.images import available_memory

    available = available_memory()
    return available if available is not None and 2 * image_bytes > available else None


def _check_decompressed_size(path: Path, limit: int) -> None:
    """Refuse ``path`` if its header announces more than ``limit`` bytes of voxels, or more than
    the memory free holds twice (the scene's image and the logic's copy), or if it is a gzip
    stream that inflates to more than ``limit`` (counted with a cap, nothing kept)."""
    announced = _announced_bytes(path)
    with open(path, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    if (announced is not None and announced > limit) or (gzipped and _inflates_past(path, limit)):
        raise UploadRefused(
            f"{path.name}: decompresses to more than {limit / 1e9:g} GB, more than this page "
            f"opens ({MAX_IMAGE_GB_ENV} on the server sets it); crop or downsample it first; "
            "the current image stays"
        )
    available = memory_short_for(announced) if announced is not None else None
    if available is not None:
        raise UploadRefused(
            f"{path.name}: decompresses to {announced / 1e9:.1f} GB; opening it needs about "
            f"{2 * announced / 1e9:.1f} GB of memory and the server has {available / 1e9:.1f} "
            "GB free; crop or downsample it first; the current image stays"
        )


def _announced_bytes(path: Path) -> int | None:
    """The voxel bytes that ``path``'s header announces; None when ITK reads no header there
    (then the scene's readers refuse it)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only: nothing is decompressed past it
        tiny = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())
    except RuntimeError:
        return None
    voxels = 1
    for size in reader.GetSize():
        voxels *= size
    return voxels * tiny.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()


def _inflates_past(path: Path, limit: int) -> bool:
    """Whether the gzip members in ``path`` inflate to more than ``limit`` bytes. Inflates at
    most ``limit`` + one chunk; a damaged stream counts as far as it goes."""
    total, pending = 0, path.read_bytes()
    while pending[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, INFLATE_CHUNK)
                pending = inflater.unconsumed_tail
                total += len(chunk)
                if total > limit:
                    return True
                if not chunk and not pending:
                    return False  # truncated: the readers refuse it
        except zlib.error:
            return False  # damaged: the readers refuse it
        pending = inflater.unused_data  # the next member, if any
    return False
