"""The engine's segment edits (rename, recolour, show or hide, delete) on real MRML nodes, with
the oracle on the example CT: what the Slicer module and the browser page both call."""

from __future__ import annotations

import numpy as np
import pytest
from test_slicer_logic import (
    CT_IMAGE,
    CT_LABEL,
    current_mask,
    deepest_ras,
    place,
    read_volume_node,
    segment_on_volume_grid,
    settle,
)

from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor


def two_segments(scene, make_logic):
    """Everything non-zero as the object; the spleen clicked into a first segment, then a
    kidney (label 2, in the same crop) into a second: (labels, logic, first id, second id)."""
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels), read_volume_node(scene, CT_IMAGE))
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    first = logic.currentSegmentId
    logic.nextSegment()
    settle(logic)
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    return labels, logic, first, logic.currentSegmentId


def test_rename_recolour_and_hide_change_the_mrml_segment_and_tell_the_observer(scene, make_logic):
    _, logic, first, second = two_segments(scene, make_logic)
    heard = len(logic.observer.segments_shown)
    logic.renameSegment(first, "  spleen ")
    logic.setSegmentColor(first, (1.0, 0.5, 0.0))
    logic.setSegmentVisibility(second, False)
    segmentation = logic.segmentationNode.GetSegmentation()
    assert segmentation.GetSegment(first).GetName() == "spleen"
    assert tuple(segmentation.GetSegment(first).GetColor()) == (1.0, 0.5, 0.0)
    display = logic.segmentationNode.GetDisplayNode()
    assert not display.GetSegmentVisibility(second) and display.GetSegmentVisibility(first)
    assert not logic.segmentVisible(second)
    assert len(logic.observer.segments_shown) == heard + 3
    for wrong in (lambda: logic.renameSegment(first, " "),
                  lambda: logic.setSegmentColor(first, (2, 0, 0)),
                  lambda: logic.setSegmentVisibility("no such segment", True)):  # fmt: skip
        with pytest.raises(ValueError):
            wrong()
    assert segmentation.GetSegment(first).GetName() == "spleen"


def test_deleting_the_current_segment_makes_another_current_and_frees_its_voxels(scene, make_logic):
    labels, logic, first, second = two_segments(scene, make_logic)
    kidney = current_mask(logic)
    assert kidney.any()
    logic.deleteSegment(second)
    settle(logic)
    assert logic.segmentIds() == [first] and logic.currentSegmentId == first
    # Its voxels no longer keep the others out: the first segment can take the kidney now.
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    assert logic.segmentIds() == [first]  # the deleted segment is not made again
    assert (current_mask(logic) & kidney).sum() > 0.9 * kidney.sum()
    # Deleting the last segment leaves a new, empty one current.
    logic.deleteSegment(first)
    settle(logic)
    (only,) = logic.segmentIds()
    assert only != first and logic.currentSegmentId == only
    assert not current_mask(logic).any()
    assert logic.positiveNode.GetNumberOfControlPoints() == 0


def test_deleting_another_segment_keeps_the_current_one_and_its_points(scene, make_logic):
    labels, logic, first, second = two_segments(scene, make_logic)
    spleen = segment_on_volume_grid(logic.segmentationNode, first, logic.volumeNode)
    logic.deleteSegment(first)
    settle(logic)
    assert logic.segmentIds() == [second] and logic.currentSegmentId == second
    assert logic.positiveNode.GetNumberOfControlPoints() == 1
    # A click in the spleen for the current segment now takes its voxels.
    place(logic, deepest_ras(labels, 1))
    settle(logic)
    assert (current_mask(logic) & spleen).sum() > 0.9 * spleen.sum()
    assert logic.segmentIds() == [second]
    with pytest.raises(ValueError):
        logic.deleteSegment(first)
    assert np.any(current_mask(logic))


def test_undo_after_deleting_a_segment_does_not_bring_back_its_hidden_voxels(scene, make_logic):
    """Deleting is not undoable: an Undo after it must not restore the deleted segment inside
    the session, where its unseen voxels would keep the other segments out."""
    labels, logic, first, second = two_segments(scene, make_logic)
    kidney = current_mask(logic)
    logic.deleteSegment(second)
    settle(logic)
    logic.undo()
    settle(logic)
    assert logic.segmentIds() == [first] and logic.currentSegmentId == first
    place(logic, deepest_ras(labels, 2))
    settle(logic)
    assert logic.segmentIds() == [first]
    assert (current_mask(logic) & kidney).sum() > 0.9 * kidney.sum()
    # Deleting the last one starts a new segment in the same edit: Undo cannot go back behind it.
    logic.deleteSegment(first)
    settle(logic)
    logic.undo()
    settle(logic)
    (only,) = logic.segmentIds()
    assert only != first and logic.currentSegmentId == only and not current_mask(logic).any()
