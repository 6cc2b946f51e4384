"""A small real CT shipped with the package, and a point deep inside its spleen.

The scan is TotalSegmentator's test CT ``tests/reference_files/example_ct_sm.nii.gz``
(github.com/wasserth/TotalSegmentator, Apache-2.0), stored unmodified as ``example_ct_3mm.nii.gz``:
int16 Hounsfield units, 122×101×30 voxels of 3 mm, abdomen. ``ATTRIBUTION.md`` beside this file
gives its origin and licence. ``fastsam3d segment --example`` segments it from
:data:`SPLEEN_POINT_RAS`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXAMPLE_CT_FILENAME", "SPLEEN_LABEL", "SPLEEN_POINT_RAS", "example_ct_path"]

EXAMPLE_CT_FILENAME = "example_ct_3mm.nii.gz"

SPLEEN_LABEL = 1
"""The spleen's value in TotalSegmentator's ``total`` labelmaps (its class map: 1 = spleen)."""

SPLEEN_POINT_RAS: tuple[float, float, float] = (-111.96, 110.32, 160.30)
"""A point deep inside the spleen of the example CT, in RAS millimetres (Slicer's world space).

Computed once, offline, from TotalSegmentator's multi-label prediction for this scan (its
``tests/reference_files/example_seg.nii.gz``, on the same grid): the centre of the spleen voxel
(i, j, k) = (22, 33, 22) farthest from any non-spleen voxel (Euclidean distance transform in mm,
with the space outside the scan counted as non-spleen because the spleen runs past its top and
bottom slices): 22 mm deep. It is that voxel's ``ijk_to_ras`` position rounded to 0.01 mm.
"""


def example_ct_path() -> Path:
    """The example CT's NIfTI file, installed with this package.

    Raises:
        FileNotFoundError: this copy of ``fastsam3d_core`` was installed without its data files
            (the 3D Slicer extension carries only the engine's Python files).
    """
    # The package's own folder: pip installs wheels unpacked, so the file is a real path that
    # SimpleITK can open (importlib.resources would only add a context manager around it).
    path = Path(__file__).resolve().with_name(EXAMPLE_CT_FILENAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"the example CT is not installed at {path}; install fastsam3d-core with pip "
            "(`pip install -e .` from the repository) to get it"
        )
    return path
