"""Images dropped on the page's views, and the progress strip over them, in a real browser.

``fastsam3d web`` as a user starts it (see ``test_web.py``); files are dropped as a user's drag
does it: a ``DataTransfer`` holding the files' bytes, dispatched as dragenter, dragover and drop
on the axial view. Bounded: two servers, a few drops of the small example data.
"""

from __future__ import annotations

import base64
import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_dicom_series import DICOM_DIR
from test_slicer_mrml import CT_IMAGE
from test_web import (
    CHANGED,
    IDLE_WITH,
    READY,
    TIMEOUT_MS,
    _axial_view_box,
    _click_and_wait,
    _open,
    _pixels,
    browser,  # noqa: F401 (a fixture)
    web_server,  # noqa: F401 (a fixture)
)

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is missing"),
    pytest.mark.skipif(not DICOM_DIR.is_dir(), reason=f"{DICOM_DIR} not found"),
]

# Nothing long runs (the page has opened what was dropped, or refused it).
NO_WORK = "!document.querySelector('#work-text')?.textContent.trim()"
# Each line the progress strip shows, kept in window.workLines (the strip is short-lived).
RECORD_WORK = """() => {
  window.workLines = [];
  const text = document.querySelector('#work-text');
  new MutationObserver(() => {
    const line = text.textContent.trim();
    if (line && window.workLines[window.workLines.length - 1] !== line) window.workLines.push(line);
  }).observe(text, {childList: true, characterData: true, subtree: true});
}"""
DROP = """(element, [files, events]) => {
  const transfer = new DataTransfer();
  for (const file of files) {
    const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], file.name));
  }
  for (const type of events) {
    const options = {dataTransfer: transfer, bubbles: true, cancelable: true};
    element.dispatchEvent(new DragEvent(type, options));
  }
}"""


def _drop(page, files: list[tuple[str, bytes]], events=("dragenter", "dragover", "drop")) -> None:
    """Drag ``files`` (name, bytes) onto the axial view and let go (or only ``events``)."""
    view = page.locator(".view-gutter").first.locator("xpath=..")
    encoded = [{"name": name, "data": base64.b64encode(data).decode()} for name, data in files]
    view.evaluate(DROP, [encoded, list(events)])


def _dropped(page, files: list[tuple[str, bytes]]) -> str:
    """Drop ``files`` and wait until the page has opened (or refused) them; the error line."""
    shown = page.evaluate("window.workLines.length")
    _drop(page, files)
    page.wait_for_function(f"window.workLines.length > {shown}", timeout=TIMEOUT_MS)
    page.wait_for_function(NO_WORK, timeout=TIMEOUT_MS)
    error = page.text_content("#error").strip()
    if not error:  # a new image: no points yet, the engine's session opened on it
        page.wait_for_function(f"{IDLE_WITH.format(0)} && {READY}", timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)  # the views' next images
    return error


def _zip(entries: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _announced_bomb() -> bytes:
    """A zip of a few bytes whose entry announces 4.2 GB (more than the page's 4 GB)."""
    data = bytearray(_zip({"slices.raw": b"\0" * 1000}))
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (4_200_000_000).to_bytes(4, "little")
    return bytes(data)


def _series_files() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in sorted(DICOM_DIR.iterdir())]


def _changed(before: np.ndarray, after: np.ndarray) -> int:
    return int((np.abs(after - before).max(axis=2) > CHANGED).sum())


