"""The web page against a hostile browser: uploads that name server files or inflate without
bound, requests under a foreign name or from a foreign page, and stopping the server with SIGTERM.

Uploads go to a real :class:`SegmentationPage` in-process (``test_web_page``'s fixture); the
launcher and its sessions run as real processes on 127.0.0.1, reached with raw HTTP requests.
"""

from __future__ import annotations

import gzip
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import test_web_page
from conftest import free_port, interrupt, wait_for_port
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_page import nodes, upload

from fastsam3d_core.examples import SPLEEN_LABEL

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found")
page = test_web_page.page  # the fixture: a SegmentationPage on the example CT
SIDE = 16  # the uploaded volumes: SIDE³ unsigned bytes
VOXELS = (np.arange(SIDE**3) % 251).astype(np.uint8).tobytes()
MHD = "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_UCHAR\n"
NHDR = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 16 16 16\nencoding: raw\n"


def _secret_files(folder: Path) -> Path:
    """Server files that no upload may show: ``secret.raw`` and ``secret1.raw``."""
    for name in ("secret.raw", "secret1.raw"):
        (folder / name).write_bytes(VOXELS)
    return folder / "secret.raw"


def _headers_naming(secret: Path, escape: str) -> dict[str, str]:
    """Uploads (name: header) whose data file is ``secret`` by every form a header has;
    ``escape``: the relative path from an upload's folder to ``secret``."""
    numbered = str(secret.with_name("secret%d.raw"))
    return {
        "absolute.mhd": f"{MHD}ElementDataFile = {secret}\n",
        "relative.mhd": f"{MHD}ElementDataFile = {escape}\n",
        "list.mhd": f"{MHD}ElementDataFile = LIST 3\n{secret}\n",
        "numbered.mhd": f"{MHD}ElementDataFile = {numbered} 1 1 1\n",
        # ITK's MetaImage reader skips line breaks and what follows a NUL in a key.
        "newline.mhd": f"{MHD}ElementDataFile\n = {secret}\n",
        "nul.mhd": f"{MHD}ElementDataFile\0 = {secret}\n",
        "absolute.nhdr": f"{NHDR}data file: {secret}\n",
        "relative.nhdr": f"{NHDR}datafile: {escape}\n",
        "list.nhdr": f"{NHDR}data file: LIST 3\n{secret}\n",
        "numbered.nhdr": f"{NHDR}data file: {numbered} 1 1 1 3\n",
    }


@pytest.mark.parametrize("name", list(_headers_naming(Path("/s"), "../s")))
def test_an_uploaded_header_naming_a_server_file_is_refused_and_the_image_stays(
    page, tmp_path: Path, name: str
):
    secret = _secret_files(tmp_path)
    uploads_folder = Path(page._export_dir.name) / "upload-x"  # where _open_upload puts them
    header = _headers_naming(secret, os.path.relpath(secret, uploads_folder))[name]
    first_volume = page.volume
    upload(page, name, header.encode())
    assert page.volume is first_volume, f"{name} showed a server file"
    assert nodes(page, "vtkMRMLScalarVolumeNode") == [first_volume]
    assert page.state.error.startswith(f"{name}: its header reads its voxels from ")
    assert "not a file uploaded with it" in page.state.error
    assert page.state.error.endswith("the current image stays")


def upload_both(page, files: dict[str, str | bytes]) -> None:
    """Upload several files at once, as a multiple file choice does."""
    entries = []
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        entries.append({"name": name, "content": data, "size": len(data), "type": ""})
    page.upload(entries)
    page.logic.waitForIdle(120)
    page.logic.processEvents(0)


def test_headers_uploaded_with_their_data_files_open(page):
    slices = {f"slice{n:02d}.raw": VOXELS[n * SIDE**2 : (n + 1) * SIDE**2] for n in range(SIDE)}
    for files in (
        {"image.mhd": f"{MHD}ElementDataFile = image.raw\n", "image.raw": VOXELS},
        {"image.nhdr": f"{NHDR}data file: image.raw\n", "image.raw": VOXELS},
        {"series.nhdr": f"{NHDR}data file: slice%02d.raw 0 15 1 2\n", **slices},
        {"list.nhdr": f"{NHDR}data file: LIST 2\n" + "\n".join(slices) + "\n", **slices},
    ):
        previous = page.volume
        upload_both(page, files)
        assert page.state.error == "", (list(files)[0], page.state.error)
        assert page.volume is not previous


def _nifti_bytes(shape: tuple[int, int, int], trailing: int = 0) -> bytes:
    """An uncompressed NIfTI-1 file of zeros, ``trailing`` more zero bytes after its voxels."""
    import nibabel

    image = nibabel.Nifti1Image(np.zeros(shape, np.int16), np.eye(4))
    return image.to_bytes() + bytes(trailing)


