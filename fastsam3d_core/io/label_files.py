"""Structures read from label files onto an image's grid: a DICOM SEG, a Slicer ``.seg.nrrd``
or a labelmap, by segment number or name (a labelmap: by value).

What ``segment --start``, evaluation and fine-tuning take as an existing segmentation or as
labels; one way to pick a structure for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import VolumeReadError
from .suffixes import DICOM_SEG_SUFFIX, SEGMENTATION_SUFFIXES

if TYPE_CHECKING:
    from ..geometry import Volume
    from .dicom_source import DicomSeries
    from .segmentation import Segment

# Grids agree when their affines differ by less than this (mm, and per unit of direction).
GRID_TOLERANCE = 1e-3


def is_segment_file(path: Path) -> bool:
    """A file of named segments (a ``.seg.nrrd`` or a ``.dcm`` SEG), not a labelmap."""
    return path.name.lower().endswith((*SEGMENTATION_SUFFIXES, DICOM_SEG_SUFFIX))


def read_segments(path: Path, volume: Volume, series: DicomSeries | None = None) -> list[Segment]:
    """The segments of a SEG or ``.seg.nrrd``, their masks on ``volume``'s grid.

    Raises:
        VolumeReadError, ValueError: in one line naming the file: unreadable, a SEG of another
            series than ``series``, or a grid that does not fit the image's.
    """
    from .segmentation import Segment, read_segmentation

    if path.name.lower().endswith(DICOM_SEG_SUFFIX):
        from .dicom_seg import read_dicom_seg

        segments = read_dicom_seg(path, volume, series)
        if not segments:  # a LABELMAP SEG of its background alone
            raise ValueError(f"{path}: the SEG holds no segment")
        return segments
    segments, geometry = read_segmentation(path)
    return [
        Segment(s.name, s.color, on_grid(s.mask, geometry.ijk_to_ras, volume, path), s.tags)
        for s in segments
    ]


def choose_segments(
    segments: Sequence[Segment], choice: int | str | None, path: Path
) -> list[Segment]:
    """The segments ``choice`` picks: a number (1 = the first), a name (any case), or all.

    Raises:
        ValueError: no segment has that number or name (the message lists them).
    """
    if choice is None:
        return list(segments)
    if isinstance(choice, int):
        if not 1 <= choice <= len(segments):
            raise ValueError(f"{path}: segment {choice} picks a segment by number, 1 to "
                             f"{len(segments)}")  # fmt: skip
        return [segments[choice - 1]]
    chosen = [s for s in segments if s.name.lower() == choice.lower()]
    if not chosen:
        raise ValueError(f"{path}: no segment named {choice!r} (it has "
                         f"{', '.join(repr(s.name) for s in segments)})")  # fmt: skip
    return chosen


def read_structure(
    path: Path, volume: Volume, choice: int | str | None, series: DicomSeries | None = None
) -> np.ndarray:
    """The voxels of the structure ``choice`` picks in a label file, bool ``(I, J, K)`` on
    ``volume``'s grid: segments by number or name; a labelmap's value (None: every nonzero).

    Raises:
        VolumeReadError, ValueError: in one line naming the file.
    """
    path = Path(path)
    if is_segment_file(path):
        chosen = choose_segments(read_segments(path, volume, series), choice, path)
        return np.any([s.mask for s in chosen], axis=0)
    from .images import read_volume

    if isinstance(choice, str) and not choice.isdigit():
        raise ValueError(f"{path}: a labelmap has no names; pick its structure by value")
    if choice is not None and int(choice) == 0:
        raise ValueError(f"{path}: value 0 is the background; pick a structure's value")
    labels = read_volume(path)
    values = on_grid(labels.array, labels.ijk_to_ras, volume, path)
    return values != 0 if choice is None else values == int(choice)


def read_label_volume(path: Path, image: Volume) -> Volume:
    """Labels for ``image``: a labelmap as it is; a DICOM SEG's segments on ``image``'s grid as
    their numbers (segment 1 is value 1).

    Raises:
        VolumeReadError, ValueError: in one line naming the file.
    """
    from ..geometry import Volume
    from .images import read_volume

    path = Path(path)
    if not path.name.lower().endswith(DICOM_SEG_SUFFIX):
        return read_volume(path)
    return Volume(labelmap_of(read_segments(path, image)), image.ijk_to_ras)


def labelmap_of(segments: Sequence[Segment]) -> np.ndarray:
    """Segment ``n`` (1 = the first) as value ``n``, uint16 ``(I, J, K)``; a later segment
    wins where two overlap (a labelmap holds one value per voxel)."""
    values = np.zeros(segments[0].mask.shape, np.uint16)
    for number, segment in enumerate(segments, 1):
        values[segment.mask] = number
    return values


def on_grid(array: np.ndarray, ijk_to_ras: np.ndarray, volume: Volume, path: Path) -> np.ndarray:
    """``array`` (on the grid ``ijk_to_ras``) on ``volume``'s grid: the same grid, or the same
    spacing and axes shifted by whole voxels (Slicer crops a ``.seg.nrrd`` to its segments).

    Raises:
        ValueError: the grids differ otherwise (another spacing, orientation or a shift by part
            of a voxel).
    """
    offset = volume.ras_to_ijk @ np.asarray(ijk_to_ras, np.float64)
    shift = np.round(offset[:3, 3])
    if not (np.allclose(offset[:3, :3], np.eye(3), atol=GRID_TOLERANCE)
            and np.allclose(offset[:3, 3], shift, atol=GRID_TOLERANCE)):  # fmt: skip
        raise VolumeReadError(
            f"{path}: its voxel grid is not the image's (another spacing, orientation or "
            "origin); give labels on the image's own grid"
        )
    placed = np.zeros(volume.shape, array.dtype)
    lo = shift.astype(int)
    target = tuple(slice(max(a, 0), min(a + n, size)) for a, n, size in
                   zip(lo, array.shape, volume.shape))  # fmt: skip
    source = tuple(slice(t.start - a, t.stop - a) for t, a in zip(target, lo))
    if all(t.stop > t.start for t in target):
        placed[target] = array[source]
    return placed
