"""The page's DICOMweb side against a real Orthanc: a series opened from the PACS, its DICOM SEG
downloaded and saved back (STOW-RS).

One Orthanc for the module (the ``orthanc`` fixture) holds the shared PACS series. The series has
no labels, so the oracle answers with a ball around the volume's centre (written on the series'
own grid), where a click in the middle of the axial view lands. First in-process (the page's
actions as the browser's messages call them), then in Debian's chromium with the page started as
a user starts it (``fastsam3d web --dicomweb URL``): filter by patient ID, open the series, click,
Save to PACS, and the SEG is in Orthanc (QIDO-RS, Modality SEG) in the same study, referencing
the series, with the clicked voxels; Download DICOM SEG gives the same segment. The SEG's voxels
are compared with the page's own .seg.nrrd export. A series the page refuses (a missing slice,
more bytes than $FASTSAM3D_WEB_MAX_IMAGE_GB) is one line naming the server and the series, with
no folder left; the requests' thread is driven under asyncio as the page's event loop runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA_DIR, free_port, interrupt, wait_for_port

from fastsam3d_core.io import read_segmentation, read_volume, write_labelmap
from fastsam3d_core.session import OraclePredictor

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
dicom_seg = pytest.importorskip("fastsam3d_core.io.dicom_seg", reason="needs highdicom")
from fastsam3d_core.io.dicom_source import dicom_series_of  # noqa: E402
from fastsam3d_core.io.dicomweb import DicomwebAuth, open_client  # noqa: E402

PACS_DIR = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_dicom_pacs"
PATIENT = "FASTSAM3D-EXAMPLE"
pytestmark = pytest.mark.skipif(not PACS_DIR.is_dir(), reason=f"{PACS_DIR} not found")
BALL_MM = 30.0
TIMEOUT_S = 120
TIMEOUT_MS = TIMEOUT_S * 1000
# Credentials the page is given (Orthanc here checks none): they must never reach the browser.
SECRET = "pacs-secret-never-shown"
_servers = itertools.count()


@pytest.fixture(scope="module")
def pacs(orthanc, tmp_path_factory):
    """The shared series in Orthanc, its grid, and the oracle's truth beside it:
    (series URL, volume, series, truth labelmap path)."""
    assert len(orthanc.upload(PACS_DIR)) == 20
    volume = read_volume(PACS_DIR)
    series = dicom_series_of(PACS_DIR, volume)
    centre = (np.array(volume.shape) - 1) / 2
    spacing = np.linalg.norm(volume.ijk_to_ras[:3, :3], axis=0)
    offsets = [(axis - c) * s for axis, c, s in zip(np.indices(volume.shape), centre, spacing)]
    ball = (sum(o**2 for o in offsets) <= BALL_MM**2).astype(np.uint8)
    truth = tmp_path_factory.mktemp("truth") / "ball.nii.gz"
    write_labelmap(truth, ball, volume)
    url = f"{orthanc.dicomweb}/studies/{series.study_uid}/series/{series.series_uid}"
    return url, volume, series, truth


def stored_segs(orthanc, series) -> list[pydicom.Dataset]:
    """The SEG instances Orthanc holds in the series' study (QIDO-RS, then WADO-RS)."""
    client = open_client(orthanc.dicomweb, DicomwebAuth())
    found = client.search_for_series(series.study_uid, search_filters={"Modality": "SEG"})
    uids = [item["0020000E"]["Value"][0] for item in found]
    return [d for uid in uids for d in client.retrieve_series(series.study_uid, uid)]


def seg_voxels(dataset: pydicom.Dataset, folder: Path, volume, series) -> np.ndarray:
    """The SEG's one segment on the series' grid, read back by the core."""
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path)
    (segment,) = dicom_seg.read_dicom_seg(path, volume, series)
    return segment.mask


def seg_nrrd_voxels(path: Path, volume) -> np.ndarray:
    """The one segment of a .seg.nrrd (which holds the segments' extent only) on ``volume``'s
    grid."""
    (segment,), grid = read_segmentation(path)
    offset = np.round(volume.ras_to_index(grid.ijk_to_ras[:3, 3])).astype(int)
    full = np.zeros(volume.shape, bool)
    full[tuple(slice(o, o + n) for o, n in zip(offset, grid.shape))] = segment.mask
    return full


