"""The web page's actions in-process, as the browser's messages call them: no browser needed.

A real trame server object and a real :class:`SegmentationPage` on the example CT with the oracle
on the spleen label; calls arrive as the browser would send them, names and files included.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_slicer_mrml import CT_IMAGE, CT_LABEL

from fastsam3d_core.examples import SPLEEN_LABEL, SPLEEN_POINT_RAS

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
TIMEOUT_S = 120
_servers = itertools.count()


@pytest.fixture
def page():
    from trame.app import get_server

    from fastsam3d_web.app import SegmentationPage
    from fastsam3d_web.server import predictor_for

    server = get_server(f"test-page-{next(_servers)}", client_type="vue3")
    predictor = predictor_for("oracle", None, None, None, CT_LABEL, SPLEEN_LABEL)
    page = SegmentationPage(server, CT_IMAGE, predictor, SPLEEN_POINT_RAS)
    settle(page)
    yield page
    page.logic.cleanup()


def settle(page) -> None:
    assert page.logic.waitForIdle(TIMEOUT_S)
    page.logic.processEvents(0)


def upload(page, name: str, content: bytes) -> None:
    page.upload([{"name": name, "content": content, "size": len(content), "type": ""}])
    settle(page)


def nodes(page, kind: str) -> list:
    scene = page.slicer.scene
    return [scene.GetNthNodeByClass(i, kind) for i in range(scene.GetNumberOfNodesByClass(kind))]


def test_an_export_name_that_is_not_the_pages_own_is_refused(page, tmp_path: Path):
    from fastsam3d_web.app import EXPORT_FILES

    for name in (f"../../{tmp_path.name}/x.nii.gz", str(tmp_path / "x.seg.nrrd")):
        assert page.export(name) is None
        assert "export as one of" in page.state.error
    assert not list(tmp_path.iterdir()), "a name from the browser wrote outside the page's folder"
    assert set(EXPORT_FILES.values()) == {"segmentation.seg.nrrd", "labelmap.nii.gz"}


def test_a_refused_upload_keeps_the_image_and_an_accepted_one_replaces_it(page):
    first_volume, first_segmentation = page.volume, page.logic.segmentationNode
    header = (b"NRRD0004\ntype: short\ndimension: 3\nsizes: 64 64 1\nspace: left-posterior-"
              b"superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
              b"encoding: raw\nendian: little\n\n")  # fmt: skip
    upload(page, "slice.nrrd", header + np.zeros(64 * 64, "<i2").tobytes())
    assert "2-D image" in page.state.error
    assert page.volume is first_volume and page.logic.volumeNode is first_volume
    assert nodes(page, "vtkMRMLScalarVolumeNode") == [first_volume]
    upload(page, "again.nii.gz", CT_IMAGE.read_bytes())
    assert page.state.error == ""
    assert page.volume is not first_volume and page.logic.volumeNode is page.volume
    # The previous image and its segmentation leave the scene; so do the uploaded files.
    assert nodes(page, "vtkMRMLScalarVolumeNode") == [page.volume]
    assert nodes(page, "vtkMRMLSegmentationNode") == [page.logic.segmentationNode]
    assert page.logic.segmentationNode is not first_segmentation
    assert not list(Path(page._export_dir.name).glob("upload-*"))


def test_results_pending_from_another_thread_wakes_the_polling_task_at_once(page):
    """The engine says so on the scene's thread, but a call from another thread must neither
    break the event loop (``asyncio.Event`` is not thread-safe) nor wait for the nap's end."""
    failures = []

    def from_another_thread():
        time.sleep(0.1)  # the task waits by then
        try:
            page.events.resultsPending()
        except BaseException as error:
            failures.append(error)

    async def woken_after() -> float | None:
        wake = page.events.listen(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(wake.wait())
        caller = threading.Thread(target=from_another_thread)
        started = time.monotonic()
        caller.start()
        # Not wait_for: cancelling a wait whose wake-up was lost would never end.
        done, _ = await asyncio.wait({waiting}, timeout=5)
        caller.join(5)
        return time.monotonic() - started if done else None

    loop = asyncio.new_event_loop()
    loop.set_debug(True)  # asyncio then checks which thread schedules on it
    try:
        elapsed = loop.run_until_complete(woken_after())
    finally:
        loop.close()  # not asyncio.run: it would wait for a lost wait to be cancelled
    assert not failures, failures
    assert elapsed is not None and elapsed < 2, "the polling task slept on"

    # On the loop's own thread it is set at once.
    async def on_the_loop() -> bool:
        wake = page.events.listen(asyncio.get_running_loop())
        page.events.resultsPending()
        return wake.is_set()

    assert asyncio.run(on_the_loop())
