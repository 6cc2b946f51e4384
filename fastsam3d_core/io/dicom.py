"""Finding the files of a DICOM series, sorted along the slice normal, with SimpleITK (GDCM)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import SimpleITK as sitk

from .errors import VolumeReadError


def dicom_series(folder: Path) -> dict[str, list[str]]:
    """All DICOM image series directly in a folder (not its subfolders).

    Args:
        folder: the folder to scan.

    Returns:
        Series instance UID -> its file paths, sorted by GDCM by position along the slice normal.
    """
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    return {
        uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids
    }


def series_files_in_folder(folder: Path) -> list[str]:
    """The files of the folder's DICOM series; of several, the one with the most files.

    Several series in one folder are common (a scout, thin and thick reconstructions): the largest
    is most likely the volume wanted, so it is read and a :class:`UserWarning` names it and the
    others. To read another, give the path of one of its files.

    Raises:
        VolumeReadError: the folder holds no DICOM series.
    """
    series = dicom_series(folder)
    if not series:
        raise VolumeReadError(
            f"{folder}: no DICOM series in this folder (subfolders are not searched; "
            "to read a NRRD, NIfTI or MetaImage file, give the file's path)"
        )
    chosen = max(series, key=lambda uid: len(series[uid]))
    if len(series) > 1:
        others = ", ".join(
            f"{uid or '(no UID)'} ({len(series[uid])} files)" for uid in series if uid != chosen
        )
        warnings.warn(
            f"{folder}: {len(series)} DICOM series; reading the largest, "
            f"{chosen or '(no UID)'} ({len(series[chosen])} files); not read: {others}. "
            "Give the path of one of a series' files to read that series.",
            UserWarning,
            stacklevel=3,
        )
    return series[chosen]


def series_files_of(file: Path) -> list[str]:
    """The files of the series that a DICOM file belongs to, sorted; just the file if none.

    A file whose folder holds no series with it (a lone multi-frame file, say) is read alone.
    """
    for files in dicom_series(file.parent).values():
        if any(_same_file(file, other) for other in files):
            return files
    return [str(file)]


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
