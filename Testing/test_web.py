"""``fastsam3d web`` in a real browser: Debian's chromium driven by Playwright, real mouse clicks.

The server runs as a user starts it (a subprocess on 127.0.0.1) with the example CT and the
oracle on TotalSegmentator's spleen label, its slice views centred on the spleen. Bounded: one
server per test, a few clicks.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import chromium_browser, free_port
from test_slicer_mrml import CT_IMAGE, CT_LABEL

from fastsam3d_core.examples import SPLEEN_LABEL, SPLEEN_POINT_RAS
from fastsam3d_core.io import read_segmentation, read_volume

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

READY = "(document.querySelector('#status')?.textContent || '').startsWith('Ready')"
IDLE_WITH = "(document.querySelector('#progress')?.textContent || '').includes('idle · {} points')"
TIMEOUT_MS = 120_000
CHANGED = 40  # a pixel changed if a channel moved by more than this (0-255)


@pytest.fixture
def web_server(request, start_web_page):
    """The URL of ``fastsam3d web`` (conftest's start_web_page: a free loopback port, its output
    in tmp_path/server.log) on the example CT with the oracle on the spleen, holding at most 2
    sessions; a ``web_args`` marker adds options."""
    marker = request.node.get_closest_marker("web_args")
    focus = ",".join(f"{v:.2f}" for v in SPLEEN_POINT_RAS)
    return start_web_page(CT_IMAGE, "--model", "oracle", "--truth", CT_LABEL,
                          "--truth-value", SPLEEN_LABEL, "--focus", focus,
                          "--sessions", "2", *(marker.args if marker else ()))  # fmt: skip


@pytest.fixture
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _open(browser, url: str):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(READY, timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the views' first images
    return page


def _axial_view_box(page) -> dict:
    """The axial view's box on the page: the layout's first view ("Axial Primary")."""
    box = page.locator(".view-gutter").first.locator("xpath=..").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, box
    return box


def _pixels(page, box: dict) -> np.ndarray:
    from io import BytesIO

    from matplotlib.image import imread

    png = page.screenshot(clip=box)
    return (imread(BytesIO(png), format="png")[..., :3] * 255).astype(int)


def _click_and_wait(page, box: dict, clicks_after: int, dx: float = 0.0) -> float:
    """Click in the axial view, ``dx`` pixels right of its centre; seconds until the overlay."""
    x, y = box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2
    start = time.perf_counter()
    page.mouse.click(x, y)
    page.wait_for_function(IDLE_WITH.format(clicks_after), timeout=TIMEOUT_MS)
    return time.perf_counter() - start


def _printed_address(log: Path) -> str:
    """The address ``fastsam3d web`` printed for users to open."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.startswith("fastsam3d web: http"):
                return line.split()[2]
        time.sleep(0.2)
    raise AssertionError(f"no address printed in {log}")


def _download(page, button: str, path: Path) -> Path:
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click(button)
    download.value.save_as(path)
    return path


def test_a_click_segments_the_spleen_and_undo_removes_it(web_server, browser, tmp_path):
    url = web_server
    page = _open(browser, url)
    box = _axial_view_box(page)
    before = _pixels(page, box)
    seconds = _click_and_wait(page, box, clicks_after=1)
    page.wait_for_timeout(500)  # the view's next image
    after = _pixels(page, box)
    changed = int((np.abs(after - before).max(axis=2) > CHANGED).sum())
    # The spleen's overlay covers thousands of the view's pixels; the point alone, ~200.
    assert changed > 2000, changed
    assert page.text_content("#error") == ""
    (segment,), geometry = read_segmentation(
        _download(page, "#export-seg", tmp_path / "spleen.seg.nrrd")
    )
    truth = read_volume(CT_LABEL).array == SPLEEN_LABEL
    mask = segment.mask.astype(bool)
    assert mask.shape == truth.shape
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice >= 0.95, dice
    page.click("#undo")
    page.wait_for_function(IDLE_WITH.format(0), timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    undone = _pixels(page, box)
    assert int((np.abs(undone - before).max(axis=2) > CHANGED).sum()) < 300
    print(f"\nfirst click (encoder) to overlay {seconds * 1000:.0f} ms")


def test_shift_click_places_a_negative_point_and_points_move_and_delete(web_server, browser):
    page = _open(browser, web_server)
    box = _axial_view_box(page)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)  # a new crop: the next click waits in the queue meanwhile
    page.keyboard.down("Shift")
    _click_and_wait(page, box, clicks_after=2, dx=40.0)
    page.keyboard.up("Shift")
    assert "2 points, 1 negative" in page.text_content("#progress")
    points = page.locator("#points .point")
    assert points.count() == 2
    first = points.nth(0).text_content()
    # "Moving points": drag the first point; the list shows its new position.
    page.click("#mode")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 15, y + 15, steps=5)
    page.mouse.up()
    moved = f"document.querySelector('#points .point')?.textContent !== {first!r}"
    page.wait_for_function(moved, timeout=TIMEOUT_MS)
    page.wait_for_function(IDLE_WITH.format(2), timeout=TIMEOUT_MS)
    # The negative point's delete button, then the moved point with the Delete key.
    points.nth(1).locator(".delete-point").click()
    page.wait_for_function(IDLE_WITH.format(1), timeout=TIMEOUT_MS)
    assert "1 points, 0 negative" in page.text_content("#progress")
    page.mouse.click(x + 15, y + 15)  # the view takes the keys again (the list had them)
    page.wait_for_timeout(300)
    page.keyboard.press("Delete")
    page.wait_for_function(IDLE_WITH.format(0), timeout=TIMEOUT_MS)
    assert page.text_content("#error") == ""


