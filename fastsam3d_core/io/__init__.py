"""Reading volumes and writing labelmaps and Slicer segmentations, with exact geometry.

Arrays are indexed ``(i, j, k)`` (ITK/NIfTI/VTK voxel-index order) and geometry is a float64
ijk-to-RAS affine, as in :class:`fastsam3d_core.geometry.Volume`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._atomic import check_output_path
from .errors import ITKWarning, VolumeReadError

if TYPE_CHECKING:
    from .dicom_seg import (
        SegAlgorithm,
        dicom_seg_dataset,
        is_dicom_seg,
        read_dicom_seg,
        segment_codes,
        write_dicom_seg,
    )
    from .dicom_source import DicomSeries, dicom_series_of
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
# highdicom and pydicom too: DICOM SEG objects and the DICOM series they reference.
_DICOM_SEG_NAMES = ("SegAlgorithm", "dicom_seg_dataset", "is_dicom_seg", "read_dicom_seg",
                    "segment_codes", "write_dicom_seg")
_DICOM_SOURCE_NAMES = ("DicomSeries", "dicom_series_of")

__all__ = [
    "DicomSeries",
    "ITKWarning",
    "ImageGeometry",
    "SegAlgorithm",
    "Segment",
    "check_labelmap_format",
    "check_output_path",
    "VolumeReadError",
    "dicom_seg_dataset",
    "dicom_series_of",
    "flip_lps_ras",
    "is_dicom_seg",
    "itk_ijk_to_ras",
    "read_dicom_seg",
    "read_segmentation",
    "read_volume",
    "segment_codes",
    "set_itk_geometry",
    "write_dicom_seg",
    "write_labelmap",
    "write_segmentation",
]


def __getattr__(name: str) -> Any:
    # Plain imports, so that the import contract sees them (pyproject.toml).
    if name in _IMAGES_NAMES:
        from . import images as home
    elif name in _SEGMENTATION_NAMES:
        from . import segmentation as home
    elif name in _DICOM_SEG_NAMES:
        from . import dicom_seg as home
    elif name in _DICOM_SOURCE_NAMES:
        from . import dicom_source as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value
