"""Load benchmark of the encoder service: simulated users clicking against Ray Serve on loopback.

Each user opens a session on the example CT through :class:`RemotePredictor` and, for each of
``--crops`` crops, clicks once far from the others (the service encodes) and then ``--clicks``
times inside it (decoded locally). Reported per configuration (users × replicas): encode and
click latency p50/p99, encodes per second, bytes per crop. Seeded weights: the time is the
real model's, the masks are not. Bounded: every configuration runs its users once.

    python benchmarks/bench_serve.py --users 1 4 8 --replicas 1 2 --json docs/benchmarks-serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# First clicks of the crops: the example CT's spleen, liver and spine, each ≥ 100 mm apart.
CROP_CENTRES = [(-112.0, 110.3, 160.3), (60.0, 150.0, 140.0), (0.0, 230.0, 130.0)]


def run_user(url: str, crops: int, clicks: int, dtype: str, times: dict[str, list[float]]) -> None:
    from fastsam3d_core import Session
    from fastsam3d_core.examples import example_ct_path
    from fastsam3d_core.io import read_volume
    from fastsam3d_core.serving import RemotePredictor

    session = Session(read_volume(example_ct_path()), RemotePredictor(url, crop_dtype=dtype))
    rng = np.random.default_rng(threading.get_ident() % 2**32)
    for centre in CROP_CENTRES[:crops]:
        start = time.perf_counter()
        session.add_point(centre)
        times["encode"].append(time.perf_counter() - start)
        for _ in range(clicks):
            point = np.array(centre) + rng.uniform(-6, 6, 3)
            start = time.perf_counter()
            session.add_point(point, positive=bool(rng.integers(2)))
            times["click"].append(time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def measure(users: int, replicas: int, args: argparse.Namespace, weights: Path) -> dict:
    import ray
    from ray import serve

    from fastsam3d_core.serving.service import ServiceOptions, start_service

    options = ServiceOptions(
        weights={"fastsam3d": str(weights)},
        device=args.device,
        max_batch_size=args.max_batch_size,
        decoder_dir=str(weights.parent / "decoders"),
    )
    url = start_service(options, replicas, port=args.port)
    try:
        run_user(url, 1, 0, args.dtype, {"encode": [], "click": []})  # warm-up: decoder cached
        times: dict[str, list[float]] = {"encode": [], "click": []}
        threads = [
            threading.Thread(
                target=run_user, args=(url, args.crops, args.clicks, args.dtype, times)
            )
            for _ in range(users)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    finally:
        serve.shutdown()
        ray.shutdown()
    row = {
        "users": users,
        "replicas": replicas,
        "encode_p50_ms": percentile(times["encode"], 50),
        "encode_p99_ms": percentile(times["encode"], 99),
        "click_p50_ms": percentile(times["click"], 50),
        "click_p99_ms": percentile(times["click"], 99),
        "encodes_per_s": len(times["encode"]) / wall,
        "wall_s": wall,
    }
    print(
        f"{users:>5} users, {replicas} replica(s): encode p50 {row['encode_p50_ms']:.0f} ms, "
        f"p99 {row['encode_p99_ms']:.0f} ms; click p50 {row['click_p50_ms']:.1f} ms, "
        f"p99 {row['click_p99_ms']:.1f} ms; {row['encodes_per_s']:.2f} encodes/s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crops", type=int, default=2, choices=range(1, len(CROP_CENTRES) + 1))
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from fastsam3d_core import build_model
    from fastsam3d_core.benchmark import cpu_name
    from fastsam3d_core.serving import protocol

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "fastsam3d-seeded.pth"
        torch.manual_seed(0)
        torch.save(build_model("fastsam3d").state_dict(), weights)
        print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), {args.dtype} crops")
        rows = [measure(u, r, args, weights) for r in args.replicas for u in args.users]
    crop_bytes = protocol.crop_bytes(args.dtype)
    report = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "crop_bytes": crop_bytes,
        "embedding_bytes": protocol.EMBEDDING_BYTES,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "rows": rows,
        "median_click_ms": statistics.median(r["click_p50_ms"] for r in rows),
    }
    print(f"bytes per crop: {crop_bytes} up, {report['embedding_bytes']} down")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
