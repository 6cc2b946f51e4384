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
from fastsam3d_core.io import read_volume
from fastsam3d_core.session import Click

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install '.[test]')")
vtk = pytest.importorskip("vtk")
from vtk.util import numpy_support  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from fastsam3d_mrml import mrml_io  # noqa: E402
from fastsam3d_mrml.markups_clicks import ClickMarkups, edits_between  # noqa: E402
from fastsam3d_mrml.segment_writer import (  # noqa: E402
    SegmentationNotSupportedError,
    SegmentWriter,
)

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
    mrml_io.remove_with_display(scene, labelmap)
    return array


# -- reading volumes --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BRATS_IMAGE, CT_IMAGE], ids=["brats", "ct"])
def test_volume_from_node_matches_the_core_reader(scene, path):
    node = read_volume_node(scene, path)
    volume = mrml_io.volume_from_node(node)
    expected = read_volume(path)
    assert volume.shape == expected.shape  # (i, j, k), not arrayFromVolume's (k, j, i)
    assert np.array_equal(volume.array, expected.array)
    np.testing.assert_allclose(volume.ijk_to_ras, expected.ijk_to_ras, atol=1e-4)


def test_volume_from_node_is_a_copy(scene):
    node = read_volume_node(scene, CT_IMAGE)
    volume = mrml_io.volume_from_node(node)
    slicer.util.arrayFromVolume(node)[:] = 0
    assert volume.array.any()


def test_oblique_volume_and_parent_transform_give_world_geometry(scene):
    oblique = oblique_copy(read_volume(CT_IMAGE))
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


def cube(lo, size: int, shape) -> np.ndarray:
    """A bool (I, J, K) array with a cube of ``size``³ voxels at ``lo``."""
    mask = np.zeros(tuple(shape), bool)
    mask[tuple(slice(a, a + size) for a in lo)] = True
    return mask


def write_whole(writer: SegmentWriter, segment_id: str, mask: np.ndarray) -> None:
    writer.write(segment_id, [0, 0, 0], mask.shape, mask)


@pytest.mark.parametrize("segmentation_transform", [False, True], ids=["same-frame", "own-frame"])
def test_segment_boxes_land_on_the_volume_voxels(scene, segmentation_transform):
    """Oblique volume under a transform; the segmentation under another (or none)."""
    node = volume_node_from(scene, oblique_copy(read_volume(CT_IMAGE)))
    node.SetAndObserveTransformNodeID(linear_transform_node(scene, rigid(20, (1, 2, 3))).GetID())
    other = linear_transform_node(scene, rigid(-35, (-4, 0, 9))) if segmentation_transform else None
    segmentation = new_segmentation(scene, node, other)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "box", [1, 0, 0])
    writer = SegmentWriter(segmentation, node)
    shape = np.array(node.GetImageData().GetDimensions())
    rng = np.random.default_rng(0)
    lo, hi = np.array([2, 10, 5]), np.array([20, 40, 30])
    mask = rng.random(tuple(hi - lo)) > 0.5
    writer.write(segment_id, lo, hi, mask)
    expected = np.zeros(tuple(shape), bool)
    expected[2:20, 10:40, 5:30] = mask
    assert np.array_equal(writer.read(segment_id), expected)
    if not segmentation_transform:  # Slicer's own export agrees (needs a common frame)
        assert np.array_equal(segment_on_volume_grid(segmentation, segment_id, node), expected)


def test_writing_a_box_changes_the_segment_only_inside_it(scene):
    node = read_volume_node(scene, CT_IMAGE)
    segmentation = new_segmentation(scene, node)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "s", [0, 1, 0])
    writer = SegmentWriter(segmentation, node)
    writer.write(segment_id, [0, 0, 0], [5, 5, 5], np.ones((5,) * 3, bool))
    writer.write(segment_id, [10] * 3, [12] * 3, np.ones((2,) * 3, bool))  # grows the layer
    back = segment_on_volume_grid(segmentation, segment_id, node)
    assert back.sum() == 125 + 8 and back[10:12, 10:12, 10:12].all() and back[:5, :5, :5].all()
    writer.write(segment_id, [3, 3, 3], [11, 11, 11], np.zeros((8,) * 3, bool))
    back = segment_on_volume_grid(segmentation, segment_id, node)
    assert back.sum() == 125 - 8 + 7 and not back[3:5, 3:5, 3:5].any()


