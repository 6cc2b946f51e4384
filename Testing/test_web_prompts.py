"""The drawn prompts on the browser page: box, scribble and lasso, in Debian's chromium.

The tools' bookkeeping runs first in-process (``test_web_page``'s page, no browser). Then one
server and one tab (as ``test_web.py`` starts them: the example CT, the oracle on the
spleen, the views centred on it) for all the prompts, each drawn with the mouse in the axial view
with its tool: the overlay changes where the drawing says, and Undo brings back the view before
it. The overlay is measured inside each drawing, away from its outline and label, so that the
markup's own lines do not count as a change: as the tinted pixels there (the CT is grey, the
segment's overlay coloured).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import test_web
import test_web_page
from test_web import CHANGED, TIMEOUT_MS, _axial_view_box, _open, _pixels
from test_web_page import settle

# The page tests' fixtures: a server as a user starts it, chromium, and the page in-process.
web_server, browser, page = test_web.web_server, test_web.browser, test_web_page.page
needs_chromium = pytest.mark.skipif(test_web.CHROMIUM is None, reason="no Debian chromium")

IDLE_DRAWN = (
    "/^\\s*idle · .*, {} drawn\\s*$/.test(document.querySelector('#progress')?.textContent || '')"
)
# A pixel is tinted when its channels differ by more than this (0-255): the grey CT's do not,
# beyond the image encoding's noise; the overlay's do.
TINTED = 20
# How many more (or fewer) tinted pixels a drawing's region must have once the overlay changed
# (the regions hold thousands of the spleen's or the lasso's pixels); and how many pixels may
# differ from the view before the drawing once undone.
OVERLAY_PIXELS = 1000
RESTORED_PIXELS = 150


def _tinted(pixels: np.ndarray, inner: tuple) -> int:
    """Tinted pixels in the view's ``inner`` region (x0, y0, x1, y1, view pixels)."""
    x0, y0, x1, y1 = inner
    region = pixels[y0:y1, x0:x1]
    return int((region.max(axis=2) - region.min(axis=2) > TINTED).sum())


def _changed(page, box: dict, reference: np.ndarray, inner: tuple) -> int:
    """Pixels of the view's ``inner`` region that differ from the same region of
    ``reference``."""
    x0, y0, x1, y1 = inner
    now = _pixels(page, box)
    return int((np.abs(now - reference).max(axis=2) > CHANGED)[y0:y1, x0:x1].sum())


def _tint_changed(page, box: dict, reference: np.ndarray, inner: tuple, sign: int) -> bool:
    """The overlay grew (``sign`` 1) or shrank (-1) in ``inner`` since ``reference``."""
    now = _tinted(_pixels(page, box), inner)
    return sign * (now - _tinted(reference, inner)) > OVERLAY_PIXELS


def _wait_until(page, predicate, what: str) -> None:
    """Poll the view until ``predicate()`` holds: the view's next streamed frame brings the
    change, and how long that takes depends on the machine."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not predicate():
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(250)


def _wait_for_image(page, box: dict) -> np.ndarray:
    """The axial view once its first image (the CT, not black) has arrived."""
    pixels = []

    def arrived() -> bool:
        pixels[:] = [_pixels(page, box)]
        return pixels[0].mean() > 20

    _wait_until(page, arrived, "the axial view stayed black")
    return pixels[0]


def _draw(page, box: dict, tool: str, offsets: list, finish: str | None) -> None:
    """With ``tool``, click at each (dx, dy) from the view's centre, then finish: "done" (the
    toolbar's button), "right" (a right click in the view) or None (a box ends by itself)."""
    page.click(f"#tool-{tool}")
    page.wait_for_timeout(300)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for dx, dy in offsets:
        page.mouse.move(cx + dx, cy + dy, steps=3)
        page.mouse.click(cx + dx, cy + dy)
        page.wait_for_timeout(200)  # each click its own event, not a double click
    if finish is not None:
        # The clicks reach the server in order but may lag behind (a busy machine), and the
        # Done button goes another way: wait until the drawing holds them all.
        done = "document.querySelector('#finish-drawing')?.textContent"
        page.wait_for_function(f"{done}.includes('({len(offsets)})')", timeout=TIMEOUT_MS)
    if finish == "done":
        page.click("#finish-drawing")
    elif finish == "right":
        page.mouse.click(cx, cy, button="right")
    page.mouse.move(box["x"] - 50, box["y"] + 10)  # no hover highlight in the screenshots


