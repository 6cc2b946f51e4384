"""What a Slicer user expects in the page, in a real browser (Debian's chromium through
Playwright, as in test_web.py): the segment list (rename, recolour, show/hide, delete), the
Slicer module's keys and their help panel, window/level presets and Reset views.

One page start serves all the checks (CI runs the browser tests on 2 cores); the in-process
details are in test_web_page_features.py.
"""

from __future__ import annotations

import numpy as np
from test_web import (  # noqa: F401 (browser and web_server: fixtures)
    CHANGED,
    IDLE_WITH,
    READY,
    TIMEOUT_MS,
    _axial_view_box,
    _click_and_wait,
    _download,
    _open,
    _pixels,
    browser,
    pytestmark,
    web_server,
)

from fastsam3d_core.io import read_segmentation

POLL_S = 30  # a view's next frame comes within a second or two; on a loaded machine, more


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a - b).max(axis=2) > CHANGED).sum())


def settled_pixels(page, box: dict, unlike: np.ndarray | None = None, least: int = 0):
    """The view's pixels once its next streamed frame came: with ``unlike``, polled until at
    least ``least`` of them differ from it (or the time is up)."""
    deadline = POLL_S
    waited, pixels = 0.0, _pixels(page, box)
    while unlike is not None and changed_pixels(pixels, unlike) <= least and waited < deadline:
        page.wait_for_timeout(250)
        waited += 0.25
        pixels = _pixels(page, box)
    page.wait_for_timeout(300)
    return _pixels(page, box)


def test_keys_help_segment_list_presets_and_reset_views(request, tmp_path):
    page = _open(request.getfixturevalue("browser"), request.getfixturevalue("web_server"))
    box = _axial_view_box(page)
    before = _pixels(page, box)
    # The help panel lists the module's keys.
    page.keyboard.press("?")
    help_panel = page.locator("#keys-help")
    help_panel.wait_for(state="visible", timeout=TIMEOUT_MS)
    listed = help_panel.locator(".shortcut-key").all_text_contents()
    assert {"P", "N", "Shift+T", "H", "Ctrl+Z", "Ctrl+Y", "Ctrl+N", "?"} <= set(listed), listed
    page.click("#close-keys")
    help_panel.wait_for(state="hidden", timeout=TIMEOUT_MS)

    # A click, then Ctrl+Z removes the segment's pixels; Ctrl+Y brings them back.
    _click_and_wait(page, box, clicks_after=1)
    segmented = settled_pixels(page, box, before, 2000)
    assert changed_pixels(segmented, before) > 2000
    page.keyboard.press("Control+z")
    page.wait_for_function(IDLE_WITH.format(0), timeout=TIMEOUT_MS)
    assert changed_pixels(settled_pixels(page, box, segmented, 2000), before) < 300
    page.keyboard.press("Control+y")
    page.wait_for_function(IDLE_WITH.format(1), timeout=TIMEOUT_MS)
    settled_pixels(page, box, before, 2000)
    # H hides the current segment (its eye in the list too), H again shows it.
    page.keyboard.press("h")
    page.locator("#segment-list .segment-visibility .mdi-eye-off").wait_for(timeout=TIMEOUT_MS)
    # The overlay covers thousands of pixels; the point's marker, which stays, a few hundred.
    assert changed_pixels(settled_pixels(page, box, segmented, 2000), before) < 800
    page.keyboard.press("h")
    page.locator("#segment-list .segment-visibility .mdi-eye").wait_for(timeout=TIMEOUT_MS)
    shown = settled_pixels(page, box, before, 2000)
    # Shift+T switches the sign, P places positive points again.
    page.keyboard.press("Shift+T")
    page.wait_for_function("document.querySelector('#polarity').textContent.includes('Negative')")
    page.keyboard.press("p")
    page.wait_for_function("document.querySelector('#polarity').textContent.includes('Positive')")

    # Rename: the keys typed into the name field stay there (s, p, l, e, n are shortcuts).
    page.locator("#segment-list .segment-rename").first.click()
    name_field = page.locator("#segment-list .segment-new-name input")
    name_field.fill("")
    name_field.type("spleen")
    name_field.press("Enter")
    page.locator("#segment-list .segment-name", has_text="spleen").wait_for(timeout=TIMEOUT_MS)
    assert "0 drawn" in page.text_content("#progress") and page.text_content("#error") == ""
    assert page.text_content("#polarity").strip() == "Positive"
    assert page.locator("#tool-point.v-btn--active").count() == 1
    # Recolour with the picker's swatch (from orange to blue, far enough to show through the
    # overlay's opacity): the swatch button and the overlay change colour.
    page.locator("#segment-list .segment-color").first.click()
    page.locator(".segment-color-picker .v-color-picker-swatches__color").nth(3).click()
    swatch = "getComputedStyle(document.querySelector('#segment-list .segment-color')).color"
    page.wait_for_function(f"{swatch} === 'rgb(111, 184, 210)'", timeout=TIMEOUT_MS)
    page.keyboard.press("Escape")
    recoloured = settled_pixels(page, box, shown, 1000)
    assert changed_pixels(recoloured, shown) > 1000
    (segment,), _ = read_segmentation(_download(page, "#export-seg", tmp_path / "s.seg.nrrd"))
    assert segment.name == "spleen"
    assert np.allclose(segment.color, np.array([0x6F, 0xB8, 0xD2]) / 255, atol=0.01)

    # Alt+N starts the next segment (Ctrl+N is the browser's); deleting it makes the
    # spleen current again, and deleting the spleen leaves a new empty segment.
    page.keyboard.press("Alt+n")
    page.wait_for_function("document.querySelectorAll('#segment-list .segment').length === 2")
    page.locator("#segment-list .segment-delete").nth(1).click()
    page.wait_for_function("document.querySelectorAll('#segment-list .segment').length === 1")
    active = page.locator("#segment-list .segment.v-list-item--active .segment-name")
    assert active.text_content().strip() == "spleen"
    page.locator("#segment-list .segment-delete").first.click()
    page.wait_for_function(
        "[...document.querySelectorAll('#segment-list .segment-name')]"
        ".map(e => e.textContent.trim()).join() === 'Segment_3'",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_function(READY, timeout=TIMEOUT_MS)
    cleared = settled_pixels(page, box, recoloured, 2000)
    assert changed_pixels(cleared, before) < 300  # the spleen's overlay and point are gone
    assert page.text_content("#error") == ""

    # A preset changes the window (the display node's, shown) and the rendered pixels.
    page.click("#preset-ct-lung")
    page.wait_for_function(
        "document.querySelector('#window-level-now').textContent.includes('W 1500 L -600')"
    )
    lung = settled_pixels(page, box, cleared, 2000)
    assert changed_pixels(lung, cleared) > 2000
    # Reset views fits the views to the volume (the page opened centred on the spleen).
    page.click("#reset-views")
    reset = settled_pixels(page, box, lung, 2000)
    assert changed_pixels(reset, lung) > 2000 and page.text_content("#error") == ""