def test_segments_sharing_a_labelmap_layer_are_read_and_written_by_label_value(scene):
    node = read_volume_node(scene, CT_IMAGE)
    segmentation = new_segmentation(scene, node)
    layers = segmentation.GetSegmentation()
    first = layers.AddEmptySegment("", "first", [1, 0, 0])
    second = layers.AddEmptySegment("", "second", [0, 1, 0])
    assert layers.GetLayerIndex(first) == layers.GetLayerIndex(second)  # one shared layer
    writer = SegmentWriter(segmentation, node)
    shape = node.GetImageData().GetDimensions()
    a, b = cube((10, 10, 10), 6, shape), cube((16, 10, 10), 6, shape)
    write_whole(writer, first, a)
    write_whole(writer, second, b)
    # Slicer's GetSegmentBinaryLabelmapRepresentation hands over the whole shared layer:
    # reading a segment through it gave 432 voxels, its neighbour's included.
    layer_copy = slicer.vtkOrientedImageData()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic
    segmentations.GetSegmentBinaryLabelmapRepresentation(segmentation, first, layer_copy)
    assert (
        np.count_nonzero(numpy_support.vtk_to_numpy(layer_copy.GetPointData().GetScalars())) == 432
    )
    assert writer.read(first).sum() == 216 and np.array_equal(writer.read(first), a)
    assert np.array_equal(writer.read(second), b)
    assert np.array_equal(segment_on_volume_grid(segmentation, first, node), a)
    assert np.array_equal(segment_on_volume_grid(segmentation, second, node), b)
    # Clearing one segment's box leaves the other's voxels in the same box.
    writer.write(second, [8, 8, 8], [24, 18, 18], np.zeros((16, 10, 10), bool))
    assert np.array_equal(writer.read(first), a) and not writer.read(second).any()
    # A third segment in a layer of its own: unions read every layer once.
    third = layers.AddEmptySegment("", "third", [0, 0, 1])
    write_whole(writer, third, b)
    layers.SeparateSegmentLabelmap(third)
    assert layers.GetNumberOfLayers() == 2
    assert np.array_equal(writer.voxels_of([first, third]), a | b)


def test_a_write_tells_slicer_the_segment_changed(scene):
    """Displays and closed surfaces follow a write: the segmentation drops stale derived
    representations, as when Slicer's own effects edit a segment."""
    node = read_volume_node(scene, CT_IMAGE)
    segmentation = new_segmentation(scene, node)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "s", [0, 1, 0])
    writer = SegmentWriter(segmentation, node)
    shape = node.GetImageData().GetDimensions()
    write_whole(writer, segment_id, cube((10, 10, 10), 8, shape))
    assert segmentation.GetSegmentation().CreateRepresentation("Closed surface")
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    assert segment.GetRepresentation("Closed surface") is not None
    events = []
    segmentation.GetSegmentation().AddObserver(
        slicer.vtkSegmentation.SourceRepresentationModified, lambda *args: events.append(args)
    )
    write_whole(writer, segment_id, cube((12, 10, 10), 8, shape))
    assert events, "no SourceRepresentationModified event"
    assert segment.GetRepresentation("Closed surface") is None, "a stale surface was kept"


def test_a_segmentation_on_another_grid_is_refused_by_name(scene):
    node = read_volume_node(scene, CT_IMAGE, "ct")
    shape = node.GetImageData().GetDimensions()
    fine = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine labels")
    fine_id = fine.GetSegmentation().AddEmptySegment("", "s", [1, 0, 0])
    # Painted on a lattice shifted by whole voxels: the same grid, accepted.
    shifted = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shifted")
    slicer.util.updateVolumeFromArray(shifted, np.zeros((10, 12, 14), np.float32))
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    offset = mrml_io.matrix_to_array(matrix) @ [3, 4, 5, 1]
    shifted.SetIJKToRASMatrix(matrix)
    shifted.SetOrigin(*offset[:3])
    write_whole(SegmentWriter(fine, shifted), fine_id, np.ones((14, 12, 10), bool))
    on_ct = SegmentWriter(fine, node).read(fine_id)
    assert on_ct.sum() == 14 * 12 * 10 and on_ct[3:17, 4:16, 5:15].all()
    # A finer lattice cannot be edited voxel for voxel on the CT's.
    finer = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "finer")
    slicer.util.updateVolumeFromArray(finer, np.zeros((10, 12, 14), np.float32))
    finer.SetSpacing(0.5, 0.5, 0.5)
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine labels 2")
    other_id = other.GetSegmentation().AddEmptySegment("", "s", [1, 0, 0])
    write_whole(SegmentWriter(other, finer), other_id, np.ones((14, 12, 10), bool))
    with pytest.raises(
        SegmentationNotSupportedError, match="fine labels 2 lie on another voxel grid than ct"
    ):
        SegmentWriter(other, node)
    assert shape