def the_pages_own_export(page, volume, folder: Path) -> np.ndarray:
    """The segment as the page's Export .seg.nrrd writes it, on the volume's grid; checked not
    to be trivially small, so that equal SEG voxels mean something."""
    written = page.logic.exportSegmentation(str(folder / "page.seg.nrrd"))
    mask = seg_nrrd_voxels(Path(written), volume)
    assert mask.sum() > 1000
    return mask


# -- in-process: the page's actions as the browser calls them -------------------------------


@pytest.fixture
def page(pacs, orthanc):
    from trame.app import get_server

    from fastsam3d_web.app import SegmentationPage
    from fastsam3d_web.pacs import DicomwebAccess

    server = get_server(f"test-dicomweb-{next(_servers)}", client_type="vue3")
    access = DicomwebAccess(orthanc.dicomweb, DicomwebAuth(user="reader", password=SECRET))
    page = SegmentationPage(server, None, OraclePredictor(read_volume(pacs[3])), dicomweb=access)
    yield page
    page.logic.cleanup()


vtk = pytest.importorskip("vtk")


def settle(page) -> None:
    assert page.logic.waitForIdle(TIMEOUT_S)
    page.logic.processEvents(0)


def test_the_page_opens_the_series_from_the_pacs_and_saves_its_seg_there(
    page, pacs, orthanc, tmp_path: Path
):
    url, volume, series, _ = pacs
    state = page.state
    assert page.volume is None and not state.dicom_source and not state.pacs_target
    page.guarded(lambda: page.pacs.save())
    assert "did not come from a DICOMweb server" in state.error
    page.pacs.search("SOMEONE-ELSE", "")
    assert state.pacs_series == [] and state.pacs_found == "0 series"
    page.pacs.search(PATIENT, "20221208")
    assert [row["url"] for row in state.pacs_series] == [url], state.pacs_series
    row = state.pacs_series[0]
    assert (row["patient_id"], row["modality"], row["instances"]) == (PATIENT, "CT", 20)
    # Only a series the page listed opens: a URL from the browser fetches nothing else.
    page.guarded(lambda: page.pacs.open_series(url.replace(series.series_uid, "1.2.3")))
    assert "not in the list" in state.error
    page.pacs.open_series(url)
    settle(page)
    assert state.error == "" and page.volume is not None
    assert state.dicom_source and state.pacs_target == orthanc.dicomweb
    assert page.logic.dicomSource.series_uid == series.series_uid
    before = len(stored_segs(orthanc, series))
    centre = volume.index_to_ras((np.array(volume.shape) - 1) / 2)
    page.logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in centre]))
    settle(page)
    page.pacs.save()
    assert state.error == "" and state.status.startswith("Saved to PACS"), state.status
    assert "FastSAM3D segmentation" in state.status
    segs = stored_segs(orthanc, series)
    assert len(segs) == before + 1
    assert segs[-1].ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    mask = seg_voxels(segs[-1], tmp_path, volume, series)
    assert np.array_equal(mask, the_pages_own_export(page, volume, tmp_path))
    # Download DICOM SEG: the same voxels, the SEG built on a thread of the event loop.
    downloaded = tmp_path / "downloaded.dcm"
    downloaded.write_bytes(asyncio.run(page.pacs.seg_bytes()))
    (segment,) = dicom_seg.read_dicom_seg(downloaded, volume, series)
    assert np.array_equal(segment.mask, mask)
    # The credentials never reach the browser's state.
    assert SECRET not in json.dumps(state.to_dict(), default=str)
    # Another image (an upload that is not DICOM): no SEG, and the download's files are gone.
    downloaded = list(Path(page.work_folder).glob("dicomweb-*"))
    assert downloaded
    nifti = tmp_path / "ct.nii.gz"
    write_labelmap(nifti, volume.array.astype(np.int16), volume)
    page.upload([{"name": "ct.nii.gz", "content": nifti.read_bytes(), "size": 1, "type": ""}])
    settle(page)
    assert state.error == "" and not state.dicom_source and not state.pacs_target
    assert not any(folder.exists() for folder in downloaded)
    assert asyncio.run(page.pacs.download_seg()) is None
    assert "did not come from DICOM" in state.error


