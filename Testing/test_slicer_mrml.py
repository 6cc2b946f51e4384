"""The Slicer module's MRML boundary, on real MRML classes (the ``slicer-core`` wheel).

Also holds the helpers the other ``test_slicer_*`` files import: scenes with real volumes read by
MRML storage nodes, oblique copies, and the segment read back from the segmentation node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from test_session import oblique_copy

from fastsam3d_core import Volume

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install '.[test]')")
vtk = pytest.importorskip("vtk")

MODULE_DIR = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from FastSAM3DSlicerLib import mrml_io  # noqa: E402

DATA = SHARED / "data"
BRATS_IMAGE = DATA / "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz"
BRATS_LABEL = DATA / "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz"
CT_IMAGE = DATA / "totalseg_ct/example_ct_3mm.nii.gz"
CT_LABEL = DATA / "totalseg_ct/example_seg_3mm.nii.gz"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")


# -- helpers shared with the other test_slicer files ----------------------------------------


def read_volume_node(scene, path: Path, name: str = "image"):
    """A scalar volume node filled by Slicer's own reader (a MRML storage node)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"MRML could not read {path}"
    return node


def volume_node_from(scene, volume: Volume, name: str = "image"):
    """A scalar volume node holding a core volume (its (i, j, k) array and affine)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(mrml_io.array_to_matrix(volume.ijk_to_ras))
    return node


def linear_transform_node(scene, matrix: np.ndarray):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(mrml_io.array_to_matrix(matrix))
    return node


def rigid(angle_deg: float, shift_mm) -> np.ndarray:
    """A rotation about A by ``angle_deg`` and a translation, as a 4×4."""
    a = np.deg2rad(angle_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    matrix[:3, 3] = shift_mm
    return matrix


def segment_on_volume_grid(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """A segment exported by Slicer's own labelmap export on the volume's grid, bool (i, j, k).

    An independent path from the one the module writes with: the segmentation logic's export
    to a labelmap volume node, read with ``arrayFromVolume``.
    """
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, volume_node)
    array = slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) != 0
    scene.RemoveNode(labelmap)
    return array


@pytest.fixture
def scene():
    mrml_io.ensure_segmentation_converters()
    return slicer.vtkMRMLScene()


# -- reading volumes --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BRATS_IMAGE, CT_IMAGE], ids=["brats", "ct"])
def test_volume_from_node_matches_the_core_reader(scene, path):
    node = read_volume_node(scene, path)
    volume = mrml_io.volume_from_node(node)
    expected = Volume.from_file(path)
    assert volume.shape == expected.shape  # (i, j, k), not arrayFromVolume's (k, j, i)
    assert np.array_equal(volume.array, expected.array)
    np.testing.assert_allclose(volume.ijk_to_ras, expected.ijk_to_ras, atol=1e-4)


def test_volume_from_node_is_a_copy(scene):
    node = read_volume_node(scene, CT_IMAGE)
    volume = mrml_io.volume_from_node(node)
    slicer.util.arrayFromVolume(node)[:] = 0
    assert volume.array.any()


def test_oblique_volume_and_parent_transform_give_world_geometry(scene):
    oblique = oblique_copy(Volume.from_file(CT_IMAGE))
    node = volume_node_from(scene, oblique)
    direct = mrml_io.volume_from_node(node)
    np.testing.assert_allclose(direct.ijk_to_ras, oblique.ijk_to_ras, atol=1e-9)
    assert np.array_equal(direct.array, oblique.array)
    to_world = rigid(30, (5.0, -7.0, 12.0))
    node.SetAndObserveTransformNodeID(linear_transform_node(scene, to_world).GetID())
    moved = mrml_io.volume_from_node(node)
    np.testing.assert_allclose(moved.ijk_to_ras, to_world @ oblique.ijk_to_ras, atol=1e-9)
    # A voxel's world position through the core affine is where MRML puts it.
    ijk = np.array([3.0, 40.0, 7.0])
    ras = [0.0, 0.0, 0.0]
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    local = ijk_to_ras.MultiplyPoint([*ijk, 1.0])[:3]
    to_world_transform = vtk.vtkGeneralTransform()
    node.GetParentTransformNode().GetTransformToWorld(to_world_transform)
    to_world_transform.TransformPoint(local, ras)
    np.testing.assert_allclose(moved.index_to_ras(ijk), ras, atol=1e-6)


def test_volumes_that_cannot_be_segmented_are_named_with_the_reason(scene):
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    slicer.util.updateVolumeFromArray(vector, np.zeros((4, 5, 6, 3), np.uint8))
    with pytest.raises(mrml_io.VolumeNotSupportedError, match="colour has 3 components per voxel"):
        mrml_io.volume_from_node(vector)
    flat = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slice")
    slicer.util.updateVolumeFromArray(flat, np.zeros((1, 20, 30), np.int16))
    with pytest.raises(mrml_io.VolumeNotSupportedError, match="2-D image"):
        mrml_io.volume_from_node(flat)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(mrml_io.VolumeNotSupportedError, match="no voxels"):
        mrml_io.volume_from_node(empty)
    warped = read_volume_node(scene, CT_IMAGE, "warped")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    warped.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(mrml_io.VolumeNotSupportedError, match="non-linear transform"):
        mrml_io.volume_from_node(warped)


# -- writing segments -------------------------------------------------------------------------


def new_segmentation(scene, volume_node, transform_node=None):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    if transform_node is not None:
        segmentation.SetAndObserveTransformNodeID(transform_node.GetID())
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return segmentation


@pytest.mark.parametrize("segmentation_transform", [False, True], ids=["same-frame", "own-frame"])
def test_segment_box_lands_on_the_volume_voxels(scene, segmentation_transform):
    """Oblique volume under a transform; the segmentation under another (or none)."""
    node = volume_node_from(scene, oblique_copy(Volume.from_file(CT_IMAGE)))
    node.SetAndObserveTransformNodeID(linear_transform_node(scene, rigid(20, (1, 2, 3))).GetID())
    other = linear_transform_node(scene, rigid(-35, (-4, 0, 9))) if segmentation_transform else None
    segmentation = new_segmentation(scene, node, other)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "box", [1, 0, 0])
    shape = np.array(node.GetImageData().GetDimensions())
    rng = np.random.default_rng(0)
    lo, hi = np.array([2, 10, 5]), np.array([20, 40, 30])
    mask = rng.random(tuple(hi - lo)) > 0.5
    mrml_io.write_segment_box(segmentation, segment_id, node, lo, hi, mask)
    back = mrml_io.segment_box(segmentation, segment_id, node, [0, 0, 0], shape)
    expected = np.zeros(tuple(shape), bool)
    expected[2:20, 10:40, 5:30] = mask
    assert np.array_equal(back, expected)
    if not segmentation_transform:  # Slicer's own export agrees (needs a common frame)
        assert np.array_equal(segment_on_volume_grid(segmentation, segment_id, node), expected)


def test_writing_a_box_replaces_the_whole_segment(scene):
    node = read_volume_node(scene, CT_IMAGE)
    segmentation = new_segmentation(scene, node)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "s", [0, 1, 0])
    mrml_io.write_segment_box(
        segmentation, segment_id, node, [0, 0, 0], [5, 5, 5], np.ones((5,) * 3)
    )
    mrml_io.write_segment_box(segmentation, segment_id, node, [10] * 3, [12] * 3, np.ones((2,) * 3))
    back = segment_on_volume_grid(segmentation, segment_id, node)
    assert back.sum() == 8 and back[10:12, 10:12, 10:12].all()


def test_markups_points_round_trip_in_world_coordinates(scene):
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    markups.SetAndObserveTransformNodeID(linear_transform_node(scene, rigid(10, (3, 4, 5))).GetID())
    points = np.array([[1.0, 2.0, 3.0], [-40.5, 12.25, 7.0]])
    mrml_io.set_control_points_world(markups, points)
    read = mrml_io.control_points_world(markups)
    assert len({point_id for point_id, _ in read}) == 2
    np.testing.assert_allclose([ras for _, ras in read], points, atol=1e-9)


def test_volume_fingerprint_changes_with_voxels_and_transform(scene):
    node = read_volume_node(scene, CT_IMAGE)
    first = mrml_io.volume_fingerprint(node)
    assert mrml_io.volume_fingerprint(node) == first
    slicer.util.arrayFromVolume(node)[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(node)
    second = mrml_io.volume_fingerprint(node)
    assert second != first
    node.SetAndObserveTransformNodeID(linear_transform_node(scene, rigid(5, (0, 0, 1))).GetID())
    assert mrml_io.volume_fingerprint(node) != second
