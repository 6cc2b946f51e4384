"""The module's logic end to end on real MRML nodes: markups in, segments out, through the worker.

Runs the oracle predictor (ground truth as a perfect model, to check geometry exactly) and the
released FastSAM3D architecture with seeded weights (to check the encoder/decoder split).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_session import dice, oblique_copy
from test_slicer_mrml import (
    BRATS_IMAGE,
    BRATS_LABEL,
    CT_IMAGE,
    CT_LABEL,
    DATA,
    SegmentWriter,
    cube,
    linear_transform_node,
    read_volume_node,
    rigid,
    segment_on_volume_grid,
    slicer,
    volume_node_from,
    vtk,
    write_whole,
)

from fastsam3d_core import Session, Volume, build_model
from fastsam3d_core.geometry import crop_grid_around
from fastsam3d_core.geometry.paste import footprint_box
from fastsam3d_core.io import read_segmentation, read_volume
from fastsam3d_core.session import OraclePredictor

# test_slicer_mrml put the module's folder on sys.path (and skipped without slicer-core).
mrml_io = pytest.importorskip("fastsam3d_mrml.mrml_io")
# The engine's logic with a recording observer (engine_recorder.py); `scene` and `make_logic`
# are conftest's fixtures. Other test files import these names from here too.
from engine_recorder import TIMEOUT_S, recorded_logic  # noqa: E402

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")


def deepest_ras(labels: Volume, value: int | None = None) -> np.ndarray:
    truth = labels.array != 0 if value is None else labels.array == value
    depth = ndimage.distance_transform_edt(truth)
    return labels.index_to_ras(np.array(np.unravel_index(np.argmax(depth), truth.shape)))


def place(logic, ras, positive=True):
    node = logic.positiveNode if positive else logic.negativeNode
    node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in ras]), "")
    logic.synchronizePoints()


def settle(logic):
    assert logic.waitForIdle(TIMEOUT_S), "the worker did not finish"
    assert not logic.errors, logic.errors


def spleen_clicked(scene, make_logic):
    """The example CT, a logic whose oracle sees the spleen (label 1), one point deep in it,
    settled: (labels, volume node, logic, the point in RAS)."""
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 1), node)
    spleen = deepest_ras(labels, 1)
    place(logic, spleen)
    settle(logic)
    return labels, node, logic, spleen


def painted_segmentation(scene, volume_node, name: str, mask: np.ndarray):
    """A segmentation on the volume's grid with one segment painted before the session:
    (segmentation node, segment ID)."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", name, [0.5, 0, 0])
    write_whole(SegmentWriter(segmentation, volume_node), segment_id, mask)
    return segmentation, segment_id


def current_mask(logic) -> np.ndarray:
    return segment_on_volume_grid(logic.segmentationNode, logic.currentSegmentId, logic.volumeNode)


@pytest.mark.parametrize("geometry", ["native", "oblique-transformed"])
def test_one_click_reproduces_the_core_session_on_the_volume_grid(scene, make_logic, geometry):
    image, labels = read_volume(BRATS_IMAGE), read_volume(BRATS_LABEL)
    if geometry == "native":
        node = read_volume_node(scene, BRATS_IMAGE)
    else:
        image, labels = oblique_copy(image), oblique_copy(labels)
        node = volume_node_from(scene, image)
        to_world = rigid(25, (10.0, -5.0, 3.0))
        node.SetAndObserveTransformNodeID(linear_transform_node(scene, to_world).GetID())
        image = Volume(image.array, to_world @ image.ijk_to_ras)
        labels = Volume(labels.array, to_world @ labels.ijk_to_ras)
    logic = make_logic(OraclePredictor(labels), node)
    point = deepest_ras(labels)
    place(logic, point)
    settle(logic)
    expected = Session(image, OraclePredictor(labels)).add_point(point).mask
    mask = current_mask(logic)
    assert np.array_equal(mask, expected.astype(bool))
    assert dice(mask, labels.array != 0) > 0.95
    assert logic.lastEncoderRan and logic.lastLatencySeconds > 0


