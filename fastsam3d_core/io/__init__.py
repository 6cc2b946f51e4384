"""Reading volumes and writing labelmaps and Slicer segmentations, with exact geometry.

Arrays are indexed ``(i, j, k)`` (ITK/NIfTI/VTK voxel-index order) and geometry is a float64
ijk-to-RAS affine, as in :class:`fastsam3d_core.geometry.Volume`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._atomic import check_output_path
from .errors import ITKWarning, VolumeReadError

if TYPE_CHECKING:
    from .images import (
        ImageGeometry,
        check_labelmap_format,
        flip_lps_ras,
        itk_ijk_to_ras,
        read_volume,
        set_itk_geometry,
        write_labelmap,
    )
    from .segmentation import Segment, read_segmentation, write_segmentation

# SimpleITK is imported on first use of these: the model, the benchmarks and the encoder service
# run without it (e.g. on a GPU machine that has only torch and numpy).
_LAZY = {
    "images": ("ImageGeometry", "check_labelmap_format", "flip_lps_ras", "itk_ijk_to_ras",
               "read_volume", "set_itk_geometry", "write_labelmap"),
    "segmentation": ("Segment", "read_segmentation", "write_segmentation"),
}  # fmt: skip

__all__ = [
    "ITKWarning",
    "ImageGeometry",
    "Segment",
    "check_labelmap_format",
    "check_output_path",
    "VolumeReadError",
    "flip_lps_ras",
    "itk_ijk_to_ras",
    "read_segmentation",
    "read_volume",
    "set_itk_geometry",
    "write_labelmap",
    "write_segmentation",
]


def __getattr__(name: str) -> Any:
    module = next((m for m, names in _LAZY.items() if name in names), None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
