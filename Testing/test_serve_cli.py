"""``fastsam3d serve`` as a user starts it: a process that serves until Ctrl-C."""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import free_port, wait_for_port

from fastsam3d_core import build_model

pytest.importorskip("ray.serve")


def test_serve_answers_and_stops_on_ctrl_c(tmp_path: Path):
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save(build_model("fastsam3d").state_dict(), weights)
    port = free_port()
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


def test_serve_joins_a_running_ray_cluster_and_autoscales(tmp_path: Path):
    """``--address`` joins a cluster started before (``ray start --head``); ``--autoscale`` and
    ``--gpus-per-replica`` reach the deployment there."""
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save(build_model("fastsam3d").state_dict(), weights)
    gcs, port = free_port(), free_port()
    # A cluster as it should run: token authentication on, its nodes on loopback here.
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}  # fmt: skip
    bin_dir = Path(sys.executable).parent
    # Its own temporary folder (short: Ray's socket paths must stay under 108 characters), so
    # that no later ray.init() on this machine finds the address of this stopped cluster.
    ray_dir = tempfile.mkdtemp(prefix="ray-")
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={ray_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    server = None
    try:
        wait_for_port(gcs, seconds=120)
        server = subprocess.Popen(
            [str(bin_dir / "fastsam3d"), "serve", "--weights", str(weights), "--device", "cpu",
             "--address", f"127.0.0.1:{gcs}", "--autoscale", "1,2", "--gpus-per-replica", "0",
             "--port", str(port), "--token", "t0ken"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        line = _line_within(server, seconds=180)
        assert line.startswith(f"serving fastsam3d at http://127.0.0.1:{port}/v1"), line
        assert list(_get(f"http://127.0.0.1:{port}/v1/models")["models"]) == ["fastsam3d"]
        deployment = _deployments(gcs, env)["fastsam3d"]["EncoderService"]
        scaling = deployment["deployment_config"]["autoscaling_config"]
        assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 2)
        assert deployment["deployment_config"]["ray_actor_options"].get("num_gpus", 0) == 0
        server.send_signal(signal.SIGTERM)  # as a process manager stops it
        assert server.wait(timeout=60) in (0, 130)
        assert "fastsam3d" not in _deployments(gcs, env), "its application stays in the cluster"
    finally:
        for process in (server, head):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        shutil.rmtree(ray_dir, ignore_errors=True)


def _deployments(gcs: int, env: dict) -> dict:
    """The Serve applications in the cluster and their deployments' details, read by another
    driver: {application: {deployment: details}}."""
    code = f"""
import json, ray
from ray import serve
ray.init(address="127.0.0.1:{gcs}", log_to_driver=False)
details = serve.context._get_global_client().get_serve_details()
print(json.dumps({{name: app["deployments"] for name, app in details["applications"].items()}}))
"""
    read = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert read.returncode == 0, read.stderr
    return json.loads(read.stdout.strip().splitlines()[-1])


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