def test_an_image_that_is_a_series_url_opens_once_the_server_is_ready(pacs, orthanc):
    from trame.app import get_server

    from fastsam3d_web.app import SegmentationPage
    from fastsam3d_web.pacs import DicomwebAccess

    url, _, series, truth = pacs
    missing = url.replace(series.series_uid, "1.2.3.4")
    for image, opened in ((missing, False), (url, True)):
        server = get_server(f"test-dicomweb-{next(_servers)}", client_type="vue3")
        access = DicomwebAccess(None, DicomwebAuth())  # no list: only IMAGE's server
        page = SegmentationPage(server, image, OraclePredictor(read_volume(truth)), dicomweb=access)
        try:
            assert page.volume is None  # not before the server is ready
            page.pacs.start(image)  # what the server's readiness runs
            settle(page)
            state = page.state
            assert (page.volume is not None) == opened and not state.pacs_server
            if opened:
                assert state.error == "" and state.pacs_target == orthanc.dicomweb
                assert page.logic.dicomSource.series_uid == series.series_uid
            else:  # one line on the page, which stays open, empty
                assert "no such series" in state.error and "\n" not in state.error
                assert not list(Path(page.work_folder).glob("dicomweb-*"))
        finally:
            page.logic.cleanup()


def test_a_dicom_folder_as_image_and_uploaded_dicom_files_give_a_seg(pacs, tmp_path: Path):
    from trame.app import get_server

    from fastsam3d_web.app import SegmentationPage

    _, volume, series, truth = pacs
    server = get_server(f"test-dicomweb-{next(_servers)}", client_type="vue3")
    page = SegmentationPage(server, PACS_DIR, OraclePredictor(read_volume(truth)))
    try:
        settle(page)
        state = page.state
        assert state.dicom_source and not state.pacs_target  # a SEG, but no PACS to save to
        assert page.logic.dicomSource.files[0].parent == PACS_DIR
        centre = volume.index_to_ras((np.array(volume.shape) - 1) / 2)
        page.logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*map(float, centre)))
        settle(page)
        # (The download itself, an attachment, needs a running server: the browser test's.)
        written = page.logic.exportSegmentation(str(tmp_path / "from-folder.dcm"))
        from_folder = dicom_seg.read_dicom_seg(written, volume, series)[0].mask
        assert np.array_equal(from_folder, the_pages_own_export(page, volume, tmp_path))
        page.guarded(page.pacs.save)
        assert "did not come from a DICOMweb server" in state.error
        # The same series uploaded: its files stay (for the SEG) while it is the image.
        page.upload([{"name": path.name, "content": path.read_bytes(), "size": 1, "type": ""}
                     for path in sorted(PACS_DIR.iterdir())])  # fmt: skip
        settle(page)
        assert state.error == "" and state.dicom_source
        kept = page.logic.dicomSource.files[0].parent
        assert kept.parent == Path(page.work_folder) and len(list(kept.iterdir())) == 20
        page.logic.positiveNode.AddControlPointWorld(vtk.vtkVector3d(*map(float, centre)))
        settle(page)
        written = page.logic.exportSegmentation(str(tmp_path / "uploaded.dcm"))
        uploaded = dicom_seg.read_dicom_seg(written, volume, series)[0].mask
        assert np.array_equal(uploaded, from_folder)
    finally:
        page.logic.cleanup()


@pytest.fixture(scope="module")
def gap_series(orthanc, tmp_path_factory):
    """The shared series less its middle slice, as another patient's series in Orthanc:
    (its folder, its series UID)."""
    from test_dicomweb import renamed_copy

    folder = renamed_copy(PACS_DIR, tmp_path_factory.mktemp("gap") / "gap", "FASTSAM3D-GAP", 10)
    orthanc.upload(folder)
    return folder, pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID


def test_a_series_the_page_refuses_is_one_line_naming_the_server_and_the_series(
    page, pacs, orthanc, gap_series
):
    """On a thread of the event loop, as the page runs it: while the download runs the server
    refuses another request, whatever the browser writes into pacs_busy; the gap is said in one
    line naming the server and the series, and the download's folder is gone. A good series
    then opens the same way."""
    _, series_uid = gap_series
    state = page.state
    page.pacs.search("FASTSAM3D-GAP", "")
    (row,) = state.pacs_series

    async def opening() -> None:
        page.pacs.open_series(row["url"])
        assert page.pacs.busy and state.pacs_busy and page.pacs.task is not None
        state.pacs_busy = False  # as the browser may write it
        page.guarded(lambda: page.pacs.search())
        assert "still busy" in state.error
        page.guarded(lambda: page.pacs.open_series(row["url"]))
        assert "still busy" in state.error
        await page.pacs.task

    asyncio.run(opening())
    assert not page.pacs.busy and not state.pacs_busy and page.volume is None
    expected = f"DICOMweb server {orthanc.dicomweb}, series {series_uid}: DICOM slices unevenly"
    assert state.error.startswith(expected), state.error
    assert "found 4 mm" in state.error and "\n" not in state.error
    assert "re-export" not in state.error and page.work_folder not in state.error
    assert not list(Path(page.work_folder).iterdir())
    page.pacs.search(PATIENT, "")

    async def opening_the_good_one() -> None:
        page.pacs.open_series(pacs[0])
        await page.pacs.task

    asyncio.run(opening_the_good_one())
    settle(page)
    assert state.error == "" and page.volume is not None and not page.pacs.busy
    assert page.logic.dicomSource.series_uid == pacs[2].series_uid and state.pacs_target


