"""The page's start-up: the launcher keeps a spare session process started before any tab asks
(fastsam3d_web/launcher.py, server.py), and a session loads its model only once a tab has its
first image (fastsam3d_web/rendering.py).

The launcher's bookkeeping is checked with real processes that listen as sessions do (Python's
``http.server``, its port appended as a session's is); the spare of ``fastsam3d web`` itself as
real processes on 127.0.0.1 (``test_web_security``'s helpers).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_web_security
from test_slicer_mrml import CT_IMAGE, CT_LABEL
from test_web_security import _alive, _children, _open_session

from fastsam3d_core.examples import SPLEEN_LABEL

pytest.importorskip("trame_slicer", reason="needs the web extra (pip install -e '.[web]')")

HOME = "http://127.0.0.1:1/"
LISTENER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]  # + the port
# A session that listens on its port (argv[1]) and keeps a core busy.
BUSY_LISTENER = """import socket, sys
listening = socket.socket()
listening.bind(("127.0.0.1", int(sys.argv[1])))
listening.listen()
while True:
    pass
"""


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


@pytest.fixture
def make_launcher():
    from fastsam3d_web.launcher import Launcher

    made = []

    def make(max_sessions: int) -> Launcher:
        made.append(Launcher(LISTENER, "127.0.0.1", max_sessions, {"SETTING": "x"}))
        return made[-1]

    yield make
    for launcher in made:
        launcher.stop()


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="needs Linux's /proc")
def test_the_next_tab_gets_the_spare_and_the_next_spare_waits(make_launcher):
    from fastsam3d_web import launcher as launcher_module
    from fastsam3d_web.access import SESSION_SPARE_ENV

    launcher = make_launcher(2)
    launcher.keep_spare(HOME)
    assert launcher.running() == 1  # before any tab asked
    spare = launcher._spare
    assert _environment(spare.process.pid)[SESSION_SPARE_ENV] == str(os.getpid())
    assert _environment(spare.process.pid)["SETTING"] == "x"
    launcher.keep_spare(HOME)
    assert launcher.running() == 1, "a second spare"
    port, secret = launcher.start_session(HOME)
    assert (port, secret) == (spare.port, spare.secret) and _listens(port)
    # The next spare waits: its start would take the cores from that tab's first image.
    launcher.keep_spare()
    assert launcher.running() == 1 and launcher._spare is None
    launcher._next_spare_at -= launcher_module.SPARE_DELAY_S
    launcher.keep_spare()
    assert launcher.running() == 2 and launcher._spare is not None
    second = launcher._spare
    assert launcher.start_session(HOME)[0] == second.port
    assert launcher.start_session(HOME) is None  # 2 sessions at most: the spares among them


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="needs Linux's /proc")
def test_a_spare_counts_among_the_sessions_and_another_address_gets_a_new_one(make_launcher):
    launcher = make_launcher(1)
    launcher.keep_spare(HOME)
    spare = launcher._spare
    # A tab under another name of the launcher (a wildcard host's): the spare was told another
    # home, so it ends and the tab gets a session of its own.
    port, _ = launcher.start_session("http://localhost:1/")
    assert port != spare.port and launcher.running() == 1
    spare.process.wait(timeout=30)
    assert launcher.start_session(HOME) is None  # full: one session at most
    launcher.keep_spare()
    assert launcher._spare is None and launcher.running() == 1


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_no_spare_starts_while_a_session_works(make_launcher):
    """A session that keeps a core busy (a user's clicks, its model's load): the spare waits."""
    from fastsam3d_web import launcher as launcher_module

    launcher = make_launcher(2)
    launcher.session_command = [sys.executable, "-c", BUSY_LISTENER]
    launcher.start_session(HOME)
    launcher._next_spare_at = 0.0
    for _ in range(3):
        time.sleep(launcher_module.SPARE_CHECK_S)
        launcher.keep_spare()
    assert launcher._spare is None and launcher.running() == 1
    launcher.session_command = LISTENER
    launcher._sessions[0].kill()  # it ended: the sessions are quiet again
    launcher._sessions[0].wait(timeout=30)
    launcher.keep_spare()
    assert launcher._spare is not None and launcher.running() == 1


def test_a_spare_that_fails_is_not_started_again_at_once(make_launcher):
    from fastsam3d_web import launcher as launcher_module

    launcher = make_launcher(1)
    launcher.session_command = [sys.executable, "-c", "raise SystemExit(1)"]  # + the port
    launcher.keep_spare(HOME)
    failed = launcher._spare
    assert failed is not None and failed.process.wait(timeout=30) == 1
    launcher.keep_spare()
    assert launcher._spare is None and launcher.running() == 0
    assert launcher._next_spare_at - time.monotonic() > launcher_module.SPARE_DELAY_S


def test_a_session_without_a_spare_starts_on_request(make_launcher):
    from fastsam3d_web.access import SESSION_SPARE_ENV

    launcher = make_launcher(1)
    port, _ = launcher.start_session(HOME)
    assert _listens(port) and launcher.running() == 1
    (process,) = launcher._sessions
    if Path(f"/proc/{process.pid}/environ").is_file():
        assert SESSION_SPARE_ENV not in _environment(process.pid)
    launcher.stop()
    assert process.wait(timeout=30) is not None and launcher.running() == 0
    launcher.keep_spare(HOME)
    assert launcher.running() == 0, "a spare started after stop()"


def test_the_model_waits_for_a_tabs_first_frame():
    """Frames sent before a tab connected (the views render as the server starts) reach nobody:
    the held-back work (the model's load) starts only after a frame sent once a tab is there."""
    from trame.app import get_server

    from fastsam3d_web import rendering

    server = get_server("test-web-spare", client_type="vue3")
    loaded: list[float] = []
    rendering.ACTIVITY.tab_seen = False
    rendering.after_first_frame(server, lambda: loaded.append(time.monotonic()))
    sent = rendering._FrameSent(lambda content, meta: None, rendering._FocusedRender.__new__(
        rendering._FocusedRender))  # fmt: skip

    async def scenario() -> None:
        sent(b"frame", {})  # the server's own first frames, no tab yet
        await asyncio.sleep(rendering.AFTER_FIRST_FRAME_S + 0.2)
        assert loaded == [], "the model's load started before any tab had a frame"
        server.controller.on_client_connected()
        sent(b"frame", {})
        await asyncio.sleep(rendering.AFTER_FIRST_FRAME_S + 0.2)
        assert len(loaded) == 1

    try:
        asyncio.run(scenario())
    finally:
        rendering.ACTIVITY.after_first_frame.clear()


# -- fastsam3d web's own spare, as real processes --------------------------------------------


# The same real launcher as test_web_security's (a fixture, under this module's name).
launcher_process = test_web_security.launcher


def _spare_port(server: subprocess.Popen, seconds: float = 120) -> tuple[int, int]:
    """The launcher's spare session (its process id and port) once it listens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in _children(server.pid):
            port = int(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2])
            if _listens(port):
                return pid, port
        time.sleep(0.2)
    raise AssertionError("no spare session listened")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_fastsam3d_web_starts_a_spare_session_before_the_first_tab(launcher_process):
    port, server, sessions = launcher_process
    pid, spare_port = _spare_port(server)
    sessions.append(pid)
    assert _open_session(port)[0] == spare_port
    assert _children(server.pid) == [pid]  # one session at most: no other spare


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")
def test_a_spare_session_ends_when_its_launcher_is_killed(launcher_process):
    port, server, sessions = launcher_process
    pid, _ = _spare_port(server)
    sessions.append(pid)
    server.kill()  # no chance to stop its sessions
    server.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the spare outlived its launcher"


# -- a real session as the spare, its no-tab timeout shortened --------------------------------

# A session (fastsam3d_web.session) whose no-tab timeout is SHORT_IDLE_S: set before the module
# that reads it (fastsam3d_web.start) is imported.
SHORT_IDLE_S = 3
SHORT_IDLE_SESSION = (
    "import sys, fastsam3d_web.server as server\n"
    f"server.SESSION_IDLE_S = {SHORT_IDLE_S}\n"
    "from fastsam3d_web.session import main\n"
    "raise SystemExit(main())\n"
)


@pytest.fixture
def session_launcher():
    """A launcher (at most 1 session) whose sessions are real ones (the oracle)."""
    from fastsam3d_web.launcher import Launcher
    from fastsam3d_web.start import PageSettings, session_environment

    settings = PageSettings(image=CT_IMAGE, model="oracle", truth=CT_LABEL,
                            truth_value=SPLEEN_LABEL)  # fmt: skip
    command = [sys.executable, "-c", SHORT_IDLE_SESSION]
    launcher = Launcher(command, "127.0.0.1", 1, session_environment(settings))
    yield launcher
    launcher.stop()


def _ends_within(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_spare_handed_out_to_no_tab_ends_as_a_cold_session_does(session_launcher):
    """The redirect to the spare was never followed (a closed tab, a link preview, ``curl``):
    the spare ends after the no-tab timeout, as a session started on request does; it held one
    of --sessions for good, and every later tab got "All 1 sessions are in use"."""
    launcher = session_launcher
    launcher.keep_spare(HOME)
    spare = launcher._spare
    assert launcher.start_session(HOME)[0] == spare.port  # handed out; no tab comes
    assert _ends_within(spare.process, SHORT_IDLE_S + 20), "the spare waits for its tab for good"
    assert launcher.start_session(HOME) is not None  # the next tab gets a session


@pytest.mark.skipif(not Path("/bin/sh").is_file(), reason="needs a POSIX shell")
def test_a_spare_waits_for_its_tab_whatever_its_parent_process(session_launcher):
    """A spare ends with its launcher, known by its end of a pipe, not by its parent's process
    id: that is another process where the launcher's Python starts the real one (Windows'
    virtual environments) or, here, a shell in between."""
    launcher = session_launcher
    launcher.session_command = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *launcher.session_command]
    launcher.keep_spare(HOME)
    spare = launcher._spare
    assert launcher.start_session(HOME)[0] == spare.port  # listens: its server is ready
    time.sleep(SHORT_IDLE_S / 2)
    assert _listens(spare.port), "the spare ended as soon as it was ready"