def test_moving_deleting_undo_redo_and_clear_follow_the_markups(scene, make_logic):
    labels, _, logic, _ = spleen_clicked(scene, make_logic)
    first = current_mask(logic)
    assert first.any()
    place(logic, deepest_ras(labels, 1) + [0, 0, 3.0], positive=False)
    settle(logic)
    assert logic.negativeNode.GetNumberOfControlPoints() == 1
    # Move the negative point: the session follows, and one undo takes the move back.
    placed = np.array(logic.negativeNode.GetNthControlPointPositionWorld(0))
    logic.negativeNode.SetNthControlPointPositionWorld(0, *(deepest_ras(labels, 1) + [0, 3.0, 0]))
    logic.synchronizePoints()
    settle(logic)
    clicks = sorted(tuple(np.round(click.point_ras, 3)) for click in logic.clicks)
    assert tuple(np.round(deepest_ras(labels, 1) + [0, 3.0, 0], 3)) in clicks
    logic.undo()
    settle(logic)
    assert len(logic.clicks) == 2
    np.testing.assert_allclose(logic.negativeNode.GetNthControlPointPositionWorld(0), placed)
    logic.redo()
    settle(logic)
    # Delete it, then undo the deletion: the point comes back into the markups.
    logic.negativeNode.RemoveAllControlPoints()
    logic.synchronizePoints()
    settle(logic)
    assert len(logic.clicks) == 1
    logic.undo()
    settle(logic)
    assert logic.negativeNode.GetNumberOfControlPoints() == 1
    logic.redo()
    settle(logic)
    assert logic.negativeNode.GetNumberOfControlPoints() == 0
    logic.clearSegment()
    settle(logic)
    assert not current_mask(logic).any()
    assert logic.positiveNode.GetNumberOfControlPoints() == 0
    logic.undo()
    settle(logic)
    assert np.array_equal(current_mask(logic), first)
    assert logic.positiveNode.GetNumberOfControlPoints() == 1


def test_points_placed_while_the_worker_is_busy_are_queued(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 1), node)
    spleen, liver = deepest_ras(labels, 1), deepest_ras(labels, 5)
    for ras in (spleen, liver, spleen + [3.0, 0, 0]):  # no waiting in between
        place(logic, ras)
    assert logic.busy
    settle(logic)
    assert len(logic.clicks) == 3
    assert logic.positiveNode.GetNumberOfControlPoints() == 3
    session = Session(read_volume(CT_IMAGE), OraclePredictor(labels, 1))
    for ras in (spleen, liver, spleen + [3.0, 0, 0]):
        session.add_point(ras)
    assert np.array_equal(current_mask(logic), session.mask().astype(bool))


