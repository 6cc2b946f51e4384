"""Writing a file so that a failure never leaves a partial file behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from .errors import itk_reason


def write_atomically(path: Path, suffix: str, write: Callable[[Path], None]) -> None:
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
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.partial{suffix}"
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
