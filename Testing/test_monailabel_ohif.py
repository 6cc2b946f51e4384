"""OHIF as MONAI Label 0.8.5 bundles it, in Chromium: FastSAM3D from its MONAI Label panel.

Orthanc holds the shared CT; MONAI Label runs the app with the seeded FastSAM3D on the CPU
(``fastsam3d monailabel``); Debian's chromium, driven by Playwright, opens OHIF at
``{server}/ohif/monai-label?StudyInstanceUIDs=…`` and does what a user does: types the server's
address into the MONAI Label panel and connects (the panel's default is port 8000 of the page's
host, and it connects only when asked), opens *Point Prompts*, picks ``fastsam3d`` and a label,
clicks in the axial view (the ProbeMONAILabel tool) and presses *Run*. The overlay must change the
view around the click, MONAI Label's log must show the request, and the voxel OHIF sent must be
the clicked point on the grid of the label the server returned (OHIF copies that label's voxels
into its own volume as they come, so both must share one grid).

The series goes to Orthanc decompressed (same UIDs): OHIF reads frames through MONAI Label's
DICOMweb proxy, which forwards no ``Accept`` header, so Orthanc is asked to transcode, and without
its GDCM plugin it cannot transcode JPEG 2000 (HTTP 500, an empty view).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA_DIR, chromium_browser, free_port
from monailabel_server import MonaiLabelServer, running_monailabel

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
PACS_DIR = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
    pytest.mark.skipif(not PACS_DIR.is_dir(), reason=f"{PACS_DIR} not found"),
]

MODEL = "fastsam3d"
LABEL = "liver"
WAIT_MS = 60_000  # one step of the page (loading, connecting, a render)
INFER_MS = 180_000  # the first request retrieves and converts the series, then runs the encoder
CHANGED = 40  # a pixel changed if a channel moved by more than this (0-255)
MIN_CHANGED_FRACTION = 0.005  # of the axial view's pixels (the overlay covered ~3 % here)
#: Where the click goes in the axial view, as fractions of its width and height: in the body.
CLICK_AT = (0.35, 0.5)
#: Slices scrolled (mouse wheel) before the click, so that a grid flipped along k would show.
#: (OHIF's corner text "I: N (s/20)" is no guide to the slice: in this build it names the
#: instance mirrored along the series; the grid and the click are read from cornerstone.)
SCROLL_SLICES = 5
AXIAL = "[data-viewport-uid=mpr-axial]"
# True once the axial view has its image data and every image volume has all its slices.
VOLUME_LOADED = """() => {
  const core = window.cornerstone;
  const engine = core && core.getRenderingEngine('OHIFCornerstoneRenderingEngine');
  const viewport = engine && engine.getViewport('mpr-axial');
  if (!viewport || !viewport.getImageData()) return false;
  const volumes = core.cache.getVolumes().filter(volume => volume.loadStatus);
  return volumes.length > 0 && volumes.every(volume => volume.loadStatus.loaded);
}"""
# OHIF's volume grid in the axial view and the ProbeMONAILabel points in world (LPS) mm.
OHIF_GRID_AND_POINTS = """() => {
  const engine = window.cornerstone.getRenderingEngine('OHIFCornerstoneRenderingEngine');
  const data = engine.getViewport('mpr-axial').getImageData();
  const probes = window.cornerstoneTools.annotation.state.getAllAnnotations()
    .filter(annotation => annotation.metadata.toolName === 'ProbeMONAILabel');
  return {dimensions: Array.from(data.dimensions), origin: Array.from(data.origin),
          spacing: Array.from(data.spacing), direction: Array.from(data.direction),
          points: probes.map(probe => Array.from(probe.data.handles.points[0]))};
}"""


@dataclass
class OhifRun:
    """What one pass through OHIF saw: the models its Point Prompts tab offered, the axial view
    before and after the overlay (RGB arrays and their PNGs), the click in the view's pixels,
    the ``params`` OHIF sent, the label file the server returned, and OHIF's grid and points."""

    models: list[str]
    before: np.ndarray
    after: np.ndarray
    before_png: Path
    after_png: Path
    click: tuple[float, float]
    params: dict
    label_file: Path
    ohif: dict
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def uncompressed_series(tmp_path_factory) -> Path:
    """The shared series, decompressed to Explicit VR Little Endian, same UIDs."""
    import pydicom

    folder = tmp_path_factory.mktemp("series")
    for path in sorted(PACS_DIR.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.decompress()
        dataset.save_as(folder / path.name, enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def study_uid(uncompressed_series: Path) -> str:
    import pydicom

    first = next(iter(sorted(uncompressed_series.iterdir())))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def monailabel(orthanc, uncompressed_series, seeded_checkpoint, tmp_path_factory):
    assert len(orthanc.upload(uncompressed_series)) == 20
    arguments = ["--weights", str(seeded_checkpoint), "--device", "cpu"]
    folder = tmp_path_factory.mktemp("monailabel")
    with running_monailabel(folder, orthanc.dicomweb, arguments, free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _pixels(page, box: dict) -> np.ndarray:
    from matplotlib.image import imread

    png = page.screenshot(clip=box)
    return (imread(BytesIO(png), format="png")[..., :3] * 255).astype(int)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(after - before).max(axis=-1) > CHANGED


def _open_study(page, server: MonaiLabelServer, study_uid: str) -> None:
    """Open the study in OHIF's MONAI Label mode; return once the axial view shows it whole."""
    page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}", timeout=WAIT_MS)
    page.wait_for_selector(AXIAL, timeout=WAIT_MS)
    page.wait_for_function(VOLUME_LOADED, timeout=WAIT_MS)
    banner = page.get_by_role("button", name="Confirm and Hide")  # OHIF's first-visit notice
    if banner.count():
        banner.click(timeout=WAIT_MS)


def _connect(page, server: MonaiLabelServer) -> list[str]:
    """Connect the MONAI Label panel to ``server``, open Point Prompts, choose the model and the
    label; the models that tab offers."""
    page.fill("#monailabelServerURL", server.url + "/", timeout=WAIT_MS)
    page.locator("#monailabelServerURL").locator("xpath=ancestor::tr[1]").locator("button").click()
    page.get_by_text("Point Prompts", exact=True).click(timeout=WAIT_MS)  # activates the probe
    tab = page.locator(".tab", has=page.locator("input[value=pointprompts]"))
    select = tab.locator("select")
    models = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    if MODEL in models:
        select.select_option(MODEL)
        tab.locator("tr.clickable-row", has_text=LABEL).first.click(timeout=WAIT_MS)
    return models


def _click_in_axial(page, box: dict) -> tuple[float, float]:
    """Scroll the axial view off its middle slice and click in the body: the click's pixel in
    the view."""
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)
    for _ in range(SCROLL_SLICES):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(150)
    click = (box["width"] * CLICK_AT[0], box["height"] * CLICK_AT[1])
    page.mouse.click(box["x"] + click[0], box["y"] + click[1])
    page.wait_for_timeout(500)  # the probe's marker
    return click


def _run_and_wait_for_overlay(page, tab, box: dict, before: np.ndarray):
    """Press Run; the infer request's params, the label bytes, and the view once it changed."""
    run = tab.get_by_role("button", name="Run")
    with page.expect_console_message(
        lambda message: "updated the segmentation's scalar data" in message.text, timeout=INFER_MS
    ):
        with page.expect_response(lambda r: f"/infer/{MODEL}" in r.url, timeout=INFER_MS) as answer:
            run.click()
    response = answer.value
    assert response.status == 200, f"/infer/{MODEL} answered {response.status}: {response.text()}"
    found = re.search(r'name="params"\r\n\r\n(.*?)\r\n--', response.request.post_data or "", re.S)
    assert found, f"no params field in OHIF's request: {response.request.post_data!r}"
    deadline = time.monotonic() + WAIT_MS / 1000
    after = _pixels(page, box)
    while _changed(before, after).mean() < MIN_CHANGED_FRACTION and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        after = _pixels(page, box)
    page.wait_for_timeout(500)  # let the render settle, then the view as it stays
    return json.loads(found.group(1)), response.body(), _pixels(page, box)


@pytest.fixture(scope="module")
def ohif_run(browser, monailabel: MonaiLabelServer, study_uid: str, tmp_path_factory) -> OhifRun:
    """One user's pass: open the study, connect, choose fastsam3d and the label, click, Run."""
    from matplotlib.image import imsave

    folder = tmp_path_factory.mktemp("ohif")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    seconds, start = {}, time.perf_counter()
    try:
        _open_study(page, monailabel, study_uid)
        seconds["study shown"] = time.perf_counter() - start
        models = _connect(page, monailabel)
        assert MODEL in models, f"the Point Prompts tab offers {models}, not {MODEL}"
        seconds["connected"] = time.perf_counter() - start
        box = page.locator(AXIAL).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, box
        click = _click_in_axial(page, box)
        tab = page.locator(".tab", has=page.locator("input[value=pointprompts]"))
        tab.get_by_role("button", name="Run").hover()  # the pointer off the view
        page.wait_for_timeout(300)
        before = _pixels(page, box)
        imsave(folder / "before.png", before.astype(np.uint8))
        run_start = time.perf_counter()
        params, label, after = _run_and_wait_for_overlay(page, tab, box, before)
        seconds["run to overlay"] = time.perf_counter() - run_start
        imsave(folder / "after.png", after.astype(np.uint8))
        (folder / "label.nrrd").write_bytes(label)
        ohif = page.evaluate(OHIF_GRID_AND_POINTS)
    except Exception as error:
        page.screenshot(path=folder / "failed.png")
        raise AssertionError(f"{error}\nthe page then: {folder / 'failed.png'}") from error
    finally:
        context.close()
    print(f"OHIF timings (s): {', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}")
    return OhifRun(models, before, after, folder / "before.png", folder / "after.png", click,
                   params, folder / "label.nrrd", ohif, seconds)  # fmt: skip


def test_ohif_lists_fastsam3d_and_a_click_shows_its_overlay(
    ohif_run: OhifRun, monailabel: MonaiLabelServer
) -> None:
    assert MODEL in ohif_run.models, f"Point Prompts offered {ohif_run.models}"
    changed = _changed(ohif_run.before, ohif_run.after)
    assert changed.mean() > MIN_CHANGED_FRACTION, (
        f"the axial view barely changed ({changed.mean():.2%} of its pixels): "
        f"{ohif_run.before_png} and {ohif_run.after_png}"
    )
    rows, columns = np.nonzero(changed)
    x, y = ohif_run.click
    assert columns.min() <= x <= columns.max() and rows.min() <= y <= rows.max(), (
        f"the overlay (pixels {columns.min()}-{columns.max()} x {rows.min()}-{rows.max()}) is "
        f"not around the click ({x:.0f}, {y:.0f}): {ohif_run.before_png}, {ohif_run.after_png}"
    )
    foreground = ohif_run.params.get("foreground")
    assert foreground and len(foreground) == 1 and ohif_run.params.get("background") == []
    log = monailabel.log.read_text(errors="replace")
    requests = [line for line in log.splitlines()
                if "Infer Request" in line and f"'model': '{MODEL}'" in line]  # fmt: skip
    assert requests, f"no infer request for {MODEL} in {monailabel.log}:\n{monailabel.tail()}"
    assert f"'foreground': {foreground}" in requests[-1], requests[-1]


def test_ohif_sends_the_clicked_voxel_on_the_grid_of_the_label_it_gets(ohif_run: OhifRun) -> None:
    """OHIF's volume and the server's label share one grid, and the voxel sent is the click's."""
    import nrrd

    label, header = nrrd.read(str(ohif_run.label_file))
    assert label.any(), "the label came back empty"
    grid = ohif_run.ohif
    assert list(header["sizes"]) == grid["dimensions"]
    np.testing.assert_allclose(header["space origin"], grid["origin"], atol=1e-3)
    ohif_axes = np.array(grid["direction"]).reshape(3, 3) * np.array(grid["spacing"])[:, None]
    np.testing.assert_allclose(header["space directions"], ohif_axes, atol=1e-4)
    assert header["space"] == "left-posterior-superior"  # cornerstone's world is LPS too
    assert len(grid["points"]) == 1, grid["points"]
    world = np.array(grid["points"][0]) - np.array(header["space origin"])
    index = np.linalg.solve(np.array(header["space directions"]).T, world)
    assert ohif_run.params["foreground"] == [[int(v) for v in np.round(index)]], index
    k = ohif_run.params["foreground"][0][2]
    assert k != (label.shape[2] - 1) // 2, "the click should be off the middle slice"