def test_a_point_outside_the_volume_is_refused_and_removed(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    place(logic, (5000.0, 0.0, 0.0))
    assert logic.waitForIdle(TIMEOUT_S)
    assert len(logic.errors) == 1 and "outside the volume" in str(logic.errors[0])
    assert logic.positiveNode.GetNumberOfControlPoints() == 0
    assert logic.status.startswith("Error")


def test_segments_do_not_overwrite_each_other(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    manual = labels.array == 5  # a "manually painted" liver segment, there before the session
    segmentation, manual_id = painted_segmentation(scene, node, "liver (manual)", manual)
    logic = recorded_logic(scene)
    # "Everything non-zero" as the object: it covers the liver and the spleen.
    logic.setPredictor(OraclePredictor(labels))
    shown = logic.observer.segments_shown  # what the widget's segment selector would show
    logic.setInputs(node, segmentation)
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    first_id = logic.currentSegmentId
    first = current_mask(logic)
    assert first.any() and not (first & manual).any()
    assert np.array_equal(segment_on_volume_grid(segmentation, manual_id, node), manual)
    logic.nextSegment()
    settle(logic)
    assert logic.currentSegmentId not in (first_id, manual_id)
    assert shown == [first_id, logic.currentSegmentId]
    assert logic.positiveNode.GetNumberOfControlPoints() == 0
    place(logic, deepest_ras(labels, 2))  # label 2, in the same crop as the first segment
    settle(logic)
    second = current_mask(logic)
    assert not (second & first).any() and not (second & manual).any()
    assert np.array_equal(segment_on_volume_grid(segmentation, first_id, node), first)
    # Going back to the first segment shows its click again.
    logic.selectSegment(first_id)
    settle(logic)
    assert logic.currentSegmentId == first_id and shown[-1] == first_id
    assert logic.positiveNode.GetNumberOfControlPoints() == 1
    logic.cleanup()


def crop_footprint(volume_node, point_ras) -> np.ndarray:
    """Where the crop a click at this point opens lies in the volume, bool (I, J, K)."""
    volume = mrml_io.volume_from_node(volume_node)
    lo, hi = footprint_box(crop_grid_around(volume, point_ras), volume)
    inside = np.zeros(volume.shape, bool)
    inside[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return inside


def test_refining_a_painted_segment_keeps_it_outside_the_crop_and_removes_inside(scene, make_logic):
    """The painted segment shares the labelmap layer of the logic's own first segment."""
    labels = read_volume(CT_LABEL)
    spleen = labels.array == 1
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 1), node)
    click = deepest_ras(labels, 1)
    in_crop = crop_footprint(node, click)
    corners = [np.where(c, np.array(labels.shape) - 6, 0) for c in np.ndindex(2, 2, 2)]
    far = next(c for c in (cube(lo, 6, labels.shape) for lo in corners) if not (c & in_crop).any())
    near = np.roll(spleen, 4, axis=0) & ~spleen & in_crop  # painted too far to one side
    assert far.sum() == 216 and near.sum() > 100
    segmentation = logic.segmentationNode
    layers = segmentation.GetSegmentation()
    painted_id = layers.AddEmptySegment("", "painted", [0, 0, 1])
    write_whole(SegmentWriter(segmentation, node), painted_id, far | near)
    assert layers.GetLayerIndex(painted_id) == layers.GetLayerIndex(logic.currentSegmentId)
    logic.selectSegment(painted_id)
    settle(logic)
    assert logic.currentSegmentId == painted_id
    assert np.array_equal(current_mask(logic), far | near), "adopting changes nothing"
    place(logic, deepest_ras(Volume(near.astype(np.uint8), labels.ijk_to_ras)), positive=False)
    settle(logic)
    # The oracle answers with the spleen inside the crop: the wrongly painted voxels there go,
    # and the painted voxels that no crop covers stay.
    assert np.array_equal(current_mask(logic), far | spleen)
    logic.undo()
    settle(logic)
    assert np.array_equal(current_mask(logic), far | near)
    logic.redo()
    settle(logic)
    # Another model: the segment starts again from its painted voxels, the point is replayed.
    logic.setPredictor(OraclePredictor(labels, 1))
    settle(logic)
    assert logic.currentSegmentId == painted_id and len(logic.clicks) == 1
    assert np.array_equal(current_mask(logic), far | spleen)
    logic.undo()
    settle(logic)
    assert np.array_equal(current_mask(logic), far | near)


def test_export_seg_nrrd_and_labelmap_keep_the_geometry(scene, make_logic, tmp_path):
    image = oblique_copy(read_volume(CT_IMAGE))
    labels = oblique_copy(read_volume(CT_LABEL))
    node = volume_node_from(scene, image)
    logic = make_logic(OraclePredictor(labels, 1), node)
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    mask = current_mask(logic)
    seg_path = logic.exportSegmentation(str(tmp_path / "spleen.seg.nrrd"))
    # Read back by MRML, as Slicer loads it ...
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(seg_path))
    assert storage.ReadData(loaded)
    loaded_id = loaded.GetSegmentation().GetNthSegmentID(0)
    assert np.array_equal(segment_on_volume_grid(loaded, loaded_id, node), mask)
    # ... and by the core's independent reader: same grid as the volume, same voxels.
    segments, grid = read_segmentation(seg_path)
    full = np.zeros(image.shape, bool)
    box = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        loaded, loaded_id, box
    )
    np.testing.assert_allclose(grid.ijk_to_ras[:3, :3], image.ijk_to_ras[:3, :3], atol=1e-6)
    offset = np.round(image.ras_to_index(grid.ijk_to_ras[:3, 3])).astype(int)
    full[tuple(slice(o, o + n) for o, n in zip(offset, grid.shape))] = segments[0].mask
    assert np.array_equal(full, mask)
    labelmap_path = logic.exportSegmentation(str(tmp_path / "spleen-label.nrrd"))
    written = read_volume(labelmap_path)
    np.testing.assert_allclose(written.ijk_to_ras, image.ijk_to_ras, atol=1e-6)
    assert np.array_equal(written.array != 0, mask)
    with pytest.raises(ValueError, match=r"\.seg\.nrrd"):
        logic.exportSegmentation(str(tmp_path / "spleen.png"))


