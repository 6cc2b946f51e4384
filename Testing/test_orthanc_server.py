"""The tests' Orthanc (Testing/orthanc_server.py) ends with the tests that started it, also when
they are killed: ``timeout`` sends SIGTERM, which runs no ``finally``, and SIGKILL runs nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orthanc_server import require_orthanc

HERE = Path(__file__).resolve().parent
#: How long the kernel and init may take to end Orthanc and reap it.
GONE_SECONDS = 10

#: A stand-in for a pytest run: starts Orthanc, says its process ID, then waits to be killed.
STARTER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from orthanc_server import OrthancServer
server = OrthancServer(Path(sys.argv[2])).start()
print(server._process.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, ended but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_orthanc_ends_when_the_tests_are_killed(tmp_path, signal_number):
    require_orthanc()
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(HERE), str(tmp_path / "orthanc")],
        stdout=subprocess.PIPE,
        text=True,
    )
    orthanc_pid = None
    try:
        line = starter.stdout.readline()
        assert line.strip().isdigit(), f"the starter said {line!r} (exit {starter.poll()})"
        orthanc_pid = int(line)
        assert _alive(orthanc_pid)
        starter.send_signal(signal_number)
        starter.wait(timeout=30)
        deadline = time.monotonic() + GONE_SECONDS
        while _alive(orthanc_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(orthanc_pid), (
            f"Orthanc (pid {orthanc_pid}) outlived its parent by {GONE_SECONDS} s"
        )
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(timeout=30)
        if orthanc_pid is not None and _alive(orthanc_pid):  # the failure above: not left behind
            os.kill(orthanc_pid, signal.SIGKILL)