def test_labelmap_export_leaves_no_nodes_behind(scene, tmp_path):
    node = read_volume_node(scene, CT_IMAGE)
    segmentation = new_segmentation(scene, node)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", "s", [0, 1, 0])
    write_whole(
        SegmentWriter(segmentation, node),
        segment_id,
        cube((5, 5, 5), 4, read_volume(CT_IMAGE).shape),
    )
    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)  # Slicer always has it
    before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    mrml_io.export_segmentation(segmentation, tmp_path / "label.nrrd", node)
    after = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    assert after - before == set(), f"left in the scene: {sorted(after - before)}"
    assert read_volume(tmp_path / "label.nrrd").array.sum() == 64


def test_click_ids_travel_with_the_markups_points(scene):
    markups = ClickMarkups(scene)
    markups.positive.SetAndObserveTransformNodeID(
        linear_transform_node(scene, rigid(10, (3, 4, 5))).GetID()
    )
    for ras in ([1.0, 2.0, 3.0], [-40.5, 12.25, 7.0]):
        markups.positive.AddControlPointWorld(vtk.vtkVector3d(*ras), "")
    markups.negative.AddControlPointWorld(vtk.vtkVector3d(0.0, 0.0, 1.0), "")
    points = markups.identify_points()
    assert markups.identify_points() == points, "ids are kept in the points"
    assert all(click.click_id == i for i, click in points.items())
    ids = {
        positive: [i for i, click in points.items() if click.positive == positive]
        for positive in (True, False)
    }
    assert len(ids[True]) == 2 and len(ids[False]) == 1
    np.testing.assert_allclose(points[ids[True][1]].point_ras, [-40.5, 12.25, 7.0], atol=1e-9)
    # Show a session's clicks: the first point stays as it is, the second moves, the negative
    # one goes, and an undone deletion comes back under its id.
    first_markups_id = markups.positive.GetNthControlPointID(0)
    clicks = [
        points[ids[True][0]],
        Click((5.0, 6.0, 7.0), True, ids[True][1]),
        Click((8.0, 9.0, 10.0), True, "restored"),
    ]
    markups.show(clicks)
    shown = markups.identify_points()
    assert set(shown) == {ids[True][0], ids[True][1], "restored"}
    assert markups.positive.GetNthControlPointID(0) == first_markups_id
    np.testing.assert_allclose(shown[ids[True][1]].point_ras, [5.0, 6.0, 7.0], atol=1e-9)
    assert markups.negative.GetNumberOfControlPoints() == 0


def test_edits_between_sent_clicks_and_points_match_by_id_alone():
    kept, moved = Click((1, 2, 3), True, "kept"), Click((4, 5, 6), True, "moved")
    retyped, gone = Click((7, 8, 9), True, "retyped"), Click((0, 0, 0), False, "gone")
    sent = {c.click_id: c for c in (kept, moved, retyped, gone)}
    new = Click((1, 2, 3), True, "new")  # where "kept" is: a new click all the same
    points = {
        "kept": kept,
        "moved": Click((4, 5, 7), True, "moved"),
        "retyped": Click((7, 8, 9), False, "retyped"),
        "new": new,
    }
    assert edits_between(sent, points) == [
        ("remove", retyped),
        ("remove", gone),
        ("move", points["moved"]),
        ("add", points["retyped"]),
        ("add", new),
    ]
    assert edits_between(points, points) == []


def test_the_session_clicks_are_shown_only_where_they_differ_from_those_sent(scene):
    markups = ClickMarkups(scene)
    markups.positive.AddControlPointWorld(vtk.vtkVector3d(1.0, 2.0, 3.0), "")
    (sent,) = markups.send_all()
    assert markups.sent == {sent.click_id: sent}
    markups.positive.SetNthControlPointPositionWorld(0, 4.0, 5.0, 6.0)  # not sent yet
    markups.show_session((sent,))  # the session holds what was sent: the points stay
    assert markups.identify_points()[sent.click_id].point_ras == (4.0, 5.0, 6.0)
    markups.show_session(())  # e.g. the session refused the point
    assert markups.positive.GetNumberOfControlPoints() == 0 and markups.sent == {}


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