def _square(half: float) -> list:
    return [(-half, -half), (half, -half), (half, half), (-half, half)]


def _inner(box: dict, half: int) -> tuple:
    """The view's central square of half-side ``half`` pixels, as (x0, y0, x1, y1)."""
    cx, cy = int(box["width"] / 2), int(box["height"] / 2)
    return (cx - half, cy - half, cx + half, cy + half)


def _check_drawn_then_undone(
    page, box, before, drawn_after: int, inner: tuple, what: str, sign: int = 1
) -> None:
    """The overlay grew (or shrank) inside ``inner``; Undo restores ``before`` there."""
    page.wait_for_function(IDLE_DRAWN.format(drawn_after), timeout=TIMEOUT_MS)
    _wait_until(
        page,
        lambda: _tint_changed(page, box, before, inner, sign),
        f"{what}: the overlay did not change",
    )
    assert page.text_content("#error") == "", what
    page.click("#undo")
    page.wait_for_function(IDLE_DRAWN.format(drawn_after - 1), timeout=TIMEOUT_MS)
    _wait_until(
        page,
        lambda: _changed(page, box, before, inner) < RESTORED_PIXELS,
        f"{what}: undo did not restore the view",
    )


def test_a_tool_switch_drops_an_unfinished_drawing_and_done_with_nothing_adds_nothing(page):
    placement, logic, scene = page.placement, page.logic, page.slicer.scene
    placement.select_tool("box")
    box_node = placement.drawing
    assert box_node.GetClassName() == "vtkMRMLMarkupsROINode"
    assert logic.promptNodes() == [box_node]
    placement.select_tool("scribble")  # the box had no corner yet: it leaves the scene
    assert not scene.IsNodePresent(box_node)
    assert placement.drawing.GetClassName() == "vtkMRMLMarkupsCurveNode"
    placement.toggle_polarity()
    scribble = placement.drawing
    assert scribble.GetAttribute("FastSAM3D.PromptPositive") == "0"
    placement.finish_drawing()  # nothing drawn: the engine drops it, no error
    settle(page)
    placement.keep_placing()  # the next drawing of the tool starts
    assert placement.drawing is not None and placement.drawing is not scribble
    assert logic.promptNodes() == [placement.drawing]
    assert page.state.error == ""
    placement.toggle_moving()
    assert placement.drawing is None and logic.promptNodes() == []
    with pytest.raises(ValueError, match="unknown tool"):
        placement.select_tool("brush")


@needs_chromium
def test_box_scribble_and_lasso_change_the_overlay_and_undo_restores_it(web_server, browser):
    page = _open(browser, web_server)
    box = _axial_view_box(page)
    empty = _wait_for_image(page, box)
    # A box: two clicks, opposite corners around the spleen; it ends by itself.
    _draw(page, box, "box", [(-70, -70), (70, 70)], finish=None)
    _check_drawn_then_undone(page, box, empty, 1, _inner(box, 45), "box")
    # A scribble across the spleen, finished with the Done button; measured beside the stroke.
    _draw(page, box, "scribble", [(-25, 0), (0, 4), (25, 0)], finish="done")
    cx, cy = _inner(box, 0)[:2]
    _check_drawn_then_undone(page, box, empty, 1, (cx - 40, cy + 10, cx + 40, cy + 50), "scribble")
    # A lasso, finished with a right click; then a negative lasso inside it clears its inside.
    _draw(page, box, "lasso", _square(50), finish="right")
    page.wait_for_function(IDLE_DRAWN.format(1), timeout=TIMEOUT_MS)
    _wait_until(
        page,
        lambda: _tint_changed(page, box, empty, _inner(box, 40), 1),
        "lasso: the overlay did not change",
    )
    filled = _pixels(page, box)
    page.click("#polarity")
    _draw(page, box, "lasso", _square(30), finish="done")
    _check_drawn_then_undone(page, box, filled, 2, _inner(box, 22), "negative lasso", sign=-1)
    page.click("#undo")
    page.wait_for_function(IDLE_DRAWN.format(0), timeout=TIMEOUT_MS)
    _wait_until(
        page,
        lambda: _changed(page, box, empty, _inner(box, 40)) < RESTORED_PIXELS,
        "lasso: undo did not restore the view",
    )
