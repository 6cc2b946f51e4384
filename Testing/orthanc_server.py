"""Orthanc with its DICOMweb plugin, started by the tests on loopback ports and stopped by them.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages (``.ci/run`` installs them where missing):
the server gets a temporary storage folder and a configuration of its own, listens on a free
127.0.0.1 HTTP port with DICOM networking off, and logs to a file that failures quote. Where
Orthanc is not installed the tests that need it skip, except under
``$FASTSAM3D_REQUIRE_SHARED_DATA`` (CI), where they fail. On Linux, Orthanc dies with the tests
that started it, also when they are killed (``timeout`` sends SIGTERM, which runs no cleanup).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ORTHANC = Path(os.environ.get("FASTSAM3D_ORTHANC", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get(
        "FASTSAM3D_ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    )
)
#: How long Orthanc may take to answer after it was started (it creates its database first).
START_SECONDS = 30
#: Run as ``python -c _DIE_WITH_PARENT PARENT_PID PROGRAM ARGS...``: asks Linux to SIGKILL this
#: process when the thread that started it ends (PR_SET_PDEATHSIG, kept across exec), then
#: becomes PROGRAM. Not subprocess's preexec_fn, which may deadlock where threads run (they do
#: in the tests: servers, workers). PDEATHSIG follows the starting *thread*: start Orthanc from
#: one that outlives it (pytest's fixtures run on the main thread).
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG): " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):  # the parent ended before prctl: nobody would stop us
    sys.exit("the process that started Orthanc has ended")
os.execv(sys.argv[2], sys.argv[2:])
"""


def require_orthanc() -> None:
    """Skip the calling test where Orthanc or its DICOMweb plugin is missing; fail instead when
    ``$FASTSAM3D_REQUIRE_SHARED_DATA`` is set (CI installs both)."""
    missing = [str(path) for path in (ORTHANC, DICOMWEB_PLUGIN) if not path.is_file()]
    if not missing:
        return
    reason = (
        f"Orthanc not installed ({' and '.join(missing)} missing; Debian packages orthanc "
        "and orthanc-dicomweb)"
    )
    if os.environ.get("FASTSAM3D_REQUIRE_SHARED_DATA"):
        pytest.fail(f"{reason}, and FASTSAM3D_REQUIRE_SHARED_DATA is set", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OrthancServer:
    """One Orthanc process with its own folder (storage, configuration, log).

    Attributes:
        rest: Orthanc's REST API, e.g. ``http://127.0.0.1:PORT``.
        dicomweb: the DICOMweb service's base URL, ``{rest}/dicom-web``.
        users: user -> password when HTTP basic authentication is on (else empty).
        log: Orthanc's log file.
    """

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.users = dict(users or {})
        self.port = _free_port()
        self.rest = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.rest}/dicom-web"
        self.log = self.folder / "orthanc.log"
        self._process: subprocess.Popen | None = None

    def _configuration(self) -> dict:
        storage = str(self.folder / "storage")
        return {
            "Name": "FastSAM3D tests",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # loopback only
            "DicomServerEnabled": False,
            "DicomPort": _free_port(),  # not opened; a free one in case a version opens it
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "SaveJobs": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }

    def start(self) -> OrthancServer:
        """Start Orthanc and return once its REST API and DICOMweb answer (bounded wait)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self._configuration(), indent=2), encoding="utf-8")
        command = [str(ORTHANC), "--verbose", str(config)]
        if sys.platform.startswith("linux"):
            wrapper = [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid())]
            command = wrapper + command
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise AssertionError(f"Orthanc exited ({self._process.returncode}):\n{self.tail()}")
            try:
                self.get("/dicom-web/studies")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"Orthanc did not answer within {START_SECONDS} s:\n{self.tail()}"
                    ) from None
                time.sleep(0.1)

    def _request(self, method: str, path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"{self.rest}{path}", data=data, method=method)
        if self.users:
            user, password = next(iter(self.users.items()))
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read()

    def get(self, path: str) -> bytes:
        """GET ``path`` of the REST API (with the first registered user's credentials)."""
        return self._request("GET", path)

    def upload(self, folder: Path) -> list[str]:
        """POST every file of ``folder`` to ``/instances``; returns Orthanc's instance IDs."""
        ids = []
        for file in sorted(Path(folder).iterdir()):
            try:
                answer = json.loads(self._request("POST", "/instances", file.read_bytes()))
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")
                raise AssertionError(f"Orthanc refused {file}: {error} {detail}") from None
            ids.append(answer["ID"])
        return ids

    def tail(self, lines: int = 30) -> str:
        """The end of Orthanc's log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop Orthanc: terminate, wait, kill if it does not end."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running_orthanc(folder: Path, users: dict[str, str] | None = None) -> Iterator[OrthancServer]:
    """An Orthanc started in ``folder`` (skips where not installed) and stopped afterwards."""
    require_orthanc()
    server = OrthancServer(folder, users).start()
    try:
        yield server
    finally:
        server.stop()
