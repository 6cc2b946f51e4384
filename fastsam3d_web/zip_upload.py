"""Uploaded (or dropped) files written into the page's folder and checked, a zip unpacked first.

A DICOM series travels best as one zip. Its entries are unpacked into the upload's own folder,
flat (each under its own name), then checked like any upload (:func:`.uploads.check_uploads`).
Nothing in a zip reaches outside that folder or inflates without bound: an entry whose name
climbs out (``../x``, ``/etc/x``, ``C:\\x``: zip-slip) or is a link is refused, and so is a zip
whose entries announce more than the page opens, before anything is inflated; while unpacking,
the bytes are counted again with the same cap, so an entry whose header lies stops there.

The standard library's :mod:`zipfile` reads them: no further dependency, it reads the central
directory (names and sizes) without inflating anything, it streams an entry in bounded reads,
and it checks each entry's CRC-32 and announced size as it reads (a lying header fails there).

Every function here touches files only (no MRML): the page runs them off its event loop.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from .uploads import MAX_IMAGE_GB_ENV, UploadRefused, check_uploads, max_image_bytes

# At most this many entries in one zip: a long DICOM series has a few thousand slices.
MAX_ZIP_ENTRIES = 20_000
# Copied this much at a time while unpacking an entry (and counting its bytes).
COPY_CHUNK = 1 << 20
# What archivers add beside the user's files: skipped, never opened.
_CLUTTER = ("__MACOSX/", ".DS_Store", "Thumbs.db")

Reporter = Callable[[str], None]


def upload_name(name: str | None) -> str:
    """The name an uploaded file is written under: the browser's name without any folder.

    Raises:
        UploadRefused: the name is no file's (empty, ``.``, ``..``).
    """
    own = Path(name or "").name  # never a folder the client names
    if own in ("", ".", ".."):
        raise UploadRefused(f"{name!r}: not a file name; the current image stays")
    return own


def unpacked_and_checked(
    paths: list[Path], folder: Path, report: Reporter | None = None
) -> list[Path]:
    """The uploaded files ``paths`` (written in ``folder``), each zip replaced by its entries,
    once all are checked (:func:`.uploads.check_uploads`); ``report`` is told, in a line, what is
    being done (for the page's progress line).

    Raises:
        UploadRefused: a zip that is refused, or a check failed; one line that names the file.
        ValueError: no file came.
    """
    if not paths:
        raise ValueError("no file was uploaded")
    unpacked = []
    for path in paths:
        if not is_zip(path):
            unpacked.append(path)
            continue
        if report is not None:
            report(f"Unpacking {path.name}...")
        unpacked.extend(unpack_zip(path, folder))
        path.unlink()  # its entries replace it
    if report is not None:
        report(f"Checking {_shown(unpacked)}...")
    check_uploads(unpacked)  # before any reader follows a header's file names or inflates
    return unpacked


def unpack_zip(archive: Path, folder: Path, limit: int | None = None) -> list[Path]:
    """``archive``'s files written flat into ``folder`` (each by its own name; by its whole
    path, '/' made '_', where two share a name); at most ``limit`` bytes in all (default
    :func:`.uploads.max_image_bytes`).

    Raises:
        UploadRefused: an entry's name leaves the folder, an entry is a link or encrypted, too
            many entries, more bytes than ``limit`` announced or inflated, or a damaged zip;
            one line that names the zip.
    """
    limit = max_image_bytes() if limit is None else limit
    try:
        with zipfile.ZipFile(archive) as opened:
            entries = _checked_entries(archive.name, opened.infolist(), limit)
            names = _flat_names(entries)
            paths = []
            left = limit
            for entry, name in zip(entries, names):
                target = folder / name
                if target.exists():
                    raise UploadRefused(
                        f"{archive.name}: holds {name!r} twice (or beside a file uploaded with "
                        "it); the current image stays"
                    )
                left -= _copy_counted(opened.open(entry), target, left, archive.name, limit)
                paths.append(target)
    except UploadRefused:
        raise  # already one line naming the zip
    # zlib, lzma and bz2 raise their own errors (or OSError, ValueError) on damaged data.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
            zlib.error, lzma.LZMAError, OSError, ValueError) as error:  # fmt: skip
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UploadRefused(
            f"{archive.name}: a damaged or unsupported zip ({reason}); the current image stays"
        ) from error
    if not paths:
        raise UploadRefused(f"{archive.name}: holds no file; the current image stays")
    return paths


def _checked_entries(shown: str, entries: list, limit: int) -> list:
    """The zip's file entries (folders and archivers' clutter left out), once every name stays
    inside the folder, none is a link or encrypted, and their announced sizes fit ``limit``."""
    if len(entries) > MAX_ZIP_ENTRIES:
        raise UploadRefused(
            f"{shown}: holds {len(entries)} entries, more than the {MAX_ZIP_ENTRIES} this page "
            "unpacks; the current image stays"
        )
    files = []
    for entry in entries:
        name = entry.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        drive = bool(parts) and len(parts[0]) == 2 and parts[0].endswith(":")
        if name.startswith(("/", "\\")) or ".." in parts or drive:
            raise UploadRefused(
                f"{shown}: its entry {name!r} points outside the zip's folder (zip-slip); "
                "the current image stays"
            )
        if stat.S_ISLNK(entry.external_attr >> 16):
            raise UploadRefused(f"{shown}: its entry {name!r} is a link; the current image stays")
        if entry.flag_bits & 0x1:
            raise UploadRefused(
                f"{shown}: its entry {name!r} is encrypted; zip it without a password; the "
                "current image stays"
            )
        if entry.is_dir() or any(part in _CLUTTER or f"{part}/" in _CLUTTER for part in parts):
            continue
        files.append(entry)
    announced = sum(entry.file_size for entry in files)
    if announced > limit:
        raise UploadRefused(_too_large(shown, limit))
    return files


def _flat_names(entries: list) -> list[str]:
    """Each entry's name in the flat folder: its own, or its whole path where names repeat."""
    own = [PurePosixPath(entry.filename.replace("\\", "/")).name for entry in entries]
    if len(set(own)) == len(own):
        return own
    return ["_".join(PurePosixPath(e.filename.replace("\\", "/")).parts) for e in entries]


def is_zip(path: Path) -> bool:
    """Whether ``path`` is a zip: named so, or starting as one (a local file header, or the
    end record of an empty zip)."""
    with open(path, "rb") as file:
        head = file.read(4)
    return path.suffix.lower() == ".zip" or head in (b"PK\x03\x04", b"PK\x05\x06")


def _copy_counted(source, target: Path, left: int, shown: str, limit: int) -> int:
    """Inflate the opened entry ``source`` into ``target``, at most ``left`` bytes (of
    ``limit`` for the whole zip); the bytes written."""
    written = 0
    with source, open(target, "wb") as sink:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if written > left:
                raise UploadRefused(_too_large(shown, limit))
            sink.write(chunk)
    return written


def _too_large(shown: str, limit: int) -> str:
    return (
        f"{shown}: unpacks to more than {limit / 1e9:g} GB, more than this page opens "
        f"({MAX_IMAGE_GB_ENV} on the server sets it); the current image stays"
    )


def _shown(paths: list[Path]) -> str:
    """How a progress line names these files."""
    if len(paths) == 1:
        return paths[0].name
    return f"{len(paths)} files"
