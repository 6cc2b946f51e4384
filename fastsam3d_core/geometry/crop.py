"""The model's input window: a 128³ grid at 1.5 mm, preprocessed as the models were trained.

Training (model.md §4.1) reoriented every volume to the canonical (RAS+) axis order, resampled it to
1.5 mm isotropic, cut a 128³ window and z-normalised it with the mean and unbiased std of the
window's voxels > 0. A :class:`CropGrid` reproduces the first three steps in one resampling: its
axes are the volume's own axes, permuted and flipped to the nearest of +R, +A, +S (as
reorientation to canonical does), at 1.5 mm. Crop voxel indices are written (d0, d1, d2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .resample import resample
from .volume import Volume, apply_affine

CROP_SIZE = 128
CROP_SPACING_MM = 1.5
# Voxel sizes a CT or MRI can have. Outside, the file's spacing is wrong (often metres or micro-
# metres written as millimetres) and a 192 mm crop would hold a fraction of a voxel or the
# whole scan as a speck: refused rather than segmented into an empty mask.
SPACING_RANGE_MM = (0.01, 100.0)


def check_segmentable(volume: Volume) -> None:
    """Refuse a volume the models cannot segment meaningfully, saying why.

    Raises:
        TypeError: ``volume`` is not a :class:`Volume`.
        ValueError: NaN or infinite voxels (every crop touching one would normalise to NaN), or
            a voxel size outside :data:`SPACING_RANGE_MM`.
    """
    if not isinstance(volume, Volume):
        raise TypeError(
            f"expected a fastsam3d_core.Volume (e.g. fastsam3d_core.io.read_volume(path)), "
            f"got {type(volume).__name__}"
        )
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"{bad} of {array.size} voxels are NaN or infinite; the model needs finite values "
                "(replace them, e.g. by the background value, and save the image again)"
            )
    spacing = volume.spacing
    low, high = SPACING_RANGE_MM
    if np.any(spacing < low) or np.any(spacing > high):
        raise ValueError(
            f"implausible voxel spacing {np.round(spacing, 6).tolist()} mm (expected {low:g} to "
            f"{high:g} mm); check the file's spacing and units"
        )


def nearest_ras_axes(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each RAS axis, the volume axis closest to it and the sign that points it along +RAS.

    Args:
        direction: unit axis directions as columns (3, 3) (:attr:`Volume.direction`).

    Returns:
        axes (3,) int and signs (3,) ±1: RAS axis r is ``signs[r] * direction[:, axes[r]]``.
    """
    cosines = np.abs(direction)  # [RAS axis, volume axis]
    axes = np.zeros(3, dtype=int)
    # Greedy on the largest |cosine| first, so that each volume axis is used once.
    for _ in range(3):
        ras_axis, volume_axis = np.unravel_index(np.argmax(cosines), cosines.shape)
        axes[ras_axis] = volume_axis
        cosines[ras_axis, :] = -1
        cosines[:, volume_axis] = -1
    signs = np.sign(direction[np.arange(3), axes])
    return axes, np.where(signs == 0, 1.0, signs)


@dataclass(frozen=True, eq=False)
class CropGrid:
    """A cubic grid placed in RAS: ``crop_to_ras`` maps crop indices (d0, d1, d2) to RAS mm."""

    crop_to_ras: np.ndarray
    size: int = CROP_SIZE

    @property
    def ras_to_crop(self) -> np.ndarray:
        return np.linalg.inv(self.crop_to_ras)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.size)

    def to_crop(self, point_ras: np.ndarray) -> np.ndarray:
        """Continuous crop indices of RAS points ``(..., 3)``."""
        return apply_affine(self.ras_to_crop, point_ras)

    def contains(self, point_ras: np.ndarray) -> bool:
        """Whether a RAS point falls inside the grid (edges at ±0.5 voxel)."""
        index = self.to_crop(point_ras)
        return bool(np.all(index >= -0.5) and np.all(index < self.size - 0.5))

    def key(self) -> bytes:
        """Identity for caches: the affine rounded to a micrometre."""
        return np.round(self.crop_to_ras, 3).tobytes() + bytes([self.size % 256])