def test_two_tabs_have_sessions_of_their_own(web_server, browser):
    url = web_server
    first, second = _open(browser, url), _open(browser, url)
    assert first.url != second.url  # each redirected to its own session process
    box = _axial_view_box(second)
    before = _pixels(second, box)
    _click_and_wait(first, _axial_view_box(first), clicks_after=1)
    second.wait_for_timeout(1000)
    assert "0 points" in second.text_content("#progress")
    assert int((np.abs(_pixels(second, box) - before).max(axis=2) > CHANGED).sum()) < 50


@pytest.mark.web_args("--sessions", "1")
def test_a_tab_beyond_the_bound_gets_a_clear_page(web_server, browser):
    url = web_server
    _open(browser, url)
    page = browser.new_context().new_page()
    response = page.goto(url)
    assert response.status == 503
    assert "All 1 sessions of this server are in use" in page.text_content("body")


@pytest.mark.web_args("--require-token")
def test_with_a_token_required_only_the_printed_address_opens_a_session(
    web_server, browser, tmp_path
):
    url = web_server
    printed = _printed_address(tmp_path / "server.log")
    assert printed.startswith(url + "?token=") and len(printed) > len(url) + 20
    stranger = browser.new_context().new_page()
    response = stranger.goto(url)
    assert response.status == 401 and "needs its token" in stranger.text_content("body")
    page = _open(browser, printed)
    assert "token" not in page.url and "session=" not in page.url  # both became cookies
    _click_and_wait(page, _axial_view_box(page), clicks_after=1)
    # The session's own port, without the tab's cookie: refused, and its owner goes on.
    response = stranger.goto(page.url)
    assert response.status == 401 and "belongs to another tab" in stranger.text_content("body")
    _click_and_wait(page, _axial_view_box(page), clicks_after=2, dx=4.0)


@pytest.mark.web_args("--sessions", "1", "--idle-minutes", "0.25")
def test_an_unused_session_warns_then_closes_and_frees_its_place(web_server, browser):
    url = web_server
    page = _open(browser, url)
    warned = "getComputedStyle(document.querySelector('#closing')).display !== 'none'"
    page.wait_for_function(warned, timeout=TIMEOUT_MS)
    closed = "(document.querySelector('#error')?.textContent || '').includes('closed after')"
    page.wait_for_function(closed, timeout=TIMEOUT_MS)
    assert url in page.text_content("#error")  # where to get a new session
    # The bound was 1 session: once the closed one has exited, a new tab gets one.
    deadline = time.monotonic() + 60
    while (status := page.goto(url).status) == 503 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 200
    page.wait_for_function(READY, timeout=TIMEOUT_MS)


def test_a_malformed_upload_is_refused_and_the_session_goes_on(web_server, browser):
    page = _open(browser, web_server)
    broken = {"name": "broken.nii.gz", "mimeType": "application/gzip", "buffer": b"not an image"}
    page.set_input_files("#upload", files=[broken])
    has_error = "(document.querySelector('#error')?.textContent || '').includes('broken.nii.gz')"
    page.wait_for_function(has_error, timeout=TIMEOUT_MS)
    assert "not an image this page can open" in page.text_content("#error")
    _click_and_wait(page, _axial_view_box(page), clicks_after=1)  # the open image still works
    assert page.text_content("#status").startswith("Ready: last click")


def test_uncertainty_overlays_the_views_and_the_selector_lists_a_new_segment(web_server, browser):
    page = _open(browser, web_server)
    box = _axial_view_box(page)
    _click_and_wait(page, box, clicks_after=1)
    page.wait_for_timeout(500)
    segmented = _pixels(page, box)
    page.click("#uncertainty")
    page.wait_for_function(READY, timeout=TIMEOUT_MS)
    # The entropy overlay: coloured where the oracle's self-ensemble disagrees (the border). The
    # view's next streamed frame brings it: poll rather than guess how long that takes.
    deadline, changed = time.monotonic() + TIMEOUT_MS / 1000, 0
    while changed <= 100 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        changed = int((np.abs(_pixels(page, box) - segmented).max(axis=2) > CHANGED).sum())
    assert changed > 100
    page.click("#next-segment")
    # The segment selector follows: the new segment is the current one, and both are listed.
    current = "document.querySelector('#segments')?.value === 'Segment_2'"
    page.wait_for_function(current, timeout=TIMEOUT_MS)
    page.click("#segments", force=True)
    page.wait_for_timeout(500)
    assert page.locator(".v-overlay .v-list-item").count() == 2


def test_a_bad_image_is_refused_in_one_line(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("fastsam3d")), "web", str(broken), "--model",
         "oracle", "--truth", str(CT_LABEL), "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, env={**os.environ, "FASTSAM3D_DEBUG": ""},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.nii.gz" in lines[0]


@pytest.mark.slow
def test_click_to_overlay_latency_in_the_browser(web_server, browser):
    """Decoder-only clicks inside the spleen's crop, timed from the mouse click to the idle
    status after the overlay was written; printed for the benchmark notes."""
    url = web_server
    start = time.perf_counter()
    page = _open(browser, url)  # a session process of its own, the image, the first views
    startup_s = time.perf_counter() - start
    box = _axial_view_box(page)
    new_crop = _click_and_wait(page, box, clicks_after=1)
    inside = [
        _click_and_wait(page, box, clicks_after=n + 2, dx=4.0 * ((n % 5) - 2)) for n in range(20)
    ]
    print(
        f"\nbrowser: page start-up {startup_s:.1f} s, new crop {new_crop * 1000:.0f} ms, "
        f"decoder-only median {statistics.median(inside) * 1000:.0f} ms over {len(inside)} clicks"
    )
    assert page.text_content("#error") == ""
