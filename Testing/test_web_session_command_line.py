"""What a ``fastsam3d web`` session process shows to every user of the machine (``ps``): its
command line must not hold the encoder service's address, which may carry a password, nor the
command line's options: a session is ``python -m fastsam3d_web.session PORT``, the page's own
entry point, with its settings in its environment."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_security import _alive, _children, _get, _open_session

from fastsam3d_core.examples import SPLEEN_LABEL

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")
pytestmark = [
    pytest.mark.skipif(not CT_IMAGE.is_file(), reason=f"{CT_IMAGE} not found"),
    pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="needs Linux's /proc"),
]
# Nothing listens there: the oracle answers the clicks, the address only travels.
SERVER = "http://someone:hunter2-secret@127.0.0.1:9/"
# Every option of `fastsam3d web`, and the command line's own module: none is a session's.
CLI_WORDS = ("--model", "--weights", "--server", "--token", "--truth", "--truth-value", "--focus",
             "--host", "--port", "--sessions", "--require-token", "--idle-minutes", "--session",
             "--example", "fastsam3d_core.cli")  # fmt: skip


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
    arguments = command_line.rstrip("\0").split("\0")
    assert arguments[1:3] == ["-m", "fastsam3d_web.session"] and arguments[3].isdigit(), arguments
    assert not [word for word in CLI_WORDS if word in command_line], arguments
    # It still reaches the session, where only the same user can read it.
    environment = Path(f"/proc/{session}/environ").read_bytes().decode().split("\0")
    assert any(entry.endswith("=" + SERVER) for entry in environment)


def test_a_session_started_through_its_entry_point_serves_the_page(tmp_path: Path):
    from fastsam3d_web.start import PageSettings, session_environment

    settings = PageSettings(image=CT_IMAGE, model="oracle", truth=CT_LABEL,
                            truth_value=SPLEEN_LABEL, focus=(1.5, -2.0, 3.25))  # fmt: skip
    port = free_port()
    environment = {**os.environ, **session_environment(settings)}
    command = [sys.executable, "-m", "fastsam3d_web.session", str(port)]
    with open(tmp_path / "session.log", "w") as log:
        session = subprocess.Popen(command, env=environment, cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            from conftest import wait_for_port

            wait_for_port(port, seconds=120, process=session)
            assert _get(port, "/", {"Host": f"127.0.0.1:{port}"}).getheader("Location") == (
                "index.html"
            )
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("GET", "/index.html")
            page = connection.getresponse()
            assert page.status == 200 and b"<html" in page.read().lower(), page.status
            connection.close()
        finally:
            session.terminate()
            try:
                session.wait(timeout=30)
            except subprocess.TimeoutExpired:
                session.kill()
                session.wait()


def test_the_settings_travel_in_the_environment_with_absolute_paths(tmp_path: Path, monkeypatch):
    from fastsam3d_web import start

    monkeypatch.chdir(tmp_path)
    settings = start.PageSettings(image=Path("ct.nrrd"), model="fastsam3d", weights=Path("w.pth"),
                                  server=SERVER, token="t0ken-secret", focus=(1.5, -2.0, 3.25),
                                  host="::1", idle_minutes=0.25)  # fmt: skip
    environment = start.session_environment(settings)
    # The service's address and token each in a variable of its own, not in the settings.
    assert environment[start.SESSION_SERVER_ENV] == SERVER
    assert environment[start.SERVICE_TOKEN_ENV] == "t0ken-secret"
    assert "secret" not in environment[start.SESSION_SETTINGS_ENV]
    monkeypatch.chdir("/")  # a session may start elsewhere
    received = start.settings_from_environment(environment)
    assert received == start.PageSettings(image=tmp_path / "ct.nrrd", model="fastsam3d",
                                          weights=tmp_path / "w.pth", server=SERVER,
                                          token="t0ken-secret", focus=(1.5, -2.0, 3.25),
                                          host="::1", idle_minutes=0.25)  # fmt: skip


def test_a_session_without_its_settings_says_so_in_one_line():
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTSAM3D_")}
    done = subprocess.run([sys.executable, "-m", "fastsam3d_web.session", str(free_port())],
                          env=environment, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: $FASTSAM3D_WEB_SESSION_SETTINGS is not set: sessions are started by `fastsam3d web`"
    ]