def crop_grid_around(
    volume: Volume, center_ras: np.ndarray, size: int = CROP_SIZE, spacing: float = CROP_SPACING_MM
) -> CropGrid:
    """The crop centred on a point, shifted to stay inside the volume where the volume is larger.

    Along each axis where the volume is longer than the crop, the crop is moved (never by more
    than needed) to lie within the volume, so it holds as much image as possible; where the volume
    is shorter, the crop is centred on the volume. The crop's voxels are then snapped to the
    lattice that resampling the whole volume to ``spacing`` (edges kept) would give, as in
    training, so a volume already at that spacing is cropped without interpolation. The point
    always lies inside the crop.
    """
    axes, signs = nearest_ras_axes(volume.direction)
    crop_to_ras = np.eye(4)
    crop_to_ras[:3, :3] = volume.direction[:, axes] * signs * spacing
    centre = np.full(3, (size - 1) / 2)
    crop_to_ras[:3, 3] = np.asarray(center_ras, dtype=np.float64) - crop_to_ras[:3, :3] @ centre
    # Shifts below are in crop voxels: crop index c moves to c + shift of the unshifted grid.
    lo, hi = _volume_extent_in_crop(volume, CropGrid(crop_to_ras, size))
    longer = hi - lo >= size
    shift = np.where(longer, np.clip(0, lo + 0.5, hi - size + 0.5), (lo + hi) / 2 - centre)
    snapped = lo + 0.5 + np.round(shift - lo - 0.5)
    snapped -= longer & (snapped > hi - size + 0.5 + 1e-6)
    # The lattice can leave a strip of under one crop voxel at a volume edge (lengths are rarely
    # multiples of the spacing) outside every crop: a click there moves its crop one voxel over
    # that edge instead, so that it stays inside its own crop.
    click = centre - snapped
    snapped += (click >= size - 0.5 - 1e-6).astype(float) - (click < -0.5).astype(float)
    crop_to_ras[:3, 3] += crop_to_ras[:3, :3] @ snapped
    return CropGrid(crop_to_ras, size)


def _volume_extent_in_crop(volume: Volume, grid: CropGrid) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in volume.shape], indexing="ij"))
    in_crop = apply_affine(grid.ras_to_crop @ volume.ijk_to_ras, corners.reshape(3, -1).T)
    return in_crop.min(axis=0), in_crop.max(axis=0)


@dataclass(frozen=True, eq=False)
class Crop:
    """A normalised model input and where it lies.

    Attributes:
        image: ``(128, 128, 128)`` float32, z-normalised, axes (d0, d1, d2).
        affine: 4×4 map from crop indices (d0, d1, d2) to RAS mm.
        grid: the same placement as a :class:`CropGrid`.
    """

    image: np.ndarray
    grid: CropGrid

    @property
    def affine(self) -> np.ndarray:
        return self.grid.crop_to_ras


def z_normalise(window: np.ndarray) -> np.ndarray:
    """(x − mean) / std with the mean and unbiased std of the voxels > 0 (model.md §4.1).

    Windows with fewer than two voxels > 0, or no spread among them, fall back to the statistics
    of all voxels, and a constant window becomes zeros.

    Returns:
        float32, the window's shape.
    """
    # float64, so that values near float32's limits neither overflow the sums nor the result.
    values = np.asarray(window, dtype=np.float64)
    foreground = values[values > 0]
    if foreground.size < 2 or float(foreground.std()) == 0.0:
        foreground = values.ravel()
    std = float(foreground.std(ddof=1)) if foreground.size > 1 else 0.0
    return ((values - foreground.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def extract_crop(volume: Volume, grid: CropGrid) -> Crop:
    """Resample the volume (trilinear, zero outside) into the grid and z-normalise it."""
    window, _ = resample(volume.array, volume.ijk_to_ras, grid.crop_to_ras, grid.shape)
    return Crop(z_normalise(window), grid)