def test_changed_voxels_reopen_the_session_on_the_next_point(scene, make_logic):
    labels, node, logic, _ = spleen_clicked(scene, make_logic)
    slicer.util.arrayFromVolume(node)[:] += 1
    slicer.util.arrayFromVolumeModified(node)
    place(logic, deepest_ras(labels, 5))
    settle(logic)
    assert logic.lastEncoderRan  # the new image was encoded again
    assert len(logic.clicks) == 2  # both markups points re-applied to the new image


@pytest.mark.slow
def test_seeded_fastsam3d_encodes_once_per_crop(scene, make_logic, fastsam3d_seeded):
    node = read_volume_node(scene, BRATS_IMAGE)
    labels = read_volume(BRATS_LABEL)
    logic = make_logic(fastsam3d_seeded, node)
    statuses = logic.observer.statuses
    statuses.clear()
    point = deepest_ras(labels)
    place(logic, point)
    settle(logic)
    assert logic.lastEncoderRan
    assert any(s.startswith("Preparing") for s in statuses)
    statuses.clear()
    place(logic, point + [4.5, 0, 0], positive=False)
    settle(logic)
    assert not logic.lastEncoderRan
    assert not any(s.startswith("Preparing") for s in statuses)
    assert "ms" in logic.status
    mask = current_mask(logic)
    assert mask.shape == labels.shape
    # Uncertainty overlay and suggestion from the same cached embedding.
    suggestions = logic.observer.suggestions
    logic.suggestNextPoint()
    settle(logic)
    entropy = slicer.util.arrayFromVolume(logic.uncertaintyNode).transpose(2, 1, 0)
    assert entropy.shape == labels.shape and entropy.max() <= 1.0 + 1e-6
    assert len(suggestions) == 1
    if suggestions[0] is not None:
        assert logic.suggestionNode.GetNumberOfControlPoints() == 1
        peak = np.unravel_index(np.argmax(entropy), entropy.shape)
        volume = mrml_io.volume_from_node(node)
        np.testing.assert_allclose(volume.index_to_ras(np.array(peak)), suggestions[0], atol=1e-6)


def test_a_new_model_replays_the_points_and_points_wait_while_it_loads(scene, make_logic):
    labels, _, logic, spleen = spleen_clicked(scene, make_logic)
    spleen_mask = current_mask(logic)
    # "Another model": an oracle that sees everything labelled, not just the spleen.
    logic.setPredictor(OraclePredictor(labels))
    place(logic, spleen + [0.0, 3.0, 0.0])  # placed while the new session opens
    settle(logic)
    assert len(logic.clicks) == 2  # both points, each once, on the new session
    assert logic.positiveNode.GetNumberOfControlPoints() == 2
    expected = Session(read_volume(CT_IMAGE), OraclePredictor(labels))
    expected.add_point(spleen)
    expected.add_point(spleen + [0.0, 3.0, 0.0])
    mask = current_mask(logic)
    assert np.array_equal(mask, expected.mask().astype(bool))
    assert mask.sum() > spleen_mask.sum()  # the old prediction was replaced, not kept


