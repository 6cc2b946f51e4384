"""Reading volumes and writing labelmaps and Slicer segmentations, with exact geometry.

Arrays are indexed ``(i, j, k)`` (ITK/NIfTI/VTK voxel-index order) and geometry is a float64
ijk-to-RAS affine, as in :class:`fastsam3d_core.geometry.Volume`.
"""

from __future__ import annotations

from ._atomic import check_output_path
from .errors import ITKWarning, VolumeReadError
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
