"""The DICOM series behind the page's current image, whose files a DICOM SEG references.

A SEG names the study, the series, the frame of reference and each slice's instance of the
image it segments: the page keeps the series' files (a download from a DICOMweb server, an
upload) for as long as their image is the current one, and gives the engine the series
(``logic.setDicomSource``). Another image replaces them.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ImageSource:
    """Where the current image came from.

    Attributes:
        series: the core ``DicomSeries`` (files in the volume's slice order, UIDs); None when
            the image is not DICOM, or its files do not make the volume shown.
        folder: the page's own folder holding the files (an upload, a download), removed when
            another image replaces this one; None for the user's own files (IMAGE).
        server: the DICOMweb base URL the series came from, where its SEG is stored; None when
            it came from elsewhere.
        shown: how messages name the files where ``folder``'s path would mean nothing to the
            user (``DICOMweb server URL, series UID``); None: by their paths.
    """

    series: Any = None
    folder: Path | None = None
    server: str | None = None
    shown: str | None = None

    def discard(self) -> None:
        """Remove the page's copy of the files (nothing of the user's)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file, as the scene's reader decides it."""
    from trame_slicer.core.volumes_reader import VolumesReader

    if not Path(path).is_file():
        return False
    with warnings.catch_warnings():  # pydicom's notes on a file that is no DICOM
        warnings.simplefilter("ignore")
        return VolumesReader.is_dcm_file(str(path))


def image_files(path: Path) -> list[str]:
    """The files that make the image at ``path``: a folder's DICOM series as the core picks
    and checks it (the largest; a gap or mixed orientations refused in one line), a DICOM
    file's series, or the file itself (NRRD, NIfTI, ...).

    Raises:
        ValueError: a folder without a DICOM series, or a series that is not one even grid.
    """
    from fastsam3d_core.io.dicom import series_files_in_folder, series_files_of

    if path.is_dir():
        return series_files_in_folder(path)
    if is_dicom_file(path):
        return series_files_of(path)
    return [str(path)]


def dicom_series_for(path: Path, volume_node: Any, shown: str | None = None) -> tuple:
    """(the DICOM series at ``path`` (a folder or a file of it) that ``volume_node`` was read
    from, its files in the node's slice order, ""), or (None, why not in one line) when its
    series does not make this volume: the image still opens, only without a DICOM SEG.
    ``shown``: how the reason names the files (see :class:`ImageSource`)."""
    from fastsam3d_mrml.mrml_io import volume_from_node

    return dicom_series_for_volume(path, volume_from_node(volume_node), shown)


def dicom_series_for_volume(path: Path, volume: Any, shown: str | None = None) -> tuple:
    """:func:`dicom_series_for` of the core ``Volume`` read from ``path`` (no MRML: it may
    run off the event loop)."""
    from fastsam3d_core.io.dicom_source import dicom_series_of

    try:
        return dicom_series_of(path, volume), ""
    except ValueError as error:
        reason = reworded(error, path, shown) if shown else str(error).splitlines()[0]
        return None, f"no DICOM SEG for this image: {reason}"


def reworded(error: BaseException, folder: Path, shown: str) -> str:
    """``error``, said of the page's own copy of some files (``folder``, a temporary folder),
    as one line about what the user knows them as (``shown``): the folder's path left out,
    and the advice for files on one's own disk (re-export, another folder) with it."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    for path in (f"{folder}/", f"{folder}: ", str(folder)):
        text = text.replace(path, "")
    reason = text.split("; ")[0]
    if reason.count("(") > reason.count(")"):  # advice inside parentheses: cut with it
        reason = reason[: reason.rindex(" (")]
    return f"{shown}: {reason.replace(' in this folder', ' among its files')}"