def test_another_volume_starts_without_points(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    first_segmentation = logic.segmentationNode
    logic.setInputs(read_volume_node(scene, CT_IMAGE, "second"))
    settle(logic)
    assert logic.positiveNode.GetNumberOfControlPoints() == 0 and logic.clicks == ()
    assert logic.segmentationNode is not first_segmentation


def test_a_click_in_flight_when_another_volume_opens_is_not_written_to_it(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    place(logic, deepest_ras(labels, 1))
    second = read_volume_node(scene, BRATS_IMAGE, "second")
    logic.setInputs(second)  # before the click's result is written
    settle(logic)
    assert logic.clicks == ()
    segmentation = logic.segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        voxels = segment_on_volume_grid(logic.segmentationNode, segment_id, second)
        assert not voxels.any(), "the first volume's click was written onto the second"


def test_a_point_the_logic_cannot_take_is_reported_once_and_taken_back(scene, make_logic):
    labels, node, logic, spleen = spleen_clicked(scene, make_logic)
    statuses = logic.observer.statuses
    statuses.clear()
    # The user moves the volume, not its segmentation: the segments no longer fit its grid.
    node.SetAndObserveTransformNodeID(linear_transform_node(scene, rigid(10, [0, 0, 0])).GetID())
    # As the user places it: only the markups observer sees the point.
    logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*(spleen + [0.0, 3.0, 0.0])), "")
    assert logic.waitForIdle(TIMEOUT_S)
    assert len(logic.errors) == 1 and "another voxel grid" in str(logic.errors[0])
    assert statuses[-1].startswith("Error: ")
    assert logic.positiveNode.GetNumberOfControlPoints() == 1 and len(logic.clicks) == 1


def test_the_observer_hears_busy_when_edits_queue_and_idle_once_all_are_applied(scene, make_logic):
    labels, _, logic, spleen = spleen_clicked(scene, make_logic)
    busy = logic.observer.busy
    assert busy == [True, False, True, False]  # the session's opening, then the click
    busy.clear()
    place(logic, spleen + [0.0, 3.0, 0.0])
    place(logic, spleen + [0.0, -3.0, 0.0])  # queued behind the first: no second "busy"
    assert busy == [True] and logic.busy
    settle(logic)
    assert busy == [True, False] and not logic.busy
    assert len(logic.clicks) == 3


def test_a_failed_model_load_is_retried_when_asked_again(scene, make_logic, tmp_path, monkeypatch):
    from dataclasses import replace

    from fastsam3d_core.weights import registry

    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    assert logic.loadedModel is None  # a predictor handed in is no loaded model
    monkeypatch.setenv("FASTSAM3D_CACHE_DIR", str(tmp_path))
    # Offline: nothing listens on port 9, so the download fails at once.
    entry = replace(registry.WEIGHTS["fastsam3d"], url="http://127.0.0.1:9/FastSAM3D.pth")
    monkeypatch.setitem(registry.WEIGHTS, "fastsam3d", entry)
    logic.setModel("fastsam3d", "cpu")
    assert logic.loadedModel == ("fastsam3d", "cpu", None, None, None, None, "auto"), (
        "a load in flight is not repeated"
    )
    assert logic.waitForIdle(TIMEOUT_S)
    assert any("the download failed" in str(e) for e in logic.errors)
    assert logic.loadedModel is None, "after a failure, Start must load again"


def test_a_failed_load_keeps_the_model_chosen_after_it(
    scene, make_logic, fastsam3d_seeded, tmp_path
):
    """Model A, then B while A loads: A's failure must not forget B, or Start would load B
    again."""
    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": fastsam3d_seeded.state_dict()}, weights)
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    logic.setModel("no-such-model", "cpu")
    logic.setModel("fastsam3d", "cpu", str(weights))
    assert logic.waitForIdle(TIMEOUT_S)
    assert [type(e).__name__ for e in logic.errors] == ["ModelLoadError"]
    assert "unknown model 'no-such-model'" in str(logic.errors[0])
    assert logic.loadedModel == ("fastsam3d", "cpu", str(weights), None, None, None, "auto")


def test_a_new_segment_in_a_shared_layer_stays_whole_over_several_clicks(
    scene, make_logic, fastsam3d_seeded
):
    """A segmentation with a segment already: the logic's new segment shares its layer. The
    seeded model changes the mask with every click, so every click rewrites the segment."""
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    segmentation, kidney = painted_segmentation(scene, node, "kidney", labels.array == 2)
    logic = make_logic(fastsam3d_seeded, node)
    logic.setInputs(node, segmentation)
    liver = deepest_ras(labels, 5)
    clicks = [(liver, True), (liver + [6.0, 0, 0], False), (liver + [0, 6.0, 0], True)]
    session = Session(read_volume(CT_IMAGE), fastsam3d_seeded, foreign_mask=labels.array == 2)
    for point, positive in clicks:
        place(logic, point, positive)
        settle(logic)
        expected = session.add_point(point, positive).mask.astype(bool)
        assert np.array_equal(current_mask(logic), expected)
    layers = segmentation.GetSegmentation()
    assert layers.GetLayerIndex(logic.currentSegmentId) == layers.GetLayerIndex(kidney)
    assert expected.sum() > 1000
    assert np.array_equal(segment_on_volume_grid(segmentation, kidney, node), labels.array == 2)


