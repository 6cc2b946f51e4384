"""The page's "Segment by name" field in a real browser (issue 29): ``fastsam3d web --adapter``
with the seeded FastSAM3D and a text adapter file, a name typed and Enter pressed, the segment of
that name in the page's segment list."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import chromium_browser, seeded_model
from test_slicer_mrml import CT_IMAGE

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None or not CT_IMAGE.is_file(),
    reason="Debian's chromium or the example CT is missing",
)
READY = "(document.querySelector('#status')?.textContent || '').startsWith('Ready')"
TIMEOUT_MS = 180_000


@pytest.fixture
def text_web_server(tmp_path: Path, start_web_page):
    from text_adapters import save_text_adapter

    weights = tmp_path / "seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, weights)
    adapter = save_text_adapter(tmp_path / "text.pt")
    return start_web_page(CT_IMAGE, "--weights", weights, "--adapter", adapter, "--sessions", "1")


def test_a_name_typed_in_the_field_adds_its_segment(text_web_server):
    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(text_web_server)
        page.wait_for_function(READY, timeout=TIMEOUT_MS)
        page.fill("#text-field", "liver")
        page.press("#text-field", "Enter")
        named = (
            "[...document.querySelectorAll('.segment-name')]"
            ".some(e => e.textContent.trim() === 'liver')"
        )
        try:
            page.wait_for_function(named, timeout=TIMEOUT_MS)
        except Exception:
            shown = [page.locator(f"#{e}").text_content() for e in ("status", "error")]
            names = page.locator(".segment-name").all_text_contents()
            raise AssertionError(f"no segment 'liver' (status, error: {shown}; {names})") from None
        page.wait_for_function(READY, timeout=TIMEOUT_MS)
        assert page.locator("#error").text_content().strip() == ""
