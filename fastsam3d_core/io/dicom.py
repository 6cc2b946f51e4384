"""Finding the files of a DICOM series, sorted along the slice normal, with SimpleITK (GDCM).

The files are checked before ITK reads them, because ITK's ImageSeriesReader spaces whatever
slices it is given evenly between the first and the last, and only logs a warning: a missing
slice stretches the spacing, a duplicate squeezes it, and the volume is segmented on the wrong
grid. GDCM, for its part, leaves a file it cannot parse (a truncated one) out of the series
without a word.
"""

from __future__ import annotations

import mmap
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ._atomic import same_file
from .errors import VolumeReadError, itk_reason, itk_warnings_as_python

_POSITION = "0020|0032"  # ImagePositionPatient: the slice's first voxel, LPS mm
_ORIENTATION = "0020|0037"  # ImageOrientationPatient: direction cosines of rows, then columns
_PIXEL_DATA = b"\xe0\x7f\x10\x00"  # the tag (7FE0,0010), little endian
#: Largest difference of direction cosines between slices of one orientation (DS rounding).
_ORIENTATION_TOLERANCE = 1e-4


def dicom_series(folder: Path) -> dict[str, list[str]]:
    """All DICOM image series directly in a folder (not its subfolders).

    Args:
        folder: the folder to scan.

    Returns:
        Series instance UID -> its file paths, sorted by GDCM by position along the slice normal.
    """
    # An empty result is reported by the callers, in their words; ITK's own note is dropped.
    with itk_warnings_as_python(folder, ignore=("No Series were found",)):
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        return {
            uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            for uid in ids
        }


def series_files_in_folder(folder: Path) -> list[str]:
    """The files of the folder's DICOM series; of several, the one with the most files.

    Several series in one folder are common (a scout, thin and thick reconstructions): the largest
    is most likely the volume wanted, so it is read and a :class:`UserWarning` names it and the
    others. To read another, give the path of one of its files.

    Raises:
        VolumeReadError: the folder holds no DICOM series, or a damaged DICOM image file; the
            series read is not one even grid of slices (see :func:`checked_slices`).
    """
    series = dicom_series(folder)
    _refuse_left_out_images(folder, series)
    if not series:
        _refuse_named_pipes(folder)
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
    return checked_slices(series[chosen])


def series_files_of(file: Path) -> list[str]:
    """The files of the series that a DICOM file belongs to, sorted; just the file if none.

    A file whose folder holds no series with it (a lone multi-frame file, say) is read alone.

    Raises:
        VolumeReadError: the folder holds a damaged DICOM image file; the series is not one even
            grid of slices (see :func:`checked_slices`).
    """
    series = dicom_series(file.parent)
    for files in series.values():
        if any(same_file(file, other) for other in files):
            _refuse_left_out_images(file.parent, series)
            return checked_slices(files)
    return [str(file)]


def checked_slices(files: list[str]) -> list[str]:
    """The files of a series in order along the slice normal, once checked to make one even grid.

    Each file's header is read (its pixels are not decoded) and the series refused if a file
    cannot be read, if the slices differ in orientation, if two share a position (a duplicate),
    if the spacing between neighbours varies by more than 1 % of the median or 0.01 mm (a
    missing slice), or if the slices step sideways (a gantry tilt): ITK would read any of these
    as an even, straight grid with the wrong geometry.

    A lone file (a multi-frame image, say) is not checked, nor a series whose files lack a
    position or orientation (multi-frame files keep them per frame): there is nothing to check.

    Raises:
        VolumeReadError: naming the file(s) at fault and what to do.
    """
    if len(files) < 2:
        return files
    read = [_slice_header(file) for file in files]
    headers = [header for header in read if header is not None]
    if len(headers) < len(read):
        return files
    positions = np.array([position for position, _ in headers])
    orientations = np.array([orientation for _, orientation in headers])
    _check_orientations(files, orientations)
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    ordered = [files[i] for i in order]
    _check_spacing(ordered, heights[order])
    _check_not_sheared(ordered, positions[order], normal)
    return ordered