def test_uploaded_files_whose_series_makes_no_seg_say_so_on_the_page(page, gap_series):
    """The scene opens the gap series' files, the core does not: the image is shown, without a
    DICOM SEG, and the page says why in one line (not only the log)."""
    folder, _ = gap_series
    page.upload([{"name": path.name, "content": path.read_bytes(), "size": 1, "type": ""}
                 for path in sorted(folder.iterdir())])  # fmt: skip
    settle(page)
    state = page.state
    if page.volume is None:
        pytest.fail(f"the scene did not open the gap series: {state.error}")
    assert not state.dicom_source and page.logic.dicomSource is None
    assert state.error.startswith("no DICOM SEG for this image: the uploaded files: "), state.error
    assert "unevenly spaced" in state.error and "\n" not in state.error
    assert page.work_folder not in state.error
    assert not list(Path(page.work_folder).iterdir())  # the files are not kept


def test_a_series_larger_than_the_page_opens_is_refused_before_and_while_it_downloads(
    page, pacs, monkeypatch, tmp_path: Path
):
    """$FASTSAM3D_WEB_MAX_IMAGE_GB caps a PACS series as it caps an upload: 20 slices of
    512 x 512 x 2 bytes (10.5 MB) against 5 MB. Orthanc tells the sizes (QIDO-RS): refused
    before the download; a server that tells nothing is stopped as the instances arrive."""
    from fastsam3d_web.series_size import SeriesBudget, SeriesTooLarge

    monkeypatch.setenv("FASTSAM3D_WEB_MAX_IMAGE_GB", "0.005")
    url, _, series, _ = pacs
    page.pacs.search(PATIENT, "")
    page.pacs.open_series(url)
    state = page.state
    expected = f"DICOMweb server {page.pacs.access.base}, series {series.series_uid}: the series "
    assert state.error.startswith(expected + "holds 0.0105 GB of images, more than the 0.005 GB")
    assert "FASTSAM3D_WEB_MAX_IMAGE_GB" in state.error and "\n" not in state.error
    assert page.volume is None and not list(Path(page.work_folder).iterdir())
    budget, arriving = SeriesBudget("the series"), tmp_path / "arriving"
    arriving.mkdir()
    files = sorted(PACS_DIR.iterdir())
    for file in files[:9]:  # 9 x 0.52 MB: still under 5 MB
        shutil.copy(file, arriving / file.name)
        budget.check_arrived(arriving)
    shutil.copy(files[9], arriving / files[9].name)
    with pytest.raises(SeriesTooLarge, match="has sent 0.00524 GB of images, more than the"):
        budget.check_arrived(arriving)


# -- the command line and the browser -------------------------------------------------------


def test_the_credentials_reach_the_sessions_in_their_environment_only():
    from fastsam3d_web import start

    auth = DicomwebAuth(user="reader", password=SECRET)
    settings = start.PageSettings(
        model="oracle", truth=Path("/t.nii"), dicomweb="http://pacs/dicom-web", dicomweb_auth=auth
    )
    environment = start.session_environment(settings)
    assert SECRET not in environment[start.SESSION_SETTINGS_ENV]
    assert environment["FASTSAM3D_DICOMWEB_PASSWORD"] == SECRET
    assert environment["FASTSAM3D_DICOMWEB_TOKEN"] == ""  # the launcher's own cannot mix in
    received = start.settings_from_environment({**environment, "FASTSAM3D_DICOMWEB_TOKEN": ""})
    assert received == settings and received.image is None
    # A series URL as IMAGE gets the credentials too; no DICOMweb at all, none.
    url = start.PageSettings(image_url="http://pacs/dicom-web/studies/1/series/2",
                             dicomweb_auth=DicomwebAuth(token="t0ken"))  # fmt: skip
    assert start.settings_from_environment(start.session_environment(url)) == url
    assert "FASTSAM3D_DICOMWEB_TOKEN" not in start.session_environment(start.PageSettings())


