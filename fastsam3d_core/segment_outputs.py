"""The files one segmentation is written to: a Slicer ``.seg.nrrd``, a labelmap, or a DICOM
Segmentation (SEG) that references the DICOM series it was made on.

Every output is checked before the model runs (its kind, its folder, that a SEG has a DICOM
series to reference), and none is written when one of them cannot be: a SEG of an empty
segmentation is refused before any file is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .io.suffixes import DICOM_SEG_SUFFIX, LABELMAP_SUFFIXES, SEGMENTATION_SUFFIX

if TYPE_CHECKING:
    from .geometry import Volume
    from .io import Segment
    from .io.dicom_seg import SegAlgorithm
    from .io.dicom_source import DicomSeries


@dataclass(frozen=True)
class SegmentedFile:
    """A file written: its path, its kind (``"segmentation"``: a Slicer ``.seg.nrrd``;
    ``"labelmap"``; ``"dicom-seg"``) and the object's size in voxels."""

    output: Path
    kind: str
    voxels: int


def output_kind(output: Path) -> str:
    """``"segmentation"``, ``"labelmap"`` or ``"dicom-seg"`` (``.dcm``), by the file's name.

    Raises:
        ValueError: another suffix (the message lists those written).
    """
    name = output.name.lower()
    if name.endswith(SEGMENTATION_SUFFIX):
        return "segmentation"
    if name.endswith(LABELMAP_SUFFIXES):
        return "labelmap"
    if name.endswith(DICOM_SEG_SUFFIX):
        return "dicom-seg"
    raise ValueError(
        f"{output.name}: write {SEGMENTATION_SUFFIX} (Slicer segmentation), a labelmap "
        f"({', '.join(LABELMAP_SUFFIXES)}) or {DICOM_SEG_SUFFIX} (DICOM SEG, for an image read "
        "from DICOM)"
    )


def check_outputs(
    outputs: Sequence[Path], image: Path, volume: Volume, shown: str = ""
) -> DicomSeries | None:
    """Check that each output can be written for this image: a labelmap's format holds its
    geometry, and a SEG has a DICOM series with identifiers to reference.

    Args:
        shown: how the image is named in messages (a DICOMweb URL read into a folder), else
            ``image``.

    Returns:
        The image's DICOM series where a SEG is among the outputs, else None.

    Raises:
        ValueError: in one line, naming the output.
    """
    from .io import check_labelmap_format

    names = [output.resolve() for output in outputs]
    repeated = next((o for o, n in zip(outputs, names) if names.count(n) > 1), None)
    if repeated is not None:
        raise ValueError(f"{repeated}: given twice as an output; give each file once")
    series = None
    for output in outputs:
        kind = output_kind(output)
        if kind == "labelmap":
            check_labelmap_format(output, volume.ijk_to_ras)
        elif kind == "dicom-seg" and series is None:
            series = _referenced_series(output, image, volume, shown or str(image))
    return series


def _referenced_series(output: Path, image: Path, volume: Volume, shown: str) -> DicomSeries:
    from .io.dicom_source import dicom_series_of

    try:
        series = dicom_series_of(image, volume)
        if series is not None:
            series.check_referencable("a DICOM SEG")
    except ValueError as error:  # a DICOMweb series' folder means nothing to the user: its URL
        raise ValueError(str(error).replace(str(image), shown)) from None
    if series is None:
        raise ValueError(
            f"{output.name}: a DICOM SEG references the DICOM series it segments, and {shown} "
            f"is not DICOM; write {SEGMENTATION_SUFFIX} or a labelmap instead"
        )
    return series


def write_outputs(
    outputs: Sequence[Path],
    segment: Segment | Sequence[Segment],
    volume: Volume,
    series: DicomSeries | None,
    algorithm: Callable[[], SegAlgorithm] | None,
    say: Callable[[str], None],
) -> list[SegmentedFile]:
    """Write ``segment`` (its mask on ``volume``'s grid), or several segments, to each output,
    in order (a labelmap: segment n as value n, the later winning where they overlap); a SEG
    names the model that ``algorithm`` returns (called once the model has run).

    Raises:
        ValueError: a SEG is asked for and the segments are empty (checked before any file is
            written), or the SEG cannot be made.
    """
    from .io import write_labelmap, write_segmentation

    segments = [segment] if not isinstance(segment, Sequence) else list(segment)
    voxels = sum(int(s.mask.sum()) for s in segments)
    kinds = [output_kind(output) for output in outputs]
    if "dicom-seg" in kinds and voxels == 0:
        raise ValueError(
            "the segmentation is empty: no DICOM SEG written (a SEG holds only segmented "
            "frames); add or move a point inside the object"
        )
    written = []
    for output, kind in zip(outputs, kinds):
        if kind == "segmentation":
            write_segmentation(output, segments, volume)
        elif kind == "labelmap":
            write_labelmap(output, _labels(segments), volume)
        else:
            _write_seg(output, [s for s in segments if s.mask.any()], volume, series, algorithm)
        say(f"wrote {output} ({voxels} voxels)")
        written.append(SegmentedFile(output, kind, voxels))
    return written


def _labels(segments: Sequence[Segment]) -> np.ndarray:
    """One labelmap of segments: uint8 (uint16 beyond 255), segment n as value n."""
    if len(segments) == 1:
        return segments[0].mask
    labels = np.zeros(segments[0].mask.shape, np.uint8 if len(segments) < 256 else np.uint16)
    for value, segment in enumerate(segments, 1):
        labels[segment.mask.astype(bool)] = value
    return labels


def _write_seg(
    output: Path,
    segments: Sequence[Segment],
    volume: Volume,
    series: DicomSeries | None,
    algorithm: Callable[[], SegAlgorithm] | None,
) -> None:
    from .io.dicom_seg import write_dicom_seg

    if series is None:  # check_outputs finds it; a caller that skipped it learns here
        raise ValueError(f"{output.name}: no DICOM series to reference (see check_outputs)")
    if algorithm is None:
        raise ValueError(f"{output.name}: a SEG names the model that made it; give algorithm")
    write_dicom_seg(output, list(segments), volume, series, algorithm())
