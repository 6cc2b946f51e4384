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

from fastsam3d_core import Volume
from fastsam3d_core.io.suffixes import IMAGE_SUFFIXES, SEGMENTATION_SUFFIXES

# Slicer writes a labelmap in any image format it reads: more than the core's own
# fastsam3d_core.io.suffixes.LABELMAP_SUFFIXES.
EXPORT_LABELMAP_SUFFIXES = IMAGE_SUFFIXES


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
    if not name.endswith(EXPORT_LABELMAP_SUFFIXES):
        raise ValueError(
            f"{path.name}: save as .seg.nrrd (segmentation) or a labelmap "
            f"({', '.join(EXPORT_LABELMAP_SUFFIXES)})"
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
        remove_with_display(scene, labelmap)
    return path


def segments_on_volume_grid(segmentation_node, reference_volume_node) -> list:
    """Every segment as a core ``Segment`` (name, colour, bool mask (i, j, k) on the reference
    volume's grid), in the segmentation's order, by Slicer's own labelmap export; one segment
    at a time, so that overlapping segments keep all their voxels (a DICOM SEG keeps them too).

    Raises:
        RuntimeError: Slicer could not convert a segment.
    """
    from fastsam3d_core.io.segmentation import Segment

    scene, segmentation = segmentation_node.GetScene(), segmentation_node.GetSegmentation()
    segments = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__FastSAM3D_export__")
        try:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, reference_volume_node
            ):
                raise RuntimeError("Slicer could not convert the segmentation to a labelmap")
            mask = slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) != 0
        finally:
            remove_with_display(scene, labelmap)
        segment = segmentation.GetSegment(segment_id)
        color = tuple(min(max(float(value), 0.0), 1.0) for value in segment.GetColor())
        segments.append(Segment(segment.GetName(), color, mask, segment_id=segment_id))
    return segments


def remove_with_display(scene, volume_node) -> None:
    """Remove a temporary volume node with its display node and the colour table that Slicer
    made for it (``ExportSegmentsToLabelmapNode`` adds one to the scene) unless another
    display node uses that table."""
    display = volume_node.GetDisplayNode()
    if display is not None:
        color = display.GetColorNode()
        scene.RemoveNode(display)
        if color is not None and color.GetAttribute("Category") == "Segmentations":
            users = [
                node
                for node in _nodes_of_class(scene, "vtkMRMLDisplayNode")
                if node.GetColorNodeID() == color.GetID()
            ]
            if not users:
                scene.RemoveNode(color)
    scene.RemoveNode(volume_node)


def _nodes_of_class(scene, class_name: str) -> list:
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


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
