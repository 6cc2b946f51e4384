"""The label a MONAI Label client asks for, and the DICOM SEG of one.

Clients choose the label's file through the request: OHIF asks for ``result_extension=.nrrd``,
``result_dtype=uint8`` and ``result_compress=false`` (its NRRD reader has no gzip) and copies the
voxels straight into its labelmap, so the file is on the grid of the image the server gave it,
in (i, j, k) order. ``output=dicom_seg`` gets the SEG of :mod:`fastsam3d_core.io.dicom_seg`,
written here from that label and the series it was segmented on.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastsam3d_core.geometry import Volume
from fastsam3d_core.io import (
    DicomSeries,
    SegAlgorithm,
    Segment,
    dicom_series_of,
    read_volume,
    write_dicom_seg,
    write_labelmap,
)
from fastsam3d_core.io.label_files import on_grid

#: File types a client may ask for (``result_extension``), MONAI Label's default first.
LABEL_SUFFIXES = (".nii.gz", ".nrrd", ".nii")
#: Voxel types a client may ask for (``result_dtype``).
LABEL_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
#: A segment's colour when the request gives none (RGB in 0..1): Slicer's first segment colour.
DEFAULT_COLOR = (0.5, 0.68, 0.5)


class OutputFolder:
    """A temporary folder of the app's own for the labels and SEGs it answers with: they hold
    patient data, so only the newest ``keep`` files stay (MONAI Label deletes a label once
    sent, but not after a failed request, nor a SEG), and the folder goes when the server ends.
    """

    def __init__(self, keep: int = 16) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fastsam3d-monailabel-"))
        self.keep = keep
        self._files: deque[Path] = deque()
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.path, True)

    def new_file(self, prefix: str, suffix: str) -> Path:
        """A new empty file here; the oldest beyond ``keep`` are deleted."""
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.path)
        os.close(handle)
        with self._lock:
            self._files.append(Path(name))
            while len(self._files) > self.keep:
                self._files.popleft().unlink(missing_ok=True)
        return Path(name)


@dataclass(frozen=True)
class LabelFormat:
    """How to write the label: ``suffix`` (one of :data:`LABEL_SUFFIXES`), voxel ``dtype``, and
    whether an NRRD is gzip-``compress``-ed."""

    suffix: str = LABEL_SUFFIXES[0]
    dtype: str = "uint8"
    compress: bool = True


def label_format(params: Mapping[str, Any]) -> LabelFormat:
    """The format a request's ``result_extension``, ``result_dtype`` and ``result_compress``
    ask for (MONAI Label's names), defaults where absent.

    Raises:
        ValueError: one line naming a value that is not taken and those that are.
    """
    suffix = str(params.get("result_extension") or LABEL_SUFFIXES[0]).lower()
    suffix = suffix if suffix.startswith(".") else "." + suffix
    if suffix not in LABEL_SUFFIXES:
        raise ValueError(f"result_extension {suffix!r} is not written; choose {LABEL_SUFFIXES}")
    dtype = str(params.get("result_dtype") or "uint8")
    if dtype not in LABEL_DTYPES:
        raise ValueError(f"result_dtype {dtype!r} is not written; choose {LABEL_DTYPES}")
    compress = params.get("result_compress", True)
    if isinstance(compress, str):
        compress = compress.strip().lower() not in ("false", "0", "no", "")
    return LabelFormat(suffix, dtype, bool(compress))


def write_label(
    mask: np.ndarray, volume: Volume, label_format: LabelFormat, folder: OutputFolder
) -> Path:
    """Write ``mask`` (``(I, J, K)``, nonzero = the label, written as 1) on ``volume``'s grid
    to a new file of ``label_format`` in ``folder``."""
    name = folder.new_file("label-", label_format.suffix)
    labels = (np.asarray(mask) != 0).astype(label_format.dtype)
    try:
        write_labelmap(name, labels, volume, compress=label_format.compress)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def segments_of_label(
    labels: np.ndarray, label_info: Sequence[Mapping[str, Any]] | None, default_name: str
) -> list[Segment]:
    """One segment per nonzero value of ``labels``, ascending, named and coloured as MONAI
    Label's ``label_info`` gives them in that order (``name``, ``color`` RGB 0..255)."""
    segments = []
    for number, value in enumerate(v for v in np.unique(labels) if v != 0):
        info = label_info[number] if label_info and number < len(label_info) else {}
        info = info if isinstance(info, Mapping) else {}
        name = str(info.get("name") or default_name)
        segments.append(Segment(name, _color(info.get("color")), labels == value))
    return segments


def dicom_seg_of_label(
    series_folder: str | os.PathLike[str],
    label_file: str | os.PathLike[str],
    label_info: Sequence[Mapping[str, Any]] | None,
    algorithm: SegAlgorithm,
    default_name: str,
    folder: OutputFolder,
) -> Path:
    """Write the DICOM SEG of a label file to a new ``.dcm`` in ``folder``, referencing the
    DICOM series in ``series_folder`` (the label on the grid of the image read from it).

    Raises:
        VolumeReadError, ValueError: one line: the folder holds no DICOM series with UIDs, the
            label is on another grid, or it has no voxel.
    """
    volume = read_volume(series_folder)
    series: DicomSeries | None = dicom_series_of(Path(series_folder), volume)
    if series is None:
        raise ValueError(f"{series_folder}: not a DICOM series, so no DICOM SEG can refer to it")
    label = read_volume(label_file)
    labels = on_grid(label.array, label.ijk_to_ras, volume, Path(label_file))
    segments = segments_of_label(labels, label_info, default_name)
    name = folder.new_file("seg-", ".dcm")
    try:
        write_dicom_seg(name, segments, volume, series, algorithm)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _color(value: Any) -> tuple[float, float, float]:
    try:
        rgb = tuple(float(c) / 255.0 for c in list(value)[:3])
    except (TypeError, ValueError):
        return DEFAULT_COLOR
    return rgb if len(rgb) == 3 and all(0.0 <= c <= 1.0 for c in rgb) else DEFAULT_COLOR  # type: ignore[return-value]
