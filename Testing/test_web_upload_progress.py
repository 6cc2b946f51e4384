"""Uploads that show how far they got, and a DICOM series read without freezing the page.

The browser sends files in slices (fastsam3d_web/upload_chunks.py) and shows the share sent
after each; the server checks each slice where it belongs. An uploaded image is read by the
core's reader on a worker thread (fastsam3d_web/image_reading.py), with the geometry the scene's
own reader gives, while the page's event loop answers other actions. In-process checks of the
slices and of the geometry, and two real-browser tests (Debian's chromium, Playwright).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_dicom_series import DICOM_DIR
from test_web import (  # noqa: F401 (browser, web_server: fixtures)
    READY,
    TIMEOUT_MS,
    _axial_view_box,
    _open,
    _pixels,
    browser,
    web_server,
)
from test_web_drop import NO_WORK, RECORD_WORK, _changed, _drop, _series_files
from test_web_page import CT_IMAGE, page, settle  # noqa: F401 (page: a fixture)

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not DICOM_DIR.is_dir(), reason=f"{DICOM_DIR} not found")

from fastsam3d_web.drop import LEFT_BEHIND_S, YIELD_S  # noqa: E402
from fastsam3d_web.upload_chunks import CHUNK_BYTES, ChunkedUpload  # noqa: E402
from fastsam3d_web.uploads import MAX_IMAGE_GB_ENV, UploadRefused  # noqa: E402


async def send_in_slices(receiver, files: list[tuple[str, bytes]]) -> None:
    """What the browser's handler does (fastsam3d_web/drop.py, SEND_IN_SLICES): announce the
    files, send each in slices of CHUNK_BYTES, finish; then wait for the opening to end."""
    number = await receiver.begin([{"name": name, "size": len(data)} for name, data in files])
    assert number is not None, receiver.page.state.error
    for index, (_, data) in enumerate(files):
        for offset in range(0, len(data), CHUNK_BYTES):
            slice_ = data[offset : offset + CHUNK_BYTES]
            assert await receiver.append(number, index, offset, slice_), receiver.page.state.error
    await receiver.finish(number)
    await receiver.task


needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is missing"
)


def _refused(call, *arguments) -> str:
    with pytest.raises(UploadRefused) as refusal:
        call(*arguments)
    assert "\n" not in str(refusal.value)
    return str(refusal.value)


def test_slices_make_the_files_in_order_and_anything_else_is_refused(tmp_path: Path, monkeypatch):
    content = bytes(range(256)) * 40
    upload = ChunkedUpload(tmp_path, [{"name": "a/../x.nrrd", "size": len(content)},
                                      {"name": "empty.raw", "size": 0}])  # fmt: skip
    assert [path.name for path in upload.paths] == ["x.nrrd", "empty.raw"]  # no folder kept
    assert upload.append(0, 0, content[:4000]) == 4000
    assert "byte 100 came where byte 4000" in _refused(upload.append, 0, 100, b"x")
    assert "not announced" in _refused(upload.append, 2, 0, b"x")
    assert "without its bytes" in _refused(upload.append, 0, 4000, [1, 2, 3])
    assert "4000 of its 10240 bytes" in _refused(upload.complete)
    assert "more bytes came than the 10240" in _refused(upload.append, 0, 4000, content)
    upload.append(0, 4000, content[4000:])
    assert upload.complete() == upload.paths and upload.paths[0].read_bytes() == content
    assert upload.paths[1].read_bytes() == b""

    # Refused before any file is made: names, sizes, totals.
    folder = tmp_path / "next"
    folder.mkdir()
    assert "not a file name" in _refused(ChunkedUpload, folder, [{"name": "..", "size": 1}])
    twice = [{"name": "a.dcm", "size": 1}, {"name": "x/a.dcm", "size": 1}]
    assert "two files of this name" in _refused(ChunkedUpload, folder, twice)
    assert "no size in bytes" in _refused(ChunkedUpload, folder, [{"name": "a", "size": "1"}])
    monkeypatch.setenv(MAX_IMAGE_GB_ENV, "0.001")
    large = [{"name": "a.nii", "size": 600_000}, {"name": "b.nii", "size": 600_000}]
    assert "2 files: 0.0 GB, more than the 0.001 GB" in _refused(ChunkedUpload, folder, large)
    assert not list(folder.iterdir())
    with pytest.raises(ValueError, match="no file"):
        ChunkedUpload(folder, [])


def test_a_dicom_series_is_read_off_the_loop_with_the_scenes_geometry(page):  # noqa: F811
    """The core reads the series on a worker thread (the loop ticks on while the image is read,
    the previous one still shown); the volume opened equals the scene's own reader's:
    dimensions, IJK-to-RAS matrix, voxels. A DICOM image: its series kept for a SEG."""
    import slicer

    from fastsam3d_mrml.mrml_io import volume_ijk_to_ras

    files = sorted(DICOM_DIR.iterdir())
    reference = page.slicer.io_manager.load_volumes([str(path) for path in files])[0]
    expected = (volume_ijk_to_ras(reference), slicer.util.arrayFromVolume(reference).copy())
    page.slicer.scene.RemoveNode(reference)
    previous = page.volume
    opening, ticks = f"Opening {len(files)} files...", []

    async def watch() -> None:
        while True:
            ticks.append((time.monotonic(), page.state.work, page.volume is previous))
            await asyncio.sleep(0.005)

    async def run() -> None:
        watcher = asyncio.ensure_future(watch())
        await send_in_slices(page.receiver, [(p.name, p.read_bytes()) for p in files])
        watcher.cancel()

    asyncio.run(run())
    settle(page)
    assert page.state.error == "" and page.volume is not previous
    assert page.source.series is not None and len(page.source.series.files) == len(files)
    # The loop ran on past the progress line's own pause while the image was being read (read
    # on the loop, the last tick before the new image came within a tick of that pause).
    since = [at for at, work, _ in ticks if work == opening]
    late = [at - since[0] for at, work, old in ticks if work == opening and old]
    assert late and max(late) > YIELD_S + 0.05, f"the loop stopped while reading ({late[-3:]})"
    matrix, voxels = volume_ijk_to_ras(page.volume), slicer.util.arrayFromVolume(page.volume)
    assert page.volume.GetImageData().GetDimensions() == voxels.shape[::-1] == (512, 512, 20)
    assert np.abs(matrix - expected[0]).max() < 1e-4, (matrix, expected[0])
    assert voxels.dtype == expected[1].dtype and np.array_equal(voxels, expected[1])


# As the progress line first says PRESS_DURING, the polarity button is pressed (in the page, at
# once); window.answered is then [milliseconds until the button changed, the line by then].
PRESS_DURING = """(line) => {
  const text = document.querySelector('#work-text');
  const button = document.querySelector('#polarity');
  new MutationObserver((_, watching) => {
    if (text.textContent.trim() !== line) return;
    watching.disconnect();
    const pressed = performance.now();
    new MutationObserver((_, answer) => {
      if (!button.textContent.includes('Negative')) return;
      answer.disconnect();
      window.answered = [performance.now() - pressed, text.textContent.trim()];
    }).observe(button, {childList: true, characterData: true, subtree: true});
    button.click();
  }).observe(text, {childList: true, characterData: true, subtree: true});
}"""


@needs_chromium
def test_the_page_answers_while_a_dropped_series_is_read(web_server, browser):  # noqa: F811
    """The polarity button, pressed as the dropped series starts to be read, is answered while
    the series is still being read: the page's loop answers at once (read on the loop, the
    press waited for the whole read, and the progress line had gone by then)."""
    tab = _open(browser, web_server)
    series = _series_files()
    opening = f"Opening {len(series)} files..."
    tab.evaluate(PRESS_DURING, opening)
    _drop(tab, series)
    tab.wait_for_function("window.answered !== undefined", timeout=TIMEOUT_MS)
    answered_ms, line = tab.evaluate("window.answered")
    print(f"the button answered in {answered_ms:.0f} ms, the line then {line!r}")
    assert line == opening, f"answered after the read ({answered_ms:.0f} ms)"
    tab.wait_for_function(NO_WORK, timeout=TIMEOUT_MS)
    tab.wait_for_function(READY, timeout=TIMEOUT_MS)
    assert tab.text_content("#error").strip() == ""
    assert tab.is_enabled("#export-dicom-seg")  # the series opened, as a DICOM image


@needs_chromium
def test_an_upload_shows_the_share_sent_then_the_image_opens(web_server, browser, tmp_path):  # noqa: F811
    """A 10 MB image chosen in the file chooser: the progress line counts the megabytes and
    the percentage up to 100 % (the bar with it), then the server's steps, then the image."""
    import SimpleITK as sitk

    image = tmp_path / "series.nii"  # uncompressed: 512 x 512 x 20 x 2 bytes
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in sorted(DICOM_DIR.iterdir())])
    sitk.WriteImage(reader.Execute(), str(image))
    megabytes = image.stat().st_size / 1e6
    tab = _open(browser, web_server)
    box = _axial_view_box(tab)
    before = _pixels(tab, box)
    tab.evaluate(RECORD_WORK)
    tab.evaluate("""() => {
      window.barValues = [];
      new MutationObserver(() => {
        const bar = document.querySelector('#work-bar');
        if (bar) window.barValues.push(Number(bar.getAttribute('aria-valuenow')));
      }).observe(document.querySelector('#work'), {attributes: true, subtree: true});
    }""")
    tab.set_input_files("#upload", str(image))
    tab.wait_for_function("window.workLines.some((line) => line.startsWith('Opening'))",
                          timeout=TIMEOUT_MS)  # fmt: skip
    tab.wait_for_function(NO_WORK, timeout=TIMEOUT_MS)
    tab.wait_for_function(READY, timeout=TIMEOUT_MS)
    assert tab.text_content("#error").strip() == ""
    tab.wait_for_timeout(1500)  # the views' next images
    assert _changed(before, _pixels(tab, box)) > 2000  # the image opened in the views
    lines = tab.evaluate("window.workLines")
    label = f"Sending series.nii ({megabytes:.1f} MB) to the server"
    sending = [line for line in lines if line.startswith(label + ": ")]
    shares = [int(line.rsplit("(", 1)[1].rstrip("%)")) for line in sending]
    slices = -(-image.stat().st_size // CHUNK_BYTES)
    assert len(shares) >= slices - 1 and shares == sorted(shares), lines  # one line a slice
    assert shares[0] < 20 and shares[-1] == 100, shares
    assert sending[-1] == f"{label}: {megabytes:.1f} MB (100%)"
    assert lines[lines.index(sending[-1]) + 1 :] == [
        "Receiving the files...", "Checking series.nii...", "Opening series.nii..."
    ]  # fmt: skip
    values = tab.evaluate("window.barValues")
    assert any(0 < value < 100 for value in values), values  # the bar showed the share


def test_the_receiver_takes_one_upload_in_slices_at_a_time(page):  # noqa: F811
    """The browser's calls in-process: a second upload is refused while one arrives, a slice
    out of place ends the upload (its folder removed), one left behind for a minute gives way
    to the next, and a finished one opens (the CT, in its own task)."""
    receiver, content = page.receiver, CT_IMAGE.read_bytes()
    announced = [{"name": CT_IMAGE.name, "size": len(content)}]
    uploads = Path(page.work_folder)

    async def run() -> None:
        first = await receiver.begin(announced)
        assert first is not None and page.state.error == ""
        assert await receiver.begin(announced) is None
        assert page.state.error.startswith("another upload is still being opened")
        assert not await receiver.append(first, 0, 10, content[:10])  # not the first bytes
        assert "byte 10 came where byte 0 was due" in page.state.error
        assert not list(uploads.glob("upload-*")) and not receiver.receiving
        stale = await receiver.begin(announced)
        assert await receiver.append(stale, 0, 0, content[:1000])
        receiver.chunked.touched -= LEFT_BEHIND_S + 1  # no slice for a minute
        number = await receiver.begin(announced)
        assert number == stale + 1 and len(list(uploads.glob("upload-*"))) == 1
        assert not await receiver.append(stale, 0, 1000, content[1000:])  # the old one's
        for offset in range(0, len(content), CHUNK_BYTES // 4):
            assert await receiver.append(
                number, 0, offset, content[offset : offset + CHUNK_BYTES // 4]
            )
        await receiver.finish(number)
        assert receiver.task is not None and not receiver.task.done()  # the trigger returned
        await receiver.task

    previous = page.volume
    asyncio.run(run())
    settle(page)
    assert page.state.error == "" and page.volume is not previous and not receiver.receiving
    assert page.volume.GetImageData().GetDimensions() == (122, 101, 30)
    assert not list(uploads.glob("upload-*"))  # not DICOM: the scene holds it, the files went
