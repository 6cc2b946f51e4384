"""Boxes, scribbles and lassos through the engine on real MRML nodes: each markups node placed on a
real scene (an ROI, a curve, a closed curve), finished, run on the worker by the seeded FastSAM3D
on the example CT, and read back from the segmentation's labelmap.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from test_session_prompts import LIVER, circle, filled_slice, liver_box
from test_slicer_logic import TIMEOUT_S, current_mask, recorded_logic, settle
from test_slicer_mrml import CT_IMAGE, CT_LABEL, DATA, read_volume_node, slicer, vtk

from fastsam3d_core import Session
from fastsam3d_core.io import read_volume
from fastsam3d_mrml import mrml_io
from fastsam3d_mrml.markups_prompts import ID_ATTRIBUTE, KIND_ATTRIBUTE, drawn_points

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"test scans not found at {DATA}")
SLICE = 15  # an axial slice (k) through the liver


@pytest.fixture(scope="module")
def ct():
    """The example CT as the core reads it, and its liver (bool (I, J, K))."""
    return read_volume(CT_IMAGE), read_volume(CT_LABEL).array == LIVER


@pytest.fixture
def engine(fastsam3d_seeded):
    """A logic on a new scene with the CT, the seeded FastSAM3D, settled; cleaned up after."""
    mrml_io.ensure_segmentation_converters()
    scene = slicer.vtkMRMLScene()
    logic = recorded_logic(scene)
    logic.setPredictor(fastsam3d_seeded)
    logic.setInputs(read_volume_node(scene, CT_IMAGE))
    settle(logic)
    yield logic
    logic.cleanup()


def drawn(logic, kind: str, points_ras, positive: bool = True):
    """A prompt node of ``kind`` with these control points (world RAS), finished."""
    node = logic.newPromptNode(kind, positive)
    for point in points_ras:
        node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in point]))
    logic.finishPrompt(node)
    return node


def inside_bounds(image, bounds) -> np.ndarray:
    """The voxels whose centres lie in RAS bounds (xmin, xmax, ymin, ymax, zmin, zmax)."""
    ras = image.index_to_ras(np.indices(image.shape).reshape(3, -1).T.astype(float))
    low, high = np.array(bounds[0::2]) - 1e-6, np.array(bounds[1::2]) + 1e-6
    return np.all((ras >= low) & (ras <= high), axis=1).reshape(image.shape)


def ras_bounds(node) -> list[float]:
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return bounds


def test_a_positive_box_from_an_roi_has_no_voxel_outside_it_and_is_the_sessions_box(
    engine, ct, fastsam3d_seeded
):
    image, liver = ct
    corner_a, corner_b, _ = liver_box(image, liver)
    roi = engine.newPromptNode("box", positive=True)
    assert roi.IsA("vtkMRMLMarkupsROINode") and roi.GetAttribute(KIND_ATTRIBUTE) == "box"
    assert "positive" in roi.GetName()
    roi.SetXYZ(*((corner_a + corner_b) / 2))
    roi.SetRadiusXYZ(*(np.abs(corner_b - corner_a) / 2))
    engine.finishPrompt(roi)
    settle(engine)
    mask = current_mask(engine)
    assert mask.any()
    assert not (mask & ~inside_bounds(image, ras_bounds(roi))).any()
    (prompt,) = engine.prompts
    assert prompt.kind == "box" and prompt.positive
    assert prompt.prompt_id == roi.GetAttribute(ID_ATTRIBUTE)
    session = Session(image, fastsam3d_seeded)
    session.add_box(*drawn_points(roi))
    np.testing.assert_array_equal(mask, session.mask().astype(bool))


def test_an_roi_placed_with_two_corners_finishes_by_itself_as_slicer_shows_it(engine, ct):
    """Slicer gives an ROI placed with two clicks on a slice a depth equal to its shorter side
    (vtkMRMLMarkupsROINode): the box is the ROI as every view shows it."""
    image, liver = ct
    corner_a, corner_b, _ = liver_box(image, liver)
    corner_a[2] = corner_b[2] = image.index_to_ras(np.array([0.0, 0.0, SLICE]))[2]
    roi = engine.newPromptNode("box", positive=True)
    roi.AddControlPointWorld(vtk.vtkVector3d(*corner_a))
    assert not engine.busy and roi.GetAttribute(ID_ATTRIBUTE) is None
    roi.AddControlPointWorld(vtk.vtkVector3d(*corner_b))
    assert roi.GetAttribute(ID_ATTRIBUTE) and engine.busy  # no finishPrompt needed
    settle(engine)
    bounds = ras_bounds(roi)
    extent = np.array(bounds[1::2]) - np.array(bounds[0::2])
    assert extent[2] == pytest.approx(min(extent[:2]))
    mask = current_mask(engine)
    assert mask.any() and not (mask & ~inside_bounds(image, bounds)).any()
    engine.finishPrompt(roi)  # finished already: nothing more to do
    assert not engine.busy and len(engine.prompts) == 1


def test_a_lasso_sets_its_slice_to_the_filled_contour_and_a_negative_one_clears_it(engine, ct):
    image, liver = ct
    centre = np.argwhere(liver[:, :, SLICE]).mean(axis=0)
    contour = circle(image, centre, 9.0, SLICE)
    lasso = drawn(engine, "lasso", contour)
    assert lasso.IsA("vtkMRMLMarkupsClosedCurveNode")
    settle(engine)
    expected = filled_slice(image, contour, SLICE)
    assert expected.sum() > 200
    np.testing.assert_array_equal(current_mask(engine)[:, :, SLICE], expected)
    smaller = circle(image, centre + 2, 4.0, SLICE)
    drawn(engine, "lasso", smaller, positive=False)
    settle(engine)
    cleared = filled_slice(image, smaller, SLICE)
    np.testing.assert_array_equal(current_mask(engine)[:, :, SLICE], expected & ~cleared)
    assert [(p.kind, p.positive) for p in engine.prompts] == [("lasso", True), ("lasso", False)]


def test_undo_after_a_scribble_restores_the_segmentation_bit_for_bit(engine, ct):
    image, liver = ct
    where = np.argwhere(liver)
    point = engine.positiveNode.AddControlPointWorld(
        vtk.vtkVector3d(*image.index_to_ras(where[len(where) // 2].astype(float)))
    )
    assert point == 0
    settle(engine)
    before = current_mask(engine)
    stroke = image.index_to_ras(np.array([[50.0, 40.0, 15.0], [60.0, 50.0, 16.0], [70, 48, 17]]))
    scribble = drawn(engine, "scribble", stroke, positive=False)
    assert scribble.IsA("vtkMRMLMarkupsCurveNode") and not scribble.IsA(
        "vtkMRMLMarkupsClosedCurveNode"
    )
    settle(engine)
    after = current_mask(engine)
    assert not np.array_equal(after, before)
    engine.undo()
    settle(engine)
    np.testing.assert_array_equal(current_mask(engine), before)
    assert engine.promptNodes() == [] and not engine.scene.IsNodePresent(scribble)
    engine.redo()
    settle(engine)
    np.testing.assert_array_equal(current_mask(engine), after)
    (again,) = engine.promptNodes()
    assert again.GetAttribute(ID_ATTRIBUTE) == scribble.GetAttribute(ID_ATTRIBUTE)
    np.testing.assert_allclose(drawn_points(again), stroke)
    assert not engine.busy, "a node made again by redo is not an edit"


def test_moving_a_control_point_runs_the_lasso_again_once_the_drag_ends(engine, ct):
    image, liver = ct
    centre = np.argwhere(liver[:, :, SLICE]).mean(axis=0)
    contour = circle(image, centre, 9.0, SLICE)
    lasso = drawn(engine, "lasso", contour)
    settle(engine)
    moved = contour.copy()
    moved[0] += [6.0, 0.0, 0.0]  # outwards along R, on the same slice
    lasso.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointStartInteractionEvent)
    lasso.SetNthControlPointPositionWorld(0, *moved[0])
    assert not engine.busy, "a drag is sent when it ends, not on every move"
    lasso.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)
    assert engine.busy
    settle(engine)
    expected = filled_slice(image, moved, SLICE)
    assert not np.array_equal(expected, filled_slice(image, contour, SLICE))
    np.testing.assert_array_equal(current_mask(engine)[:, :, SLICE], expected)
    (prompt,) = engine.prompts
    np.testing.assert_allclose(prompt.points_ras, moved)
    # A position typed (no drag) is sent at once; one undo takes the move back.
    lasso.SetNthControlPointPositionWorld(0, *contour[0])
    settle(engine)
    np.testing.assert_array_equal(
        current_mask(engine)[:, :, SLICE], filled_slice(image, contour, SLICE)
    )
    engine.undo()
    settle(engine)
    np.testing.assert_allclose(drawn_points(lasso), moved)


def test_deleting_the_node_removes_the_prompt_and_undo_brings_it_back(engine, ct):
    image, liver = ct
    corner_a, corner_b, _ = liver_box(image, liver)
    roi = engine.newPromptNode("box", positive=True)
    roi.SetXYZ(*((corner_a + corner_b) / 2))
    roi.SetRadiusXYZ(*(np.abs(corner_b - corner_a) / 2))
    settle(engine)
    boxed = current_mask(engine)
    assert boxed.any()
    engine.scene.RemoveNode(roi)
    assert engine.busy
    settle(engine)
    assert not current_mask(engine).any() and engine.prompts == ()
    assert engine.promptNodes() == []
    engine.undo()
    settle(engine)
    np.testing.assert_array_equal(current_mask(engine), boxed)
    (back,) = engine.promptNodes()
    assert back.GetAttribute(ID_ATTRIBUTE) == roi.GetAttribute(ID_ATTRIBUTE)
    np.testing.assert_allclose(ras_bounds(back), ras_bounds(roi), atol=1e-6)


def test_a_bad_drawing_is_reported_in_one_line_its_node_removed_and_nothing_changed(engine, ct):
    image, liver = ct
    centre = np.argwhere(liver[:, :, SLICE]).mean(axis=0)
    drawn(engine, "lasso", circle(image, centre, 9.0, SLICE))
    settle(engine)
    before = current_mask(engine)
    (kept,) = engine.prompts
    corners = [[50.2, 40.2], [70.2, 60.2], [70.2, 40.2], [50.2, 60.2]]  # crossing at the middle
    bowtie = image.index_to_ras(np.array([[i, j, SLICE] for i, j in corners]))
    crossing = drawn(engine, "lasso", bowtie)
    single = drawn(engine, "scribble", bowtie[:1])
    assert engine.waitForIdle(TIMEOUT_S)
    messages = [str(error) for error in engine.errors]
    assert len(messages) == 2 and all("\n" not in message for message in messages), messages
    assert "crosses itself" in messages[0] and "two" in messages[1]
    for node in (crossing, single):
        assert not engine.scene.IsNodePresent(node)
    np.testing.assert_array_equal(current_mask(engine), before)
    assert engine.prompts == (kept,) and len(engine.promptNodes()) == 1
    # Nothing drawn: the node goes, and nothing is reported.
    empty = engine.newPromptNode("scribble", positive=True)
    engine.finishPrompt(empty)
    assert not engine.scene.IsNodePresent(empty) and not engine.busy and len(engine.errors) == 2


def test_another_segment_shows_its_own_prompt_nodes(engine, ct):
    image, liver = ct
    centre = np.argwhere(liver[:, :, SLICE]).mean(axis=0)
    first = drawn(engine, "lasso", circle(image, centre, 9.0, SLICE))
    settle(engine)
    first_segment = engine.currentSegmentId
    engine.nextSegment()
    settle(engine)
    assert engine.promptNodes() == [] and not engine.scene.IsNodePresent(first)
    second = drawn(engine, "lasso", circle(image, centre, 5.0, SLICE), positive=False)
    settle(engine)
    engine.selectSegment(first_segment)
    settle(engine)
    (shown,) = engine.promptNodes()
    assert shown.GetAttribute(ID_ATTRIBUTE) == first.GetAttribute(ID_ATTRIBUTE)
    assert "positive" in shown.GetName() and not engine.scene.IsNodePresent(second)
    np.testing.assert_allclose(drawn_points(shown), circle(image, centre, 9.0, SLICE))


def test_a_session_opened_again_draws_the_prompts_again(engine, ct):
    image, liver = ct
    centre = np.argwhere(liver[:, :, SLICE]).mean(axis=0)
    contour = circle(image, centre, 9.0, SLICE)
    lasso = drawn(engine, "lasso", contour)
    settle(engine)
    engine.protectOtherSegments = False  # read when a session opens: the same nodes, again
    engine.setInputs(engine.volumeNode, engine.segmentationNode, engine.currentSegmentId)
    settle(engine)
    (prompt,) = engine.prompts
    assert prompt.prompt_id == lasso.GetAttribute(ID_ATTRIBUTE) and engine.promptNodes() == [lasso]
    np.testing.assert_array_equal(
        current_mask(engine)[:, :, SLICE], filled_slice(image, contour, SLICE)
    )


# -- the Slicer module's tools (the module needs the application: checked on its files) -----

MODULE = Path(__file__).resolve().parents[1] / "FastSAM3DSlicer"
# Keys Slicer's views take themselves: slice views (vtkMRMLSliceIntersectionWidget: g t f b v,
# V with any modifier, r), the 3-D view (vtkMRMLCameraWidget r, vtkMRMLModelDisplayableManager i)
# and a control point under the mouse (vtkSlicerMarkupsWidget: s).
SLICER_VIEW_KEYS = set("gtfbvris")


def drawing_calls(tree: ast.AST) -> list[tuple[str, bool]]:
    return [
        (call.args[0].value, call.args[1].value)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "draw"
    ]


def test_the_module_offers_each_prompt_and_sign_as_a_button_and_a_free_shortcut():
    tools = ast.parse((MODULE / "FastSAM3DSlicerLib" / "session_tools.py").read_text("utf-8"))
    functions = {node.name: node for node in ast.walk(tools) if isinstance(node, ast.FunctionDef)}
    every = {(kind, sign) for kind in ("box", "scribble", "lasso") for sign in (True, False)}
    # The keys are the engine's table's (which the page reads too); the module draws each.
    from fastsam3d_mrml.shortcuts import DRAWING_ACTIONS, SHORTCUTS

    installed = ast.unparse(functions["installShortcuts"])
    assert "DRAWING_ACTIONS" in installed and "partial(self.draw, kind, positive)" in installed
    drawing_keys = {k: DRAWING_ACTIONS[act] for k, act, _ in SHORTCUTS if act in DRAWING_ACTIONS}
    assert set(drawing_keys.values()) == every and len(drawing_keys) == len(every)
    for key, (_kind, positive) in drawing_keys.items():
        letter = key.split("+")[-1]
        assert key == (letter if positive else f"Shift+{letter}"), key
        assert len(letter) == 1 and letter.lower() not in SLICER_VIEW_KEYS, key
    (listed,) = [n for n in ast.walk(functions["drawingButtons"]) if isinstance(n, ast.List)]
    buttons = {(item.elts[0].value, item.elts[1].value): item.elts[2].attr for item in listed.elts}
    assert set(buttons) == every
    ui = ElementTree.parse(MODULE / "Resources" / "UI" / "FastSAM3DSlicer.ui").getroot()
    for (kind, positive), name in buttons.items():
        (widget,) = [w for w in ui.iter("widget") if w.get("name") == name]
        text = widget.find("./property[@name='text']/string").text
        key = next(k for k, tool in drawing_keys.items() if tool == (kind, positive))
        assert kind in text.lower() and f"({key})" in text, (name, text)


def test_a_session_opened_again_keeps_a_point_placed_in_a_box_inside_the_box(engine, ct):
    """Drawings are placed again before points: a point inside a box goes to the box's crop
    again, so the segment stays in the box."""
    image, liver = ct
    middle = (np.argwhere(liver).min(axis=0) + np.argwhere(liver).max(axis=0)) // 2
    low, high = image.index_to_ras(np.stack([middle - [12, 10, 5], middle + [12, 10, 5]]) * 1.0)
    roi = engine.newPromptNode("box", positive=True)
    roi.SetXYZ(*((low + high) / 2))
    roi.SetRadiusXYZ(*(np.abs(high - low) / 2))
    engine.finishPrompt(roi)
    settle(engine)
    engine.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*image.index_to_ras(middle * 1.0)))
    settle(engine)
    outside = ~inside_bounds(image, ras_bounds(roi))
    assert current_mask(engine).any() and not (current_mask(engine) & outside).any()
    engine.protectOtherSegments = False  # read when a session opens: the same nodes, again
    engine.setInputs(engine.volumeNode, engine.segmentationNode, engine.currentSegmentId)
    settle(engine)
    assert current_mask(engine).any() and not (current_mask(engine) & outside).any()