def test_a_point_edited_in_the_markups_table_moves_its_click_and_a_drag_waits_for_its_end(
    scene, make_logic
):
    _, _, logic, spleen = spleen_clicked(scene, make_logic)
    # The Markups module's table sets the position: only PointModifiedEvent, no interaction.
    typed = spleen + [0.0, 3.0, 0.0]
    logic.positiveNode.SetNthControlPointPositionWorld(0, *typed)
    settle(logic)
    np.testing.assert_allclose(logic.clicks[0].point_ras, typed)
    # A drag in a view: PointModifiedEvent on every mouse move while Slicer marks the node as
    # moving; the click moves once, when the drag ends.
    node = logic.positiveNode
    node.SetAttribute("Markups.MovingInSliceView", "Red")
    node.InvokeEvent(node.PointStartInteractionEvent)
    for step in range(1, 6):
        node.SetNthControlPointPositionWorld(0, *(typed + [step * 1.0, 0.0, 0.0]))
        assert not logic.busy, "a click moved during the drag"
    settle(logic)
    np.testing.assert_allclose(logic.clicks[0].point_ras, typed)
    node.InvokeEvent(node.PointEndInteractionEvent)  # Slicer clears the attribute after it
    node.SetAttribute("Markups.MovingInSliceView", "")
    settle(logic)
    np.testing.assert_allclose(logic.clicks[0].point_ras, typed + [5.0, 0.0, 0.0])
    logic.undo()  # the whole drag is one edit
    settle(logic)
    np.testing.assert_allclose(logic.clicks[0].point_ras, typed)
    np.testing.assert_allclose(node.GetNthControlPointPositionWorld(0), typed)


def test_undoing_next_segment_while_a_selector_follows_the_segments_adopts_nothing(
    scene, make_logic
):
    """Slicer's segment selector, when its segment is removed, selects the first remaining
    segment and emits currentSegmentChanged; the widget forwards that to selectSegment."""
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    painted = cube((3, 3, 3), 4, labels.shape)
    segmentation, users = painted_segmentation(scene, node, "user's", painted)
    logic = make_logic(OraclePredictor(labels, 1), node)
    logic.setInputs(node, segmentation)
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    first = logic.currentSegmentId
    layers = segmentation.GetSegmentation()

    def selector_follows(caller, event):
        logic.selectSegment(layers.GetNthSegmentID(0))  # the first remaining: the user's

    layers.AddObserver(slicer.vtkSegmentation.SegmentRemoved, selector_follows)
    logic.nextSegment()
    settle(logic)
    second = logic.currentSegmentId
    logic.undo()
    settle(logic)
    assert layers.GetSegment(second) is None
    assert logic.currentSegmentId == first
    logic.nextSegment()  # a later new segment is a new one, not the user's
    settle(logic)
    assert logic.currentSegmentId not in (first, users)
    assert np.array_equal(segment_on_volume_grid(segmentation, users, node), painted)


def test_the_uncertainty_overlay_has_a_display_node_with_its_window(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    logic.computeUncertainty()
    settle(logic)
    display = logic.uncertaintyNode.GetDisplayNode()
    assert display is not None
    assert not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)


