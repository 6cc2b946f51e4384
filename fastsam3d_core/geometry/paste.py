"""Post-processing: the model's logits, from crop voxels back onto the volume's own grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crop import CropGrid
from .resample import resample, translation
from .volume import Volume, apply_affine, box_slices


@dataclass(frozen=True, eq=False)
class VolumeBox:
    """A box of volume voxels ``[lo, hi)`` in (i, j, k) and its values.

    Attributes:
        lo, hi: int (3,) corners in volume indices (i, j, k).
        values: ``hi - lo`` shaped array on the volume's grid.
        inside: bool, same shape: voxels whose centre lies in the crop (the crop's footprint);
            a read-only broadcast of True when ``whole``.
        whole: every voxel of the box is in the footprint (always so for a crop parallel to
            the volume's axes).
    """

    lo: np.ndarray
    hi: np.ndarray
    values: np.ndarray
    inside: np.ndarray
    whole: bool = False

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return box_slices(self.lo, self.hi)


def footprint_box(grid: CropGrid, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The smallest box ``[lo, hi)`` of volume indices (i, j, k) holding every voxel whose centre
    lies in the crop, clipped to the volume.

    For a crop parallel to the volume's axes (every crop a session makes) all of the box is in
    the footprint; a rotated crop's box also holds voxels near its corners, which
    :class:`VolumeBox.inside` tells apart.
    """
    corners = np.array(np.meshgrid(*[[-0.5, grid.size - 0.5]] * 3, indexing="ij"))
    mapped = apply_affine(volume.ras_to_ijk @ grid.crop_to_ras, corners.reshape(3, -1).T)
    # Centres i with min <= i < max; the tolerance absorbs rounding of exact lattice edges.
    lo = np.ceil(mapped.min(axis=0) - 1e-6).astype(int)
    hi = np.ceil(mapped.max(axis=0) - 1e-6).astype(int)
    return np.clip(lo, 0, volume.shape), np.clip(hi, 0, volume.shape)


def upsample_logits(logits: np.ndarray, size: int) -> np.ndarray:
    """Low-resolution logits ``(n, n, n)`` to ``(size, size, size)`` float32, both in crop axes
    (d0, d1, d2), trilinear as in training evaluation (align_corners=False, model.md §3.3 step 6;
    see :func:`coarse_to_crop`)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[-1] == size:
        return logits
    coarse_to_fine = coarse_to_crop(logits.shape[-1], size)
    values, _ = resample(logits, coarse_to_fine, np.eye(4), (size,) * 3)
    return values


def coarse_to_crop(coarse: int, size: int) -> np.ndarray:
    """4×4 map from the indices of an ``coarse³`` grid spanning the crop to crop indices.

    With ``factor = size / coarse``, coarse voxel j is centred at crop index
    ``factor·j + (factor − 1)/2``: the placement that trilinear upsampling with
    align_corners=False assumes, so interpolating the coarse grid at the crop's voxel centres
    gives exactly the upsampled values there.
    """
    factor = size / coarse
    matrix = np.diag([factor, factor, factor, 1.0])
    matrix[:3, 3] = (factor - 1) / 2
    return matrix


def logits_on_grid(
    logits: np.ndarray,
    grid: CropGrid,
    target_to_ras: np.ndarray,
    shape: tuple[int, ...],
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop values ``(n, n, n)`` (crop axes) interpolated trilinearly at the voxel centres of
    a target grid (``target_to_ras``, ``shape``): :func:`resample`'s (values, inside)."""
    coarse_to_ras = grid.crop_to_ras @ coarse_to_crop(logits.shape[-1], grid.size)
    source = np.asarray(logits, dtype=np.float32)
    return resample(source, coarse_to_ras, target_to_ras, shape, threshold=threshold)  # type: ignore[arg-type]


def logits_on_volume(
    logits: np.ndarray, grid: CropGrid, volume: Volume, threshold: float | None = None
) -> VolumeBox:
    """Resample crop values (trilinear) onto the volume voxels the crop covers.

    Low-resolution logits are interpolated directly on their own grid (see
    :func:`coarse_to_crop`), which equals upsampling them first at every crop voxel centre and
    saves interpolating a 128³ array onto a possibly much finer volume grid.

    Args:
        logits: ``(n, n, n)`` float, crop axes (d0, d1, d2); n = 32 (model) or the crop size.
        grid: where the crop lies.
        volume: the target grid.
        threshold: if given, the values are the bool mask ``interpolated > threshold``, computed
            without storing the float32 values (what a click needs: the labelmap).

    Returns:
        A :class:`VolumeBox` of float32 values (bool with ``threshold``); values outside the
        footprint are 0 (False).
    """
    lo, hi = footprint_box(grid, volume)
    shape = tuple(int(n) for n in np.maximum(hi - lo, 0))
    dtype = bool if threshold is not None else np.float32
    if 0 in shape:
        empty = np.zeros(shape, dtype=dtype)
        return VolumeBox(lo, hi, empty, empty.astype(bool), whole=True)
    box_to_ras = volume.ijk_to_ras @ translation(lo)
    values, inside = logits_on_grid(logits, grid, box_to_ras, shape, threshold)
    # A crop wholly inside its box comes back as a broadcast True (zero strides), and stays one.
    whole = inside.strides == (0, 0, 0)
    return VolumeBox(lo, hi, values, inside, whole=whole)