def _slice_header(file: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A slice's position and orientation, or ``None`` if it lacks either."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        with itk_warnings_as_python(file):
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeReadError(
            f"{file}: this file of the DICOM series cannot be read ({itk_reason(error)}); "
            "re-export the complete series"
        ) from error
    if not (reader.HasMetaDataKey(_POSITION) and reader.HasMetaDataKey(_ORIENTATION)):
        return None
    position = _numbers(reader.GetMetaData(_POSITION), 3)
    orientation = _numbers(reader.GetMetaData(_ORIENTATION), 6)
    return None if position is None or orientation is None else (position, orientation)


def _numbers(text: str, count: int) -> np.ndarray | None:
    """The ``count`` finite numbers of a multi-valued DICOM decimal string, else ``None``."""
    try:
        values = np.array([float(value) for value in text.split("\\")])
    except ValueError:
        return None
    return values if values.shape == (count,) and np.all(np.isfinite(values)) else None


def _check_orientations(files: list[str], orientations: np.ndarray) -> None:
    """Refuse slices that do not all share the first slice's orientation.

    Slices of another orientation (a localizer in the series, say) cannot be stacked with it.
    """
    differ = np.abs(orientations - orientations[0]).max(axis=1) > _ORIENTATION_TOLERANCE
    if differ.any():
        other = int(np.argmax(differ))
        raise VolumeReadError(
            f"{Path(files[0]).parent}: DICOM slices of different orientations in one series: "
            f"{Path(files[other]).name} ({_cosines(orientations[other])}) and "
            f"{Path(files[0]).name} ({_cosines(orientations[0])}); "
            "put the slices of each orientation in a folder of their own"
        )


def _cosines(orientation: np.ndarray) -> str:
    return "orientation " + "\\".join(f"{value:g}" for value in orientation)


def _check_spacing(files: list[str], heights: np.ndarray) -> None:
    """Refuse slices (sorted by ``heights`` along the normal) at one position or unevenly spaced.

    The tolerance, 1 % of the median spacing or 0.01 mm whichever is larger, allows for the
    rounding of positions written as decimal strings.
    """
    steps = np.diff(heights)
    expected = float(np.median(steps))
    tolerance = max(0.01 * expected, 0.01)
    folder, names = Path(files[0]).parent, [Path(file).name for file in files]
    for k, step in enumerate(steps):
        pair = f"{names[k]} and {names[k + 1]}"
        if step <= tolerance:
            raise VolumeReadError(
                f"{folder}: two DICOM files at the same slice position ({heights[k]:g} mm along "
                f"the slice normal): {pair}; remove the duplicate, or, if they are different "
                "images (echoes, phases), give each its own folder"
            )
        if abs(step - expected) > tolerance:
            raise VolumeReadError(
                f"{folder}: DICOM slices unevenly spaced: expected {expected:.4g} mm (the median "
                f"spacing), found {step:.4g} mm between {pair} (a missing slice?); "
                "re-export the complete series"
            )


def _check_not_sheared(files: list[str], positions: np.ndarray, normal: np.ndarray) -> None:
    """Refuse slices (in order) that step sideways as well as along their normal: a gantry-
    tilted CT. ITK would stack them straight, every slice shifted by up to the total drift.

    The tolerance per step is that of :func:`_check_spacing`.
    """
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    sideways = np.linalg.norm(steps - along[:, None] * normal, axis=1)
    tolerance = max(0.01 * float(np.median(along)), 0.01)
    if sideways.max() > tolerance:
        tilt = np.degrees(np.arctan2(sideways.max(), along[np.argmax(sideways)]))
        raise VolumeReadError(
            f"{Path(files[0]).parent}: the DICOM slices are sheared (gantry tilt about "
            f"{tilt:.1f} degrees: each slice shifted {sideways.max():.3g} mm sideways); convert "
            "the series with a tool that corrects gantry tilt (dcm2niix; 3D Slicer's DICOM "
            "import with acquisition geometry regularization) and give that file"
        )


def _refuse_named_pipes(folder: Path) -> None:
    """Refuse a folder holding a named pipe: GDCM then finds no series in it (devices and
    sockets it skips)."""
    for path in sorted(folder.iterdir()):
        if path.is_fifo():
            raise VolumeReadError(
                f"{path}: a named pipe (FIFO), not a regular file, which keeps GDCM from finding "
                "the DICOM series of its folder; move it out of the folder"
            )


def _refuse_left_out_images(folder: Path, series: dict[str, list[str]]) -> None:
    """Refuse a DICOM image file in the folder that GDCM left out of every series.

    GDCM leaves out a file it cannot parse, a truncated one say (even by one byte), so the series
    reads with a gap or, without its first or last slice, with no sign at all. Files that do not
    start as DICOM files do, and DICOM files without pixel data (DICOMDIR, structure sets,
    reports), are not images and are let be.
    """
    listed = {Path(file).name for files in series.values() for file in files}
    for path in sorted(folder.iterdir()):
        if path.name not in listed and path.is_file() and _is_unreadable_image(path):
            raise VolumeReadError(
                f"{path}: a DICOM image file that cannot be read (truncated or damaged); "
                "re-export the complete series, or remove this file if it is not part of it"
            )


def _is_unreadable_image(path: Path) -> bool:
    """Whether a file is DICOM (a 128-byte preamble, ``DICM``) with pixel data ITK cannot read."""
    try:
        with open(path, "rb") as file:
            if file.read(132)[128:] != b"DICM":
                return False
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data.find(_PIXEL_DATA) < 0:
                    return False
    except OSError as error:
        raise VolumeReadError(
            f"{path}: cannot open this file of the DICOM folder ({error.strerror}); "
            "make it readable, or move it out of the folder"
        ) from error
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_as_python(path):
            reader.ReadImageInformation()
    except RuntimeError:
        return True
    return False
