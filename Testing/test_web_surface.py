"""The page's 3-D view shows the segment as a surface, updated with each edit (in Chromium).

The page as ``fastsam3d web`` starts it (the oracle on the example CT's spleen, see
``test_web.py``'s fixtures): after a click in the axial view, pixels of the segment's colour
(orange, the first segment's) appear in the 3-D view, which shows no volume rendering; undo
takes them away and redo brings them back.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import test_web
from test_web import TIMEOUT_MS, _axial_view_box, _click_and_wait, _open, _pixels

from fastsam3d_core.session.state import SEGMENT_COLORS

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")

SEGMENT_RGB = np.array(SEGMENT_COLORS[0]) * 255  # the first segment's colour
SURFACE_PIXELS = 200  # the spleen's surface covers thousands of the view's pixels
NONE_PIXELS = 20
WAIT_S = 60

# The page tests' fixtures: the server as a user starts it (the oracle on the spleen), chromium.
web_server, browser = test_web.web_server, test_web.browser
needs_chromium = pytest.mark.skipif(test_web.CHROMIUM is None, reason="no Debian chromium")


def _threed_view_box(page) -> dict:
    """The 3-D view's box: the second view of the "Axial Primary" layout (above coronal)."""
    box = page.locator(".view-gutter").nth(1).locator("xpath=..").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, box
    return box


def _segment_coloured(page, box: dict) -> int:
    """How many pixels of the view have the segment's hue: shaded orange, each channel in the
    colour's proportions (the lighting scales them), red well above green above blue."""
    rgb = _pixels(page, box).astype(float)
    brightness = rgb.max(axis=-1, keepdims=True)
    lit = brightness[..., 0] > 60
    chroma = rgb / np.maximum(brightness, 1.0)
    expected = SEGMENT_RGB / SEGMENT_RGB.max()
    close = np.abs(chroma - expected).max(axis=-1) < 0.15
    return int(np.count_nonzero(lit & close))


def _wait_for_pixels(page, box: dict, condition, what: str) -> int:
    deadline = time.monotonic() + WAIT_S
    while True:
        count = _segment_coloured(page, box)
        if condition(count):
            return count
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {count} segment-coloured pixels in the 3-D view")
        page.wait_for_timeout(500)


@needs_chromium
def test_the_3d_view_shows_the_segment_as_a_surface_updated_with_each_edit(web_server, browser):
    page = _open(browser, web_server)
    axial, threed = _axial_view_box(page), _threed_view_box(page)
    before = _segment_coloured(page, threed)
    assert before < NONE_PIXELS, f"{before} segment-coloured pixels before any click"

    _click_and_wait(page, axial, clicks_after=1)
    shown = _wait_for_pixels(page, threed, lambda n: n > SURFACE_PIXELS, "after a click")

    page.click("#undo")
    page.wait_for_function(
        "(document.querySelector('#progress')?.textContent || '').includes('idle · 0 points')",
        timeout=TIMEOUT_MS,
    )
    _wait_for_pixels(page, threed, lambda n: n < NONE_PIXELS, "after undo")

    page.click("#redo")
    again = _wait_for_pixels(page, threed, lambda n: n > SURFACE_PIXELS, "after redo")
    assert abs(again - shown) < 0.2 * shown, (shown, again)  # the same surface, the same view
    assert page.text_content("#error") == ""