def _fastsam3d() -> str:
    return str(Path(sys.executable).with_name("fastsam3d"))


def test_an_unreachable_server_or_a_url_that_is_no_series_is_one_line(pacs, tmp_path: Path):
    truth = str(pacs[3])
    for arguments, expected in (
        (["--dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web"], "cannot connect"),
        (["http://127.0.0.1:1/dicom-web/studies/1.2"], "not a DICOMweb series URL"),
    ):
        run = subprocess.run(
            [_fastsam3d(), "web", *arguments, "--model", "oracle", "--truth", truth,
             "--dicomweb-password", SECRET, "--dicomweb-user", "reader",
             "--port", str(free_port())],
            capture_output=True, text=True, timeout=TIMEOUT_S,
            env={**os.environ, "FASTSAM3D_DEBUG": ""},
        )  # fmt: skip
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1, run.stderr
        assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
        assert SECRET not in run.stderr + run.stdout


@pytest.fixture
def dicomweb_page_server(pacs, orthanc, tmp_path: Path):
    """``fastsam3d web --dicomweb`` on a free loopback port (one session), its credentials in
    the environment; yields its URL."""
    port = free_port()
    command = [_fastsam3d(), "web", "--dicomweb", orthanc.dicomweb, "--model", "oracle",
               "--truth", str(pacs[3]), "--port", str(port), "--sessions", "1"]  # fmt: skip
    environment = {**os.environ, "FASTSAM3D_DICOMWEB_USER": "reader",
                   "FASTSAM3D_DICOMWEB_PASSWORD": SECRET}  # fmt: skip
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                  env=environment)  # fmt: skip
        try:
            wait_for_port(port, seconds=TIMEOUT_S, process=server)
            yield f"http://127.0.0.1:{port}/"
        finally:
            interrupt(server, 30)
    assert SECRET not in log_path.read_text(errors="replace")


def test_in_the_browser_open_from_the_pacs_click_and_save_to_pacs(
    dicomweb_page_server, pacs, orthanc, tmp_path: Path
):
    import test_web
    from test_web import IDLE_WITH, _axial_view_box, _download

    if test_web.CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    _, volume, series, _ = pacs
    with test_web.playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=test_web.CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            context = chromium.new_context(
                accept_downloads=True, viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            page.goto(dicomweb_page_server)
            # The page starts without an image, the server's series listed in a dialog.
            page.wait_for_selector("#pacs-dialog .pacs-series-row", timeout=TIMEOUT_MS)
            assert SECRET not in page.content()
            page.fill("#pacs-patient-id", "NOBODY")
            page.click("#pacs-search")
            page.wait_for_function(
                "document.querySelector('#pacs-found')?.textContent.trim() === '0 series'",
                timeout=TIMEOUT_MS,
            )
            page.fill("#pacs-patient-id", PATIENT)
            page.click("#pacs-search")
            rows = page.locator("#pacs-dialog .pacs-series-row")
            rows.first.wait_for(timeout=TIMEOUT_MS)
            assert rows.count() == 1 and "CT Body 3.0" in rows.first.text_content()
            rows.first.click()
            page.wait_for_selector("#pacs-dialog", state="detached", timeout=TIMEOUT_MS)
            page.wait_for_function(
                "!document.querySelector('#export-dicom-seg')?.disabled", timeout=TIMEOUT_MS
            )
            page.wait_for_timeout(1000)  # the views' first images
            before = len(stored_segs(orthanc, series))
            box = _axial_view_box(page)
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(IDLE_WITH.format(1), timeout=TIMEOUT_MS)
            assert page.text_content("#error") == ""
            page.click("#save-to-pacs")
            saved = "(document.querySelector('#status')?.textContent || '').startsWith('Saved')"
            page.wait_for_function(saved, timeout=TIMEOUT_MS)
            assert "FastSAM3D segmentation" in page.text_content("#status")
            segs = stored_segs(orthanc, series)
            assert len(segs) == before + 1
            assert segs[-1].ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
            stored = seg_voxels(segs[-1], tmp_path, volume, series)
            exported = _download(page, "#export-seg", tmp_path / "page.seg.nrrd")
            own = seg_nrrd_voxels(Path(exported), volume)  # the page's own export
            assert own.sum() > 1000 and np.array_equal(stored, own)
            downloaded = _download(page, "#export-dicom-seg", tmp_path / "download.dcm")
            (segment,) = dicom_seg.read_dicom_seg(downloaded, volume, series)
            assert np.array_equal(segment.mask, stored)
        finally:
            chromium.close()
