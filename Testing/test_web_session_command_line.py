"""What a ``fastsam3d web`` session process shows to every user of the machine (``ps``): its
command line must not hold the encoder service's address, which may carry a password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_security import _alive, _children, _open_session

from fastsam3d_core.examples import SPLEEN_LABEL

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = [
    pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found"),
    pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="needs Linux's /proc"),
]
# Nothing listens there: the oracle answers the clicks, the address only travels.
SERVER = "http://someone:hunter2-secret@127.0.0.1:9/"


@pytest.fixture
def launcher_with_server(tmp_path: Path):
    """``fastsam3d web --server SERVER`` on a free loopback port: (its port, its process)."""
    from conftest import wait_for_port

    port = free_port()
    command = [str(Path(sys.executable).with_name("fastsam3d")), "web", str(CT_IMAGE),
               "--model", "oracle", "--truth", str(CT_LABEL), "--truth-value", str(SPLEEN_LABEL),
               "--server", SERVER, "--port", str(port), "--sessions", "1"]  # fmt: skip
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_for_port(port, seconds=120, process=server)
            yield port, server
        finally:
            sessions = _children(server.pid)
            server.terminate()  # SIGTERM stops its sessions too
            try:
                server.wait(timeout=40)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            for pid in sessions:
                if _alive(pid):
                    subprocess.run(["kill", "-9", str(pid)], check=False)


def test_the_session_gets_the_server_address_through_its_environment(launcher_with_server):
    port, server = launcher_with_server
    _open_session(port)
    (session,) = _children(server.pid)
    command_line = Path(f"/proc/{session}/cmdline").read_bytes().decode()
    assert "hunter2-secret" not in command_line, command_line.replace("\0", " ")
    # It still reaches the session, where only the same user can read it.
    environment = Path(f"/proc/{session}/environ").read_bytes().decode().split("\0")
    assert any(entry.endswith("=" + SERVER) for entry in environment)
