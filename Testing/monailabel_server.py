"""MONAI Label with the FastSAM3D app, started by the tests on a loopback port and stopped by them.

The server runs as users run it, ``fastsam3d monailabel --studies URL ...`` in its own process,
against an Orthanc the tests started (``orthanc_server.py``). The packages MONAI Label needs come
with the test extra; MONAI Label itself and pydicom-seg install without their declared
requirements (docs/monailabel.md says why), so where this environment lacks them they are
installed once per test run into a folder of their own, named on the server's ``PYTHONPATH``:
the test environment itself is not changed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fastsam3d_monailabel.launch import NO_DEPS_REQUIREMENTS

#: Seconds MONAI Label may take to answer once started (it loads the model and asks the PACS).
START_SECONDS = 120


def monailabel_path(folder: Path) -> str:
    """A ``PYTHONPATH`` entry holding MONAI Label: "" where this environment has it, else a
    folder it is installed into (``pip install --no-deps --target``). Skips where it cannot be
    installed (no package index), except under ``$FASTSAM3D_REQUIRE_SHARED_DATA`` (CI)."""
    if importlib.util.find_spec("monailabel") and importlib.util.find_spec("pydicom_seg"):
        return ""
    target = folder / "monailabel-packages"
    if not (target / "monailabel").is_dir():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                   "--target", str(target), *NO_DEPS_REQUIREMENTS]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            reason = f"MONAI Label could not be installed: {done.stderr.strip()[-400:]}"
            if os.environ.get("FASTSAM3D_REQUIRE_SHARED_DATA"):
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
    return str(target)


class MonaiLabelServer:
    """One MONAI Label process with the app; ``url`` is its base, e.g. ``http://127.0.0.1:PORT``."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def infer(
        self, model: str, image: str, params: dict | str, output: str = "json"
    ) -> tuple[int, dict[str, str], bytes]:
        """``POST /infer/{model}?image=…&output=…`` with the multipart field ``params`` (a dict
        is sent as JSON, a str as it is): (status, headers, body)."""
        text = params if isinstance(params, str) else json.dumps(params)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n"
                f"{text}\r\n--{boundary}--\r\n").encode()  # fmt: skip
        request = urllib.request.Request(
            f"{self.url}/infer/{model}?image={image}&output={output}",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_monailabel(
    folder: Path, studies: str, arguments: list[str], port: int, direct: bool = False
) -> Iterator[MonaiLabelServer]:
    """Start ``fastsam3d monailabel --studies studies ARGUMENTS`` on ``port`` with its app,
    caches and log in ``folder``; stop it with Ctrl-C (SIGINT) at the end. ``direct`` starts
    MONAI Label's server itself as a department's service would (``python -m
    fastsam3d_monailabel.launch start_server``, ARGUMENTS being its ``--conf`` pairs)."""
    from conftest import interrupt

    folder.mkdir(parents=True, exist_ok=True)
    extra_path = monailabel_path(folder.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    env["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(folder / "dicom-cache")
    env["MONAI_LABEL_SESSION_PATH"] = str(folder / "sessions")
    env.setdefault("OMP_NUM_THREADS", "2")
    log = folder / "monailabel.log"
    command = [sys.executable, "-m", "fastsam3d_core", "monailabel", "--studies", studies,
               "--port", str(port), "--app-dir", str(folder / "app"), *arguments]  # fmt: skip
    if direct:
        from fastsam3d_monailabel import prepare_app_folder

        app = prepare_app_folder(folder / "app")
        command = [sys.executable, "-m", "fastsam3d_monailabel.launch", "start_server",
                   "--app", str(app), "--studies", studies, "--host", "127.0.0.1",
                   "--port", str(port), *arguments]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, cwd=folder)  # fmt: skip
    server = MonaiLabelServer(process, port, log)
    try:
        _wait_until_answering(server)
        yield server
    finally:
        interrupt(process, 20)


def _wait_until_answering(server: MonaiLabelServer) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"MONAI Label exited ({server.process.returncode}):\n"
                                 f"{server.tail()}")  # fmt: skip
        try:
            if server.get("/info/")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"MONAI Label did not answer within {START_SECONDS} s:\n{server.tail()}")
