"""Geometry: volumes with their affines, the model's crop window, resampling between grids."""

from .crop import (
    CROP_SIZE,
    CROP_SPACING_MM,
    Crop,
    CropGrid,
    check_segmentable,
    crop_grid_around,
    extract_crop,
    z_normalise,
)
from .resample import resample
from .volume import Volume, apply_affine, as_point, box_slices

__all__ = [
    "CROP_SIZE",
    "CROP_SPACING_MM",
    "Crop",
    "CropGrid",
    "Volume",
    "apply_affine",
    "as_point",
    "box_slices",
    "check_segmentable",
    "crop_grid_around",
    "extract_crop",
    "resample",
    "z_normalise",
]
