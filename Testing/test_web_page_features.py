"""The page's segment list, keys and view controls in-process (a real trame server object and
page, the oracle on the example CT's spleen; calls as the browser sends them): the browser test
(test_web_features.py) checks what shows on screen."""

from __future__ import annotations

import itertools

import pytest
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_page import settle

from fastsam3d_core.examples import SPLEEN_LABEL, SPLEEN_POINT_RAS

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
_servers = itertools.count()


@pytest.fixture
def page():
    from trame.app import get_server

    from fastsam3d_web.app import SegmentationPage
    from fastsam3d_web.server import predictor_for

    server = get_server(f"test-page-features-{next(_servers)}", client_type="vue3")
    predictor = predictor_for("oracle", None, None, None, CT_LABEL, SPLEEN_LABEL)
    page = SegmentationPage(server, CT_IMAGE, predictor, SPLEEN_POINT_RAS)
    settle(page)
    yield page
    page.logic.cleanup()


def click_spleen(page) -> None:
    node = page.logic.positiveNode
    node.AddControlPointWorld(*[float(v) for v in SPLEEN_POINT_RAS])
    settle(page)


def test_the_segment_list_renames_recolours_hides_and_deletes(page):
    click_spleen(page)
    (first,) = page.state.segments
    assert first["color"].startswith("#") and first["visible"]
    page.segments_panel.rename(first["value"], "spleen")
    page.segments_panel.recolour(first["value"], "#ff8000")
    page.segments_panel.toggle_visibility(first["value"])
    assert page.state.error == ""
    (shown,) = page.state.segments
    assert (shown["title"], shown["color"], shown["visible"]) == ("spleen", "#ff8000", False)
    segment = page.logic.segmentationNode.GetSegmentation().GetSegment(first["value"])
    assert segment.GetName() == "spleen"
    assert [round(v, 3) for v in segment.GetColor()] == [1.0, 0.502, 0.0]
    page.segments_panel.recolour(first["value"], "not a colour")
    assert "not a colour" in page.state.error
    page.logic.nextSegment()
    settle(page)
    second = page.state.segments[1]["value"]
    assert page.state.segment_id == second
    page.segments_panel.delete(second)
    settle(page)
    assert [s["value"] for s in page.state.segments] == [first["value"]]
    assert page.state.segment_id == first["value"] == page.logic.currentSegmentId


def test_each_key_runs_its_action_and_unknown_keys_are_refused(page):
    keys = page.shortcuts
    keys.press("N")
    assert (page.state.tool, page.state.negative) == ("point", True)
    keys.press("Shift+X")
    assert (page.state.tool, page.state.negative) == ("box", True)
    keys.press("L")
    assert (page.state.tool, page.state.negative) == ("lasso", False)
    keys.press("Shift+T")
    assert page.state.negative
    keys.press("P")
    assert (page.state.tool, page.state.negative) == ("point", False)
    click_spleen(page)
    segment = page.logic.currentSegmentId
    display = page.logic.segmentationNode.GetDisplayNode()
    keys.press("H")
    assert not display.GetSegmentVisibility(segment)
    assert page.state.segments[0]["visible"] is False
    keys.press("Ctrl+Z")
    settle(page)
    assert len(page.logic.clicks) == 0
    keys.press("Ctrl+Y")
    settle(page)
    assert len(page.logic.clicks) == 1
    keys.press("D")
    settle(page)
    assert len(page.logic.clicks) == 0
    for key in ("Ctrl+N", "Alt+N"):
        keys.press(key)
        settle(page)
    assert len(page.state.segments) == 3
    assert page.state.error == ""
    keys.press("?")
    assert page.state.show_keys
    assert {"Ctrl+Z", "Shift+T", "?"} <= {item["key"] for item in page.state.shortcut_list}
    keys.press("Ctrl+Q")
    assert "not a key of this page" in page.state.error


def test_presets_set_the_window_and_reset_views_fits_the_slices(page):
    display = page.volume.GetDisplayNode()
    page.views_panel.apply_preset("ct-lung")
    assert (display.GetWindow(), display.GetLevel()) == (1500.0, -600.0)
    assert not display.GetAutoWindowLevel() and page.state.window_level == "W 1500 L -600"
    page.views_panel.apply_preset("ct-bone")
    assert (display.GetWindow(), display.GetLevel()) == (1800.0, 400.0)
    page.views_panel.apply_preset("mr-auto")
    assert display.GetAutoWindowLevel() and display.GetWindow() != 1800.0
    page.views_panel.apply_preset("nope")
    assert "not a window/level preset" in page.state.error
    slice_node = page.slicer.scene.GetNodeByID("vtkMRMLSliceNodeRed")
    fitted = list(slice_node.GetFieldOfView())
    slice_node.SetFieldOfView(10.0, 10.0, 1.0)
    page.views_panel.reset_views()
    assert list(slice_node.GetFieldOfView())[:2] == pytest.approx(fitted[:2], rel=0.05)
