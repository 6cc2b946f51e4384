"""The DICOM series a volume was read from: its files in the volume's slice order and its UIDs.

A DICOM Segmentation (SEG) must name the image it segments: the study, the series, the frame of
reference and, per frame, the source instance. :func:`dicom_series_of` finds the files that
:func:`~fastsam3d_core.io.read_volume` read for a DICOM folder or file, and maps each to its
slice ``k`` of the volume by its position (``ImagePositionPatient``), not by trusting an order:
slice ``k`` of the volume is ``files[k]``. Only headers are read (no pixels are decoded).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ..geometry.volume import Volume
from .dicom import series_files_in_folder, series_files_of

#: DICOM's patient coordinates are LPS, the volume's RAS: x and y change sign.
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
#: Largest distance, in voxels, of a slice's first voxel from where the volume puts it; DICOM
#: positions are decimal strings of at most 16 characters, so they are rounded.
_POSITION_TOLERANCE = 1e-2
#: Largest difference of direction cosines between the files and the volume (DS rounding).
_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSeries:
    """The files of a DICOM series in a volume's slice order, and the series' UIDs.

    Attributes:
        files: one file per slice: slice ``k`` of the volume (``array[:, :, k]``) is ``files[k]``.
        study_uid, series_uid, frame_of_reference_uid: the series' UIDs; ``""`` where the files
            have none (an anonymised export may have blanked them).
        sop_instance_uids: each file's SOP Instance UID, in the order of ``files``; ``""`` where
            a file has none.
    """

    files: tuple[Path, ...]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...] = ()

    def headers(self) -> list[pydicom.Dataset]:
        """The files' headers without their pixel data, in the order of ``files``."""
        return [pydicom.dcmread(file, stop_before_pixels=True) for file in self.files]

    def check_referencable(self, what: str) -> None:
        """Refuse a series that a DICOM object cannot reference: one without a Study, Series or
        SOP Instance UID in every file, or without a Frame of Reference UID.

        Args:
            what: the object that would reference it, for the message (e.g. "a DICOM SEG").

        Raises:
            ValueError: one line naming the folder and the UIDs missing.
        """
        missing = [
            name
            for name, value in (
                ("StudyInstanceUID", self.study_uid),
                ("SeriesInstanceUID", self.series_uid),
                ("FrameOfReferenceUID", self.frame_of_reference_uid),
            )
            if not value
        ]
        if not self.sop_instance_uids or not all(self.sop_instance_uids):
            missing.append("SOPInstanceUID")
        if missing:
            folder = self.files[0].parent if self.files else "the DICOM series"
            raise ValueError(
                f"{folder}: {what} cannot reference this DICOM series: its files have no "
                f"{', '.join(missing)} (an anonymised export may blank them); use the series "
                "as the archive (PACS) holds it"
            )


def dicom_series_of(image: Path, volume: Volume) -> DicomSeries | None:
    """The DICOM series that ``read_volume(image)`` read ``volume`` from, or None if not DICOM.

    Args:
        image: the path given to ``read_volume``: a folder holding a DICOM series, a file of
            one, or another image file (NIfTI, NRRD, MetaImage: then None).
        volume: the volume read from it, ``(I, J, K)``.

    Returns:
        The series with ``files[k]`` the file of slice ``k``, or None for an image that is not
        DICOM.

    Raises:
        VolumeReadError: the folder or series cannot be read (as ``read_volume`` would say).
        ValueError: the files do not lie on the volume's grid (another volume, say), or lack a
            position or orientation (a multi-frame file): one line naming the folder.
    """
    image = Path(image)
    if image.is_dir():
        with warnings.catch_warnings():  # read_volume already warned of other series
            warnings.simplefilter("ignore")
            names = series_files_in_folder(image)
    elif sitk.ImageFileReader.GetImageIOFromFileName(str(image)) == "GDCMImageIO":
        names = series_files_of(image)
    else:
        return None
    files = [Path(name) for name in names]
    headers = [pydicom.dcmread(file, stop_before_pixels=True) for file in files]
    ordered = _files_by_slice(files, headers, volume)
    first = headers[0]
    by_file = {file: str(header.get("SOPInstanceUID", "")) for file, header in zip(files, headers)}
    return DicomSeries(
        files=tuple(ordered),
        study_uid=str(first.get("StudyInstanceUID", "")),
        series_uid=str(first.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        sop_instance_uids=tuple(by_file[file] for file in ordered),
    )


def _files_by_slice(
    files: list[Path], headers: list[pydicom.Dataset], volume: Volume
) -> list[Path]:
    """The files in the volume's k order, each checked to be one whole slice of its grid."""
    folder = files[0].parent
    if len(files) != volume.shape[2]:
        raise ValueError(
            f"{folder}: {len(files)} DICOM file(s) for a volume of {volume.shape[2]} slices "
            "(a multi-frame file?); a DICOM SEG is written for a series of single-slice files"
        )
    by_slice: dict[int, Path] = {}
    for file, header in zip(files, headers):
        _check_plane(file, header, volume)
        k = _slice_index(file, header, volume)
        if k in by_slice:
            raise ValueError(f"{folder}: {file.name} and {by_slice[k].name} are both slice {k}")
        by_slice[k] = file
    return [by_slice[k] for k in range(volume.shape[2])]


def _check_plane(file: Path, header: pydicom.Dataset, volume: Volume) -> None:
    """Refuse a file whose rows and columns are not the volume's i and j axes."""
    orientation = _numbers(header, "ImageOrientationPatient", 6, file)
    rows_ras, columns_ras = orientation[:3] * _LPS_TO_RAS, orientation[3:] * _LPS_TO_RAS
    axes = volume.direction
    if (
        np.abs(rows_ras - axes[:, 0]).max() > _ORIENTATION_TOLERANCE
        or np.abs(columns_ras - axes[:, 1]).max() > _ORIENTATION_TOLERANCE
    ):
        raise ValueError(
            f"{file}: its rows and columns (ImageOrientationPatient) are not the volume's i and "
            "j axes; give the volume read from this series"
        )
    size = (int(header.get("Columns", 0)), int(header.get("Rows", 0)))
    if size != volume.shape[:2]:
        raise ValueError(
            f"{file}: {size[0]} columns × {size[1]} rows, the volume's slices "
            f"{volume.shape[0]} × {volume.shape[1]}; give the volume read from this series"
        )


def _slice_index(file: Path, header: pydicom.Dataset, volume: Volume) -> int:
    """The k of the slice whose first voxel is at the file's ImagePositionPatient."""
    position_ras = _numbers(header, "ImagePositionPatient", 3, file) * _LPS_TO_RAS
    index = volume.ras_to_index(position_ras)
    k = int(np.rint(index[2]))
    if (
        np.abs(index[:2]).max() > _POSITION_TOLERANCE
        or abs(index[2] - k) > _POSITION_TOLERANCE
        or not 0 <= k < volume.shape[2]
    ):
        where = ", ".join(f"{value:.3f}" for value in index)
        raise ValueError(
            f"{file}: its first voxel (ImagePositionPatient) is at voxel ({where}) of the "
            "volume, not at the start of one of its slices; give the volume read from this "
            "series"
        )
    return k


def _numbers(header: pydicom.Dataset, keyword: str, count: int, file: Path) -> np.ndarray:
    """The ``count`` numbers of a multi-valued attribute, or a one-line error naming the file."""
    try:
        values = np.array([float(value) for value in header.get(keyword) or ()])
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"{file}: no valid {keyword} ({count} numbers); a DICOM SEG is written for a series "
            "of single-slice images"
        )
    return values
