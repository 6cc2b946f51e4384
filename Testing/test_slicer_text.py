"""Segment by name through the engine (issue 29) on real MRML nodes: the logic's
``addTextSegment`` on the example CT, with the oracle (exact geometry) and with the seeded
FastSAM3D loaded with a text adapter file as the module loads it (setModel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_session import dice
from test_slicer_logic import (
    CT_IMAGE,
    CT_LABEL,
    TIMEOUT_S,
    current_mask,
    place,
    read_volume_node,
    settle,
)

from fastsam3d_core.io import read_volume
from fastsam3d_core.session import OraclePredictor
from fastsam3d_core.session.text_oracle import OracleTextPredictor

SPLEEN, LIVER = 1, 5


def segment_names(logic) -> list[str]:
    segmentation = logic.segmentationNode.GetSegmentation()
    return [
        segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())
    ]


def test_a_text_adds_a_named_segment_over_the_volume_undone_in_one_step(scene, make_logic):
    labels = read_volume(CT_LABEL)
    logic = make_logic(
        OracleTextPredictor(labels, {"liver": LIVER, "spleen": SPLEEN}),
        read_volume_node(scene, CT_IMAGE),
    )
    assert logic.textNames() == ("liver", "spleen")
    first = logic.currentSegmentId
    logic.addTextSegment(" liver ")
    settle(logic)
    assert logic.currentSegmentId != first and "liver" in segment_names(logic)
    assert dice(current_mask(logic), labels.array == LIVER) > 0.97
    progress = [s for s in logic.observer.statuses if s.startswith("Segmenting 'liver': crop")]
    assert progress == [f"Segmenting 'liver': crop {n} of 4 ({n / 4:.0%})" for n in (1, 2, 3, 4)]
    # A point afterwards refines the text's segment, in its (already encoded) crop.
    spleen_voxels = np.argwhere(labels.array == SPLEEN)
    voxel = tuple(spleen_voxels[len(spleen_voxels) // 2])
    assert not current_mask(logic)[voxel]
    place(logic, labels.index_to_ras(np.array(voxel, dtype=float)))
    settle(logic)
    assert not logic.lastEncoderRan
    assert current_mask(logic)[voxel]  # the (oracle's) decoder took the spleen in
    logic.undo()  # the point
    logic.undo()  # the text: its segment goes
    settle(logic)
    assert "liver" not in segment_names(logic) and logic.currentSegmentId == first


def test_text_that_cannot_be_segmented_is_reported_in_one_line(scene, make_logic):
    labels = read_volume(CT_LABEL)
    node = read_volume_node(scene, CT_IMAGE)
    logic = make_logic(OracleTextPredictor(labels, {"liver": LIVER}), node)
    with pytest.raises(ValueError, match="^empty text"):
        logic.addTextSegment("  ")
    logic.addTextSegment("kidney")
    assert logic.waitForIdle(TIMEOUT_S)
    assert [str(e) for e in logic.errors] == [
        "'kidney' is not among the names this model knows (liver)"
    ]
    clicks_only = make_logic(OraclePredictor(labels, LIVER), node)
    assert clicks_only.textNames() == ()
    clicks_only.addTextSegment("liver")
    assert clicks_only.waitForIdle(TIMEOUT_S)
    assert str(clicks_only.errors[-1]).startswith("this model has no text path")


def test_the_module_segments_by_name_with_the_text_adapter_it_loads(
    scene, make_logic, fastsam3d_seeded, tmp_path
):
    from text_adapters import save_text_adapter

    from fastsam3d_core import Session
    from fastsam3d_core.session.text_prompt import TextVocabulary

    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": fastsam3d_seeded.state_dict()}, weights)
    adapter = save_text_adapter(tmp_path / "text.pt")
    labels = read_volume(CT_LABEL)
    logic = make_logic(OraclePredictor(labels, 1), read_volume_node(scene, CT_IMAGE))
    logic.setModel("fastsam3d", "cpu", str(weights), None, None, str(adapter))
    assert logic.textNames() == ("liver", "spleen")
    logic.addTextSegment("spleen")
    settle(logic)
    assert logic.lastEncoderRan and "spleen" in segment_names(logic)
    from text_adapters import model_with_adapter

    session = Session(read_volume(CT_IMAGE), model_with_adapter(adapter).eval())
    expected = session.add_text("spleen", TextVocabulary.from_adapter(adapter)).mask
    np.testing.assert_array_equal(current_mask(logic), expected.astype(bool))
    # A point afterwards, in one of the text's crops: decoded with the text (no encoder run),
    # as the engine's own session decodes it.
    ras = labels.index_to_ras(np.array(labels.array.shape, dtype=float) / 2)
    place(logic, ras, positive=False)
    settle(logic)
    assert not logic.lastEncoderRan
    expected = session.add_point(ras, positive=False).mask
    np.testing.assert_array_equal(current_mask(logic), expected.astype(bool))
