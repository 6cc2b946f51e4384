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
