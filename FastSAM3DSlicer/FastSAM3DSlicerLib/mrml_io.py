"""The MRML boundary: volume nodes in, segment boxes out, exports; all main-thread code.

This is the only place that converts between Slicer's conventions and the core's:

- ``slicer.util.arrayFromVolume`` gives voxels in (k, j, i) order; the core's
  :class:`~fastsam3d_core.Volume` holds (i, j, k) with a world ``ijk_to_ras``. The axes are
  swapped once, in :func:`volume_from_node`.
- A node may sit under a (linear) parent transform: the core sees world RAS (the node's
  IJK-to-RAS composed with its parent transforms), as do the markups' world positions.
- Results go back on the volume's own voxel lattice, expressed in the segmentation node's local
  frame, so they land on the same voxels whatever transforms the two nodes have.

Only ``slicer`` (MRML classes), ``vtk`` and ``numpy`` are used, not ``slicer.app``,
``slicer.modules`` or Qt, so all of it runs without the Slicer application (e.g. with the
``slicer-core`` wheel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from fastsam3d_core import Volume

SEGMENTATION_SUFFIXES = (".seg.nrrd", ".seg.nhdr")
LABELMAP_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


class VolumeNotSupportedError(ValueError):
    """The selected node cannot be segmented (not a 3-D scalar volume, no voxels, ...)."""


def ensure_segmentation_converters() -> None:
    """Register Slicer's labelmap/surface conversion rules if nothing registered them yet.

    The Segmentations module does this when the application starts; without the application
    (``slicer-core``) no rule exists and a segmentation cannot even hold an empty labelmap.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_to_world(node) -> np.ndarray:
    """The 4×4 from a transformable node's local frame to world RAS (identity if none).

    Raises:
        VolumeNotSupportedError: the node is under a non-linear (warping) transform.
    """
    parent = node.GetParentTransformNode() if node is not None else None
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise VolumeNotSupportedError(
            f"{node.GetName()} is under a non-linear transform ({parent.GetName()}); "
            "harden the transform (Data module, right-click, Harden transform) first"
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return matrix_to_array(matrix)


def volume_ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's own IJK-to-RAS (4, 4), without parent transforms."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def check_volume_node(volume_node) -> None:
    """Raise :class:`VolumeNotSupportedError` with the reason if the node cannot be segmented."""
    if volume_node is None:
        raise VolumeNotSupportedError("select an input volume")
    name = volume_node.GetName()
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise VolumeNotSupportedError(
            f"{name} is a {volume_node.GetClassName()}, not a scalar volume: FastSAM3D segments "
            "3-D scalar images (CT, MRI); convert colour images to scalar first "
            "(Vector to Scalar Volume module)"
        )
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise VolumeNotSupportedError(f"{name} holds no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise VolumeNotSupportedError(
            f"{name} has {image.GetNumberOfScalarComponents()} components per voxel; FastSAM3D "
            "segments scalar images (convert with the Vector to Scalar Volume module)"
        )
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise VolumeNotSupportedError(
            f"{name} is {dims[0]}×{dims[1]}×{dims[2]} voxels: a 2-D image, but FastSAM3D "
            "needs a 3-D volume with several slices"
        )


def volume_from_node(volume_node) -> Volume:
    """A core :class:`Volume` of the node: a copy of its voxels (i, j, k) and world affine.

    The copy means the worker thread never reads memory that VTK may reallocate.

    Raises:
        VolumeNotSupportedError: see :func:`check_volume_node` and :func:`node_to_world`.
    """
    check_volume_node(volume_node)
    array_kji = slicer.util.arrayFromVolume(volume_node)
    array_ijk = np.array(array_kji.transpose(2, 1, 0), copy=True)
    ijk_to_ras = node_to_world(volume_node) @ volume_ijk_to_ras(volume_node)
    return Volume(array_ijk, ijk_to_ras)


def volume_fingerprint(volume_node) -> tuple:
    """(node ID, voxel modification time, world affine): equal exactly while the image the
    worker holds is still the node's (voxels edited or the node moved means re-send it)."""
    world = node_to_world(volume_node) @ volume_ijk_to_ras(volume_node)
    image = volume_node.GetImageData()
    return volume_node.GetID(), image.GetMTime() if image else 0, world.round(9).tobytes()


def ijk_to_segmentation_frame(volume_node, segmentation_node) -> np.ndarray:
    """Maps the volume's voxel indices to the segmentation node's local RAS frame."""
    segmentation_to_world = node_to_world(segmentation_node)
    volume_to_world = node_to_world(volume_node)
    return np.linalg.inv(segmentation_to_world) @ volume_to_world @ volume_ijk_to_ras(volume_node)


def _box_image(lo_ijk, hi_ijk, ijk_to_frame: np.ndarray, values_ijk=None):
    """A vtkOrientedImageData over the voxel box [lo, hi) of a lattice, uint8."""
    image = slicer.vtkOrientedImageData()
    lo = [int(v) for v in lo_ijk]
    hi = [int(v) for v in hi_ijk]
    image.SetExtent(lo[0], hi[0] - 1, lo[1], hi[1] - 1, lo[2], hi[2] - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.SetImageToWorldMatrix(array_to_matrix(ijk_to_frame))
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    if values_ijk is None:
        scalars[:] = 0
    else:  # VTK stores i fastest: the (k, j, i) C-order ravel of the (i, j, k) array
        scalars[:] = np.ascontiguousarray(
            np.asarray(values_ijk, np.uint8).transpose(2, 1, 0)
        ).ravel()
    return image


def segment_box(segmentation_node, segment_id: str, volume_node, lo_ijk, hi_ijk) -> np.ndarray:
    """A segment's voxels in the volume's box [lo, hi), bool (i, j, k); nearest neighbour."""
    # The segmentation logic hands the labelmap over in world coordinates (its parent
    # transform applied), so the box is placed in world coordinates too.
    frame = node_to_world(volume_node) @ volume_ijk_to_ras(volume_node)
    reference = _box_image(lo_ijk, hi_ijk, frame)
    shape = tuple(int(b - a) for a, b in zip(lo_ijk, hi_ijk))
    source = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, source):
        return np.zeros(shape, dtype=bool)
    extent = source.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return np.zeros(shape, dtype=bool)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        source, reference, resampled, False, False
    )
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars())
    return values.reshape(shape[::-1]).transpose(2, 1, 0) != 0


