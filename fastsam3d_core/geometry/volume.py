"""A 3-D scalar array with its full geometry.

Axis convention, used everywhere in the core: ``array[i, j, k]`` is indexed in (i, j, k) order, the
voxel-index order of ITK, NIfTI and VTK (the reverse of the (k, j, i) order that SimpleITK's and
Slicer's NumPy views use). ``ijk_to_ras`` maps (i, j, k, 1) to RAS millimetres, so spacing, origin
and any direction matrix, oblique or axis-permuted, are all in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _as_affine(matrix: np.ndarray) -> np.ndarray:
    affine = np.asarray(matrix, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"an affine must be 4×4, got shape {affine.shape}")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"the last row of an affine must be (0, 0, 0, 1), got {affine[3]}")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("the affine is singular or not finite (zero spacing?)")
    return affine


def box_slices(lo: Any, hi: Any) -> tuple[slice, slice, slice]:
    """Index slices of the box ``[lo, hi)``, e.g. of volume indices (i, j, k)."""
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def as_point(value: Any) -> np.ndarray | None:
    """``value`` as a float64 (3,) point if it is three finite numbers, else None."""
    try:
        point = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return point if point.shape == (3,) and np.all(np.isfinite(point)) else None


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(..., 3)`` points through a 4×4 affine."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


@dataclass(frozen=True, eq=False)
class Volume:
    """A scalar volume: ``array`` ``(I, J, K)`` and the float64 ``ijk_to_ras`` (4, 4) affine.

    Read one from a file with :func:`fastsam3d_core.io.read_volume`: io sits above geometry (it
    builds Volumes), so a Volume knows nothing of files.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(
                f"a volume must be a 3-D scalar array, got {array.ndim}-D {array.shape}"
            )
        if array.size == 0:
            raise ValueError(f"the volume is empty (shape {array.shape})")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"a volume must hold numbers, got dtype {array.dtype}")
        if np.iscomplexobj(array):
            raise ValueError(
                f"a complex-valued image ({array.dtype}); save its magnitude as a real-valued "
                "image first"
            )
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "ijk_to_ras", _as_affine(self.ijk_to_ras))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in millimetres."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS position of voxel (0, 0, 0)'s centre."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """Unit direction of the i, j, k axes in RAS, as columns (3, 3)."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry around another array of the same shape."""
        if np.shape(array) != self.shape:
            raise ValueError(
                f"array shape {np.shape(array)} differs from the volume's {self.shape}"
            )
        return Volume(array, self.ijk_to_ras)

    def ras_to_index(self, point_ras: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) index of RAS points ``(..., 3)``."""
        return apply_affine(self.ras_to_ijk, point_ras)

    def index_to_ras(self, point_ijk: np.ndarray) -> np.ndarray:
        """RAS position of continuous (i, j, k) indices ``(..., 3)``."""
        return apply_affine(self.ijk_to_ras, point_ijk)

    def contains_ras(self, point_ras: np.ndarray) -> bool:
        """Whether a RAS point falls in a voxel of the volume; False for non-finite points."""
        with np.errstate(over="ignore", invalid="ignore"):  # 1e308 mm is simply outside
            index = self.ras_to_index(point_ras)
        return bool(np.all(np.isfinite(index))) and self.contains_index(index)

    def contains_index(self, point_ijk: np.ndarray) -> bool:
        """Whether a continuous index falls in a voxel of the volume (edges at ±0.5)."""
        point = np.asarray(point_ijk, dtype=np.float64)
        return bool(np.all(point >= -0.5) and np.all(point < np.array(self.shape) - 0.5))