def test_keyboard_actions_delete_the_last_point_and_hide_the_segment(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    spleen = deepest_ras(labels, 1)
    place(logic, spleen)
    place(logic, spleen + [3.0, 0.0, 0.0], positive=False)
    settle(logic)
    logic.deleteLastPoint()
    settle(logic)
    assert [c.positive for c in logic.clicks] == [True]
    assert logic.negativeNode.GetNumberOfControlPoints() == 0
    display = logic.segmentationNode.GetDisplayNode()
    assert display.GetSegmentVisibility(logic.currentSegmentId)
    logic.toggleSegmentVisibility()
    assert not display.GetSegmentVisibility(logic.currentSegmentId)


def shared_layer_segment(logic, name, mask):
    """A segment painted into the layer the logic's own segments use (Slicer's default)."""
    segmentation = logic.segmentationNode
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", name, [0, 0, 1])
    write_whole(SegmentWriter(segmentation, logic.volumeNode), segment_id, mask)
    return segment_id


def test_a_segment_painted_during_the_session_is_protected(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels), node)  # everything labelled is "the object"
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    kidney = labels.array == 2
    painted = shared_layer_segment(logic, "kidney, painted meanwhile", kidney)
    place(logic, deepest_ras(labels, 2))  # in the kidney, which the oracle calls object too
    settle(logic)
    assert np.array_equal(segment_on_volume_grid(logic.segmentationNode, painted, node), kidney)
    assert not (current_mask(logic) & kidney).any()


def test_allowing_overlap_mid_session_reopens_it_with_the_same_points(scene, make_logic):
    # What the widget's "Allow overwriting other segments" does while a session runs.
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    kidney = labels.array == 2
    segmentation, _ = painted_segmentation(scene, node, "kidney", kidney)
    logic = make_logic(OraclePredictor(labels), node)
    logic.setInputs(node, segmentation)
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    assert not (current_mask(logic) & kidney).any(), "protected by default"
    logic.protectOtherSegments = False
    logic.setInputs(logic.volumeNode, logic.segmentationNode, logic.currentSegmentId)
    settle(logic)
    assert len(logic.clicks) == 1
    assert (current_mask(logic) & kidney).sum() == kidney.sum()


def test_overlapping_allowed_keeps_the_other_segment_in_a_layer_of_its_own(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    kidney = labels.array == 2
    segmentation, kidney_id = painted_segmentation(scene, node, "kidney", kidney)
    logic = make_logic(OraclePredictor(labels), node, protectOtherSegments=False)
    logic.setInputs(node, segmentation)
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    assert (current_mask(logic) & kidney).sum() == kidney.sum(), "overlap allowed"
    assert np.array_equal(segment_on_volume_grid(segmentation, kidney_id, node), kidney)
    logic.undo()
    settle(logic)
    assert not current_mask(logic).any()
    assert np.array_equal(segment_on_volume_grid(segmentation, kidney_id, node), kidney)


def test_an_undone_refinement_protects_the_segment_again(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels), node)
    kidney = labels.array == 2
    painted = shared_layer_segment(logic, "kidney", kidney)
    logic.selectSegment(painted)
    settle(logic)
    logic.undo()  # not refined after all
    settle(logic)
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    assert np.array_equal(segment_on_volume_grid(logic.segmentationNode, painted, node), kidney)


def test_actions_queued_behind_a_new_model_come_after_its_points(scene, make_logic):
    labels, node, logic, _ = spleen_clicked(scene, make_logic)
    first = logic.currentSegmentId
    expected = current_mask(logic)
    logic.setPredictor(OraclePredictor(labels, 1))
    logic.nextSegment()  # pressed while the new model loads
    settle(logic)
    assert logic.currentSegmentId != first and logic.clicks == ()
    assert np.array_equal(segment_on_volume_grid(logic.segmentationNode, first, node), expected)
    logic.selectSegment(first)
    settle(logic)
    assert len(logic.clicks) == 1


def test_a_click_in_flight_when_the_model_changes_ends_the_same_in_mrml(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 5), node)
    liver = deepest_ras(labels, 5)
    place(logic, liver)
    logic.setPredictor(OraclePredictor(labels, 1))  # before the click's result is written
    settle(logic)
    session = Session(read_volume(CT_IMAGE), OraclePredictor(labels, 1))
    assert np.array_equal(current_mask(logic), session.add_point(liver).mask.astype(bool))


def test_a_segment_deleted_during_the_session_comes_back_whole(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 5), node)
    place(logic, deepest_ras(labels, 5))
    settle(logic)
    expected = current_mask(logic)
    logic.segmentationNode.GetSegmentation().RemoveSegment(logic.currentSegmentId)
    place(logic, deepest_ras(labels, 5) + [3.0, 0.0, 0.0])
    settle(logic)
    assert np.array_equal(current_mask(logic), expected)


