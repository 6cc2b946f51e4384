"""``fastsam3d serve`` as a user starts it: a process that serves until Ctrl-C."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import free_port, invoke_cli, line_within, wait_for_port

from fastsam3d_core import build_model

pytest.importorskip("ray.serve")


def test_serve_answers_and_stops_on_ctrl_c(tmp_path: Path):
    """With the token from a file (out of `ps`), and Ray's own servers on loopback only."""
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save(build_model("fastsam3d").state_dict(), weights)
    (tmp_path / "token").write_text("t0ken\n")
    port = free_port()
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache")}
    # Started with SIGINT ignored, as a script's background job is (and as CI's full run once
    # left it): Ctrl-C must stop the service all the same.
    ignoring = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, "
                "signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"]  # fmt: skip
    command = [*ignoring, str(Path(sys.executable).with_name("fastsam3d")), "serve", "--weights",
               str(weights), "--port", str(port), "--device", "cpu",
               "--token-file", str(tmp_path / "token")]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = line_within(server, seconds=180)
        assert line.startswith(f"serving fastsam3d at http://127.0.0.1:{port}/v1"), line
        models = _get(f"http://127.0.0.1:{port}/v1/models")
        assert list(models["models"]) == ["fastsam3d"]
        assert b"t0ken" not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        listening = _listening_addresses({server.pid, *_descendants(server.pid)})
        assert len(listening) >= 4, listening  # the service, Ray's GCS, raylet, workers...
        exposed = [entry for entry in listening if not entry[0].is_loopback]
        # But for the one that Ray Serve binds to all interfaces whatever its options: a
        # replica's server for calls between deployments (behind Ray's token authentication).
        assert len(exposed) <= 1 and all(name == "ray::ServeRepli" for *_, name in exposed), exposed
        server.send_signal(signal.SIGINT)
        # Ray takes ~10 s to stop here, but over 60 s once on a loaded 2-core machine (a CI run
        # beside benchmarks): the bound is on stopping at all, not on its speed.
        assert server.wait(timeout=180) in (0, 130)  # 130: the usual status after Ctrl-C
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_refuses_an_unusable_token_file_in_one_line(tmp_path: Path):
    (tmp_path / "empty").write_text("\n")
    for path, reason in ((tmp_path / "empty", "its first line is empty"),
                         (tmp_path / "missing", "No such file or directory")):  # fmt: skip
        result = invoke_cli(["serve", "--token-file", path])
        assert result.exit_code == 2 and reason in result.stderr, result.output
        assert "Traceback" not in result.output


def _descendants(pid: int) -> set[int]:
    """The processes started by ``pid``, and by those, and so on (Ray's, for a driver)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue  # /proc/self, /proc/net, …
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # one that just ended
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _listening_addresses(pids: set[int]) -> list:
    """``(address, port, process name)`` of each TCP socket these processes listen on (from
    /proc)."""
    owners = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue  # one that just ended
        owners.update({link[8:-1]: name for link in links if link.startswith("socket:[")})
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in owners:  # 0A: LISTEN
                raw_address, raw_port = fields[1].split(":")
                raw = bytes.fromhex(raw_address)
                # The kernel writes the address as 32-bit words in the machine's byte order.
                words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
                if sys.byteorder == "little":
                    words = [word[::-1] for word in words]
                address = ipaddress.ip_address(b"".join(words))
                address = getattr(address, "ipv4_mapped", None) or address
                found.append((address, int(raw_port, 16), owners[fields[9]]))
    return found


def test_serve_joins_a_running_ray_cluster_and_autoscales(tmp_path: Path):
    """``--address`` joins a cluster started before (``ray start --head``); ``--autoscale`` and
    ``--gpus-per-replica`` reach the deployment there; the token comes from the environment;
    without the guard in the cluster's proxy, the replica itself refuses a stalled upload."""
    torch.manual_seed(0)
    weights = tmp_path / "seeded.pth"
    torch.save(build_model("fastsam3d").state_dict(), weights)
    gcs, port = free_port(), free_port()
    # A cluster as it should run: token authentication on, its nodes on loopback here.
    env = {**os.environ, "FASTSAM3D_CACHE_DIR": str(tmp_path / "cache"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "FASTSAM3D_SERVE_TOKEN": "t0ken"}  # fmt: skip
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
             "--port", str(port), "--body-timeout", "3"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        line = line_within(server, seconds=180)
        assert line.startswith(f"serving fastsam3d at http://127.0.0.1:{port}/v1"), line
        assert "/-/routes" in line_within(server, seconds=10)  # said, as it is not guarded
        assert list(_get(f"http://127.0.0.1:{port}/v1/models")["models"]) == ["fastsam3d"]
        assert _stalled_upload_reply(port).startswith(b"HTTP/1.1 408")
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


def _stalled_upload_reply(port: int) -> bytes:
    """What the service answers within 60 s to a client that sends 100 kB of a crop and stalls."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(
            b"POST /v1/encode?model=fastsam3d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken"
            b"\r\nX-Crop-Dtype: float32\r\nContent-Length: %d\r\n\r\n"
            % (128**3 * 4)
            + bytes(100_000)
        )
        return connection.recv(4096)


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


def _get(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer t0ken"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())
