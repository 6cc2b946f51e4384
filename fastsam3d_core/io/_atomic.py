"""Writing a file so that a failure never leaves a partial file behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

from .errors import itk_reason


def write_atomically(path: Path, suffix: str, write: Callable[[Path], object]) -> None:
    """Write through ``write`` to a temporary file beside ``path``, then rename it into place.

    The temporary name ends in ``suffix`` so that writers that choose the format from the
    extension (SimpleITK) write the right one. ``os.replace`` is atomic within a folder: readers
    see the old file or the complete new one, never a partial file, and a failed write leaves the
    folder as it was.

    Args:
        path: the file to create or replace.
        suffix: the file's extension, e.g. ``".nii.gz"``.
        write: writes the complete file to the path it is given.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        OSError: writing or renaming failed (SimpleITK's errors are turned into this).
    """
    _check_folder(path)
    temporary = _hidden_beside(path, f"partial{suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except RuntimeError as error:  # SimpleITK reports failed writes as RuntimeError
        temporary.unlink(missing_ok=True)
        raise OSError(f"could not write {path}: {itk_reason(error)}") from error
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if str(path) in str(error):
            raise
        raise OSError(error.errno, f"could not write {path}: {error.strerror or error}") from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_output_path(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Path:
    """Check, before any slow work, that a file can be written at ``path`` without harm.

    Args:
        path: the file to create or replace.
        inputs: files the command reads; None entries are skipped.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ValueError: ``path`` is one of the inputs (also through a link or another spelling), or
            a folder.
        OSError: its folder does not exist, is not a folder, or does not accept new files
            (read-only, no permission, full).
    """
    path = Path(path)
    for given in inputs:
        if given is not None and same_file(path, given):
            raise ValueError(
                f"{path}: the output would overwrite the input {given}; choose another name"
            )
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name, e.g. {path / 'out.seg.nrrd'}")
    folder = _check_folder(path)
    probe = _hidden_beside(path, "probe")
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        # The reason without the probe's own name, which would only puzzle.
        raise OSError(error.errno, f"cannot write in {folder}: {error.strerror or error}") from None
    return path


def _hidden_beside(path: Path, ending: str) -> Path:
    """A new hidden name in the folder of ``path``, for a temporary file. At most 100 bytes
    (UTF-8) of the name are kept, so that an output name close to the file system's limit
    (255 bytes) still has a temporary one."""
    kept = path.name.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore")
    return path.parent / f".{kept}.{uuid.uuid4().hex[:12]}.{ending}"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: an existing one (through links or other spellings
    too), or, where one does not exist yet, one path (two outputs of a command)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return Path(a).resolve() == Path(b).resolve()


def _check_folder(path: Path) -> Path:
    """The folder that ``path`` would be written in, which must exist."""
    folder = path.parent
    if not folder.is_dir():
        kind = NotADirectoryError if folder.exists() else FileNotFoundError
        what = "is not a folder" if folder.exists() else "does not exist"
        raise kind(f"cannot write {path}: {folder} {what}; create the folder first")
    return folder
