"""Reading volumes and writing labelmaps and Slicer segmentations, with exact geometry.

Arrays are indexed ``(i, j, k)`` (ITK/NIfTI/VTK voxel-index order) and geometry is a float64
ijk-to-RAS affine, as in :class:`fastsam3d_core.geometry.Volume`.
"""

from __future__ import annotations

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
_IMAGES_NAMES = ("ImageGeometry", "check_labelmap_format", "flip_lps_ras", "itk_ijk_to_ras",
                 "read_volume", "set_itk_geometry", "write_labelmap")
_SEGMENTATION_NAMES = ("Segment", "read_segmentation", "write_segmentation")

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
    # Plain imports, so that the import contract sees them (pyproject.toml).
    if name in _IMAGES_NAMES:
        from . import images as home
    elif name in _SEGMENTATION_NAMES:
        from . import segmentation as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value