def write_segment_box(
    segmentation_node, segment_id: str, volume_node, lo_ijk, hi_ijk, mask_ijk: np.ndarray
) -> None:
    """Make the segment exactly ``mask_ijk`` on the volume's box [lo, hi), empty elsewhere.

    The box must hold every voxel the segment should keep (Slicer replaces the whole segment).

    Raises:
        RuntimeError: Slicer refused the labelmap.
    """
    frame = ijk_to_segmentation_frame(volume_node, segmentation_node)
    image = _box_image(lo_ijk, hi_ijk, frame, mask_ijk)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, logic.MODE_REPLACE, image.GetExtent()
    ):
        raise RuntimeError(f"Slicer could not update segment {segment_id!r}")


def control_points_world(markups_node) -> list[tuple[str, np.ndarray]]:
    """(control point ID, world RAS (3,)) of a markups node's defined points, in order."""
    points = []
    for n in range(markups_node.GetNumberOfControlPoints()):
        if not markups_node.GetNthControlPointPositionStatus(n) == markups_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, position)
        points.append((markups_node.GetNthControlPointID(n), np.array(position)))
    return points


def set_control_points_world(markups_node, points_ras) -> None:
    """Replace a markups node's points with these world RAS points."""
    was = markups_node.StartModify()
    try:
        markups_node.RemoveAllControlPoints()
        for point in points_ras:
            markups_node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in point]), "")
    finally:
        markups_node.EndModify(was)


def export_segmentation(segmentation_node, path: str | Path, reference_volume_node) -> Path:
    """Save a segmentation as ``.seg.nrrd``, or as a labelmap (``.nrrd``, ``.nii.gz``, ...).

    A labelmap is written on the reference volume's grid (segment n gets value n + 1), with the
    volume's geometry. Nodes are written through MRML storage nodes, as Slicer saves them.

    Raises:
        ValueError: an unsupported file extension.
        RuntimeError: writing failed.
    """
    path = Path(path)
    name = path.name.lower()
    scene = segmentation_node.GetScene()
    if name.endswith(SEGMENTATION_SUFFIXES):
        _write_with_storage(scene, segmentation_node, "vtkMRMLSegmentationStorageNode", path)
        return path
    if not name.endswith(LABELMAP_SUFFIXES):
        raise ValueError(
            f"{path.name}: save as .seg.nrrd (segmentation) or a labelmap "
            f"({', '.join(LABELMAP_SUFFIXES)})"
        )
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__FastSAM3D_export__")
    try:
        ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume_node
        ):
            raise RuntimeError("Slicer could not convert the segmentation to a labelmap")
        _write_with_storage(scene, labelmap, "vtkMRMLVolumeArchetypeStorageNode", path)
    finally:
        scene.RemoveNode(labelmap)
    return path


def _write_with_storage(scene, node, storage_class: str, path: Path) -> None:
    storage = scene.AddNewNodeByClass(storage_class)
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(node):
            raise RuntimeError(f"could not write {path}: {storage.GetWriteStateAsString()}")
    finally:
        scene.RemoveNode(storage)


def update_overlay_volume(overlay_node, volume_node, array_ijk: np.ndarray) -> None:
    """Fill a scalar volume node with ``array_ijk`` on the volume's grid and transform."""
    slicer.util.updateVolumeFromArray(
        overlay_node, np.ascontiguousarray(array_ijk.transpose(2, 1, 0))
    )
    overlay_node.SetIJKToRASMatrix(array_to_matrix(volume_ijk_to_ras(volume_node)))
    overlay_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