def test_dropped_images_open_and_refused_zips_keep_the_image(web_server, browser):  # noqa: F811
    page = _open(browser, web_server)
    page.evaluate(RECORD_WORK)
    box = _axial_view_box(page)
    _drop(page, [(CT_IMAGE.name, b"")], events=("dragenter", "dragover"))
    page.wait_for_selector("#drop-hint", state="visible")  # the views say what to drop
    _drop(page, [], events=("dragleave",))
    page.wait_for_selector("#drop-hint", state="hidden")

    # The example CT: the views show it afresh, without the spleen's segment.
    _click_and_wait(page, box, clicks_after=1)
    page.wait_for_timeout(500)  # the view's next image
    spleen = _pixels(page, box)
    assert _dropped(page, [(CT_IMAGE.name, CT_IMAGE.read_bytes())]) == ""
    ct = _pixels(page, box)
    assert _changed(spleen, ct) > 2000
    lines = page.evaluate("window.workLines")
    name = CT_IMAGE.name
    assert lines[-3:] == ["Receiving the files...", f"Checking {name}...", f"Opening {name}..."]
    assert lines[-4].startswith(f"Sending {CT_IMAGE.name} (0.5 MB) to the server"), lines
    assert page.is_disabled("#export-dicom-seg")  # not a DICOM image

    # The DICOM series, as its files and as a zip: a DICOM image (its SEG can be saved).
    series = _series_files()
    assert _dropped(page, series) == ""
    assert _changed(ct, _pixels(page, box)) > 2000
    assert page.evaluate("window.workLines").count(f"Opening {len(series)} files...") == 1
    assert page.is_enabled("#export-dicom-seg")  # a DICOM series: its SEG can be downloaded
    assert _dropped(page, [(CT_IMAGE.name, CT_IMAGE.read_bytes())]) == ""
    assert page.is_disabled("#export-dicom-seg")
    assert _dropped(page, [("series.zip", _zip({f"ct/{n}": d for n, d in series}))]) == ""
    shown = _pixels(page, box)
    assert _changed(ct, shown) > 2000
    assert page.is_enabled("#export-dicom-seg")
    lines = page.evaluate("window.workLines")
    assert any(line.startswith("Unpacking series.zip") for line in lines), lines

    # Refused in one line: a zip-slip and a zip bomb; the series stays in the view (its upper
    # part: a long error line wraps the footer over the view's bottom).
    error = _dropped(page, [("slip.zip", _zip({"../../evil.nii.gz": CT_IMAGE.read_bytes()}))])
    assert error.startswith("slip.zip: its entry '../../evil.nii.gz' points outside"), error
    assert "\n" not in error and page.is_enabled("#export-dicom-seg")
    upper = dict(box, height=box["height"] * 0.8)
    shown = _pixels(page, upper)
    error = _dropped(page, [("bomb.zip", _announced_bomb())])
    assert error.startswith("bomb.zip: unpacks to more than 4 GB"), error
    assert "\n" not in error and page.is_enabled("#export-dicom-seg")
    assert _changed(shown, _pixels(page, upper)) < 300
    assert page.text_content("#status").startswith("Ready")


@pytest.fixture
def seeded_server(tmp_path: Path, start_web_page):
    """``fastsam3d web`` on the example CT with the seeded FastSAM3D on the CPU: its model
    loads and its first click encodes for a while, long enough to be seen."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from seeded import seeded_model

    weights = tmp_path / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, weights)
    return start_web_page(CT_IMAGE, "--model", "fastsam3d", "--weights", weights)


def test_the_first_encode_shows_progress_and_the_page_answers_meanwhile(seeded_server, browser):  # noqa: F811
    """The first click's encode (about 2 s on a 2-core CPU, in the page) shows in the strip, and
    a button pressed meanwhile is answered before the encode ends."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(seeded_server)
    page.wait_for_selector("#work-text", state="attached", timeout=TIMEOUT_MS)
    page.evaluate(RECORD_WORK)
    page.wait_for_function(READY, timeout=TIMEOUT_MS)  # the model loaded, the session opened
    page.wait_for_timeout(1000)  # the views' first images
    box = _axial_view_box(page)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    # While the encoder runs (on the engine's worker), the strip says so and the page answers.
    page.wait_for_function(
        "window.workLines.includes('Preparing: encoding the image around the point...')",
        timeout=TIMEOUT_MS,
    )
    page.click("#polarity")
    page.wait_for_function(
        "document.querySelector('#polarity').textContent.includes('Negative')", timeout=TIMEOUT_MS
    )
    still = page.text_content("#work-text").strip()
    assert still == "Preparing: encoding the image around the point...", still
    assert page.is_visible("#work-bar")
    page.wait_for_function(f"{NO_WORK} && {READY}", timeout=TIMEOUT_MS)
    assert page.text_content("#error").strip() == ""
