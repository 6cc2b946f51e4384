"""``fastsam3d serve`` as a user starts it: a process that serves until Ctrl-C."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from fastsam3d_core import build_model

pytest.importorskip("ray.serve")


def test_serve_answers_and_stops_on_ctrl_c(tmp_path: Path):
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save(build_model("fastsam3d").state_dict(), weights)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache")}
    command = [str(Path(sys.executable).with_name("fastsam3d")), "serve", "--weights", str(weights),
               "--port", str(port), "--device", "cpu", "--token", "t0ken"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = _line_within(server, seconds=180)
        assert line.startswith(f"serving fastsam3d at http://127.0.0.1:{port}/v1"), line
        models = _get(f"http://127.0.0.1:{port}/v1/models")
        assert list(models["models"]) == ["fastsam3d"]
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) in (0, 130)  # 130: the usual status after Ctrl-C
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _line_within(process: subprocess.Popen, seconds: float) -> str:
    """The process's first line on stdout, or fail after ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    assert ready, f"nothing printed within {seconds} s"
    return process.stdout.readline().decode()


def _get(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer t0ken"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())