def test_an_upload_announcing_more_than_the_bound_is_refused_before_reading(page, monkeypatch):
    monkeypatch.setenv("FASTSAM3D_WEB_MAX_IMAGE_GB", "0.0001")  # 100 kB; the real one is 4 GB
    first_volume = page.volume
    upload(page, "big.nii.gz", gzip.compress(_nifti_bytes((64, 64, 64))))  # 512 KiB of voxels
    assert page.state.error.startswith("big.nii.gz: decompresses to more than 0.0001 GB")
    assert page.volume is first_volume


def test_a_gzip_stream_inflating_past_the_bound_is_refused(page, monkeypatch):
    monkeypatch.setenv("FASTSAM3D_WEB_MAX_IMAGE_GB", "0.001")  # 1 MB
    first_volume = page.volume
    # A 16³ image (8 KiB of voxels), then 2 MB more in the same compressed stream: 2 kB on disk.
    bomb = gzip.compress(_nifti_bytes((16, 16, 16), trailing=2_000_000))
    assert len(bomb) < 10_000
    upload(page, "bomb.nii.gz", bomb)
    assert page.state.error.startswith("bomb.nii.gz: decompresses to more than 0.001 GB")
    assert page.volume is first_volume
    upload(page, "small.nii.gz", gzip.compress(_nifti_bytes((16, 16, 16))))
    assert page.state.error == "" and page.volume is not first_volume


def test_a_bad_upload_bound_is_refused_in_one_line(tmp_path: Path):
    run = subprocess.run(
        [str(Path(sys.executable).with_name("fastsam3d")), "web", str(CT_IMAGE), "--model",
         "oracle", "--truth", str(CT_LABEL), "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FASTSAM3D_WEB_MAX_IMAGE_GB": "lots", "FASTSAM3D_DEBUG": ""},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: FASTSAM3D_WEB_MAX_IMAGE_GB=lots")


# -- the launcher and its sessions, as real processes ---------------------------------------


@pytest.fixture
def launcher(tmp_path: Path):
    """``fastsam3d web`` on a free loopback port, at most 1 session: (its port, its process)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("fastsam3d")), "web", str(CT_IMAGE),
               "--model", "oracle", "--truth", str(CT_LABEL), "--truth-value", str(SPLEEN_LABEL),
               "--port", str(port), "--sessions", "1"]  # fmt: skip
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    sessions: list[int] = []
    try:
        wait_for_port(port, seconds=120, process=server)
        yield port, server, sessions
    finally:
        if server.poll() is None:
            interrupt(server, 40)
        for pid in sessions:  # the sessions it left running, if any
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def _get(port: int, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    if response.status != 101:  # a websocket's upgrade has no body to read
        response.read()
    connection.close()
    return response


def _open_session(port: int) -> tuple[int, str]:
    """Ask the launcher for a session as a tab does: the session's port, and its cookie."""
    started = _get(port, "/", {"Host": f"localhost:{port}"})
    assert started.status == 303, started.status
    location = started.getheader("Location")
    # From the configured address (127.0.0.1), not from the name the request used.
    assert location.startswith("http://127.0.0.1:") and "/?session=" in location
    session_port = int(location.split(":")[2].split("/")[0])
    secret = location.split("?session=")[1]
    return session_port, f"fastsam3d-session-{session_port}={secret}"


def _handshake(port: int, host: str, origin: str, cookie: str) -> int:
    """The status of a websocket handshake on the session's websocket."""
    headers = {"Host": host, "Origin": origin, "Cookie": cookie, "Upgrade": "websocket",
               "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version": "13"}  # fmt: skip
    return _get(port, "/ws", headers).status


def test_the_launcher_answers_only_under_its_own_address(launcher):
    port, _, _ = launcher
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        refused = _get(port, "/", {"Host": host})
        assert refused.status == 403 and refused.getheader("Location") is None, host
    session_port, _ = _open_session(port)  # no session was started for the refused ones
    assert session_port != port


def test_a_session_refuses_a_websocket_from_a_foreign_page_or_name(launcher):
    port, _, _ = launcher
    session_port, cookie = _open_session(port)
    own = f"127.0.0.1:{session_port}"
    assert _handshake(session_port, own, "http://evil.example", cookie) == 403
    assert _handshake(session_port, own, f"http://evil.example:{session_port}", cookie) == 403
    assert _handshake(session_port, f"evil.example:{session_port}", f"http://{own}", cookie) == 403
    # The tab's own page, under any loopback name of the session's port.
    assert _handshake(session_port, own, f"http://localhost:{session_port}", cookie) == 101
    assert _handshake(session_port, f"localhost:{session_port}", f"http://{own}", cookie) == 101


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_sigterm_stops_the_launcher_and_its_sessions(launcher):
    port, server, sessions = launcher
    _open_session(port)
    sessions += _children(server.pid)
    assert len(sessions) == 1
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=40)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in sessions), "SIGTERM left the session running"