def test_a_refined_segment_survives_a_volume_of_another_size(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 1), node)
    spleen = labels.array == 1
    painted = shared_layer_segment(logic, "spleen", spleen)
    logic.selectSegment(painted)
    settle(logic)
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    # The same scan, cropped by ten slices at the start of i: the grid shifts by whole voxels.
    array = slicer.util.arrayFromVolume(node)[:, :, 10:].copy()
    origin = np.array(node.GetOrigin())
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    shift = mrml_io.matrix_to_array(matrix)[:3, 0] * 10
    slicer.util.updateVolumeFromArray(node, array)
    node.SetOrigin(*(origin + shift))
    place(logic, deepest_ras(labels, 1) + [0.0, 3.0, 0.0])
    settle(logic)
    assert logic.currentSegmentId == painted and len(logic.clicks) == 2
    assert current_mask(logic).any()


def test_a_new_model_places_the_points_again_in_the_sessions_order(
    scene, make_logic, fastsam3d_seeded
):
    """Negative before positive: the markups list positive points first, the session does not."""
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(fastsam3d_seeded, node)
    liver = deepest_ras(labels, 5)
    clicks = [(liver + [6.0, 0, 0], False), (liver, True), (liver + [0, 6.0, 0], True)]
    for point, positive in clicks:
        place(logic, point, positive)
        settle(logic)
    before = current_mask(logic)
    order = [click.positive for click in logic.clicks]
    logic.setPredictor(fastsam3d_seeded)  # the same model again: the same segment again
    settle(logic)
    assert [click.positive for click in logic.clicks] == order == [False, True, True]
    assert np.array_equal(current_mask(logic), before)


def test_the_module_loads_a_model_with_its_adapter_file_and_refuses_one_for_other_weights(
    scene, make_logic, fastsam3d_seeded, tmp_path
):
    from conftest import save_random_adapter

    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": fastsam3d_seeded.state_dict()}, weights)
    adapted = build_model("fastsam3d")
    adapted.load_state_dict(fastsam3d_seeded.state_dict())
    adapter = tmp_path / "liver.adapter.pt"
    save_random_adapter(adapted, adapter, scale=0.05)
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OraclePredictor(labels, 1), node)
    logic.setModel("fastsam3d", "cpu", str(weights), None, None, str(adapter))
    assert logic.waitForIdle(TIMEOUT_S) and not logic.errors
    liver = deepest_ras(labels, 5)
    place(logic, liver)
    settle(logic)
    expected = Session(read_volume(CT_IMAGE), adapted.eval()).add_point(liver, True).mask
    assert np.array_equal(current_mask(logic), expected.astype(bool))
    other = tmp_path / "other.pth"
    state = dict(fastsam3d_seeded.state_dict())
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"] + 1
    torch.save({"model_state_dict": state}, other)
    logic.setModel("fastsam3d", "cpu", str(other), None, None, str(adapter))
    assert logic.waitForIdle(TIMEOUT_S)
    assert any("trained on other fastsam3d weights" in str(e) for e in logic.errors)


def test_the_module_computes_the_encoder_in_the_precision_asked_for(
    scene, make_logic, fastsam3d_seeded, tmp_path
):
    """The Precision menu's choice reaches the encoder: int8 gives the int8 model's mask, which
    is not float32's."""
    from fastsam3d_core.evaluation.agreement import reduced_copy

    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": fastsam3d_seeded.state_dict()}, weights)
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    logic.setModel("fastsam3d", "cpu", str(weights), None, None, None, "int8")
    assert logic.waitForIdle(TIMEOUT_S) and not logic.errors
    assert logic.loadedModel[-1] == "int8"
    liver = deepest_ras(labels, 5)
    place(logic, liver)
    settle(logic)
    volume = read_volume(CT_IMAGE)
    int8 = Session(volume, reduced_copy(fastsam3d_seeded, "int8")).add_point(liver, True).mask
    float32 = Session(volume, fastsam3d_seeded).add_point(liver, True).mask
    assert np.array_equal(current_mask(logic), int8.astype(bool))
    assert not np.array_equal(int8, float32)
