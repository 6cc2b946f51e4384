"""The page's "Segment by name" field in-process (issue 29), as the browser's messages call it:
a real trame server and :class:`SegmentationPage` on the example CT with the text oracle (the
labelmap and its names)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_slicer_mrml import CT_IMAGE, CT_LABEL, segment_on_volume_grid

from fastsam3d_core.examples import SPLEEN_POINT_RAS
from fastsam3d_core.io import read_volume

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
TIMEOUT_S = 120
SPLEEN, LIVER = 1, 5
_servers = itertools.count()


@pytest.fixture
def page():
    from trame.app import get_server

    from fastsam3d_core.session.text_oracle import OracleTextPredictor
    from fastsam3d_web.app import SegmentationPage

    server = get_server(f"test-text-page-{next(_servers)}", client_type="vue3")
    predictor = OracleTextPredictor(read_volume(CT_LABEL), {"liver": LIVER, "spleen": SPLEEN})
    page = SegmentationPage(server, CT_IMAGE, predictor, SPLEEN_POINT_RAS)
    settle(page)
    yield page
    page.logic.cleanup()


def settle(page) -> None:
    assert page.logic.waitForIdle(TIMEOUT_S)
    page.logic.processEvents(0)


def test_the_field_offers_the_models_names_and_a_name_adds_its_segment(page):
    page.text_panel.refresh_names()
    assert page.state.text_names == ["liver", "spleen"]
    page.state.text_prompt = "liver"
    page.text_panel.segment()  # the button
    settle(page)
    assert page.state.error == ""
    titles = [item["title"] for item in page.state.segments]
    assert titles[-1] == "liver" and page.state.segment_id == page.state.segments[-1]["value"]
    mask = segment_on_volume_grid(
        page.logic.segmentationNode, page.state.segment_id, page.logic.volumeNode
    )
    liver = read_volume(CT_LABEL).array == LIVER
    assert 2 * (mask & liver).sum() / (mask.sum() + liver.sum()) > 0.97
    page.text_panel.segment("Spleen")  # Enter in the field sends what it holds
    settle(page)
    assert [item["title"] for item in page.state.segments][-2:] == ["liver", "Spleen"]
    assert np.any(mask)


@pytest.mark.parametrize(
    ("typed", "says"),
    [("  ", "empty text: give the name of a structure"), ("kidney", "'kidney' is not among")],
)
def test_text_the_model_cannot_segment_shows_one_line(page, typed, says):
    before = list(page.state.segments)
    page.text_panel.segment(typed)
    settle(page)
    assert page.state.error.startswith(says) and "\n" not in page.state.error
    assert page.state.segments == before


def test_the_page_loads_the_adapter_file_it_is_given_and_offers_its_names(tmp_path):
    """``fastsam3d web --adapter A.pt``'s way to a session: the settings carry the file to the
    session process, which loads the model with it (the seeded FastSAM3D, a text adapter)."""
    import torch
    from conftest import seeded_model
    from text_adapters import save_text_adapter
    from trame.app import get_server

    from fastsam3d_web import start
    from fastsam3d_web.app import SegmentationPage
    from fastsam3d_web.server import predictor_for

    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, weights)
    adapter = save_text_adapter(tmp_path / "text.pt")
    settings = start.PageSettings(image=CT_IMAGE, weights=weights, adapter=adapter)
    received = start.settings_from_environment(start.session_environment(settings))
    assert received.adapter == adapter.resolve()
    predictor = predictor_for(received.model, received.weights, None, None, None, None,
                              received.adapter)  # fmt: skip
    assert predictor[-1] == str(adapter.resolve())
    server = get_server(f"test-text-page-{next(_servers)}", client_type="vue3")
    page = SegmentationPage(server, CT_IMAGE, predictor, SPLEEN_POINT_RAS)
    try:
        settle(page)
        page.text_panel.refresh_names()
        assert page.state.text_names == ["liver", "spleen"]
        page.text_panel.segment("liver")
        settle(page)
        assert page.state.error == "" and page.state.segments[-1]["title"] == "liver"
    finally:
        page.logic.cleanup()
