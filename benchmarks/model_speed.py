"""Encoder and decoder time of both models, exact backend against the plain reference path.

Usage: python benchmarks/model_speed.py [--repeats 5] [--threads 2] [--device cpu] [--json out.json]

Both paths run in the same process on the same random weights and inputs; medians after one
warm-up call. The reference path is the plain one (``set_attention_backend("reference")``):
textbook attention over the zero-padded windows, module-by-module layers. ``fastsam3d bench`` is
the complete suite (click, memory, FLOPs, dtypes).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import torch

from fastsam3d_core import MODEL_REGISTRY, build_model


def median_seconds(call: Callable[[], object], repeats: int, device: torch.device) -> float:
    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()
    synchronise()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronise()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, repeats: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(name, device=device)
    image = torch.randn(1, 1, 128, 128, 128, device=device)
    points = torch.tensor([[[40.0, 70.0, 90.0]]], device=device)
    labels = torch.tensor([[1]], device=device)
    result = {}
    with torch.inference_mode():
        embedding = model.encode(image)
        mask = torch.zeros(1, 1, 32, 32, 32, device=device)
        for backend in ("exact", "reference"):
            model.set_attention_backend(backend)
            result[f"encode_{backend}_s"] = median_seconds(
                lambda: model.encode(image), repeats, device
            )
            result[f"decode_{backend}_s"] = median_seconds(
                lambda: model.decode(embedding, points, labels, mask), repeats * 4, device
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=list(MODEL_REGISTRY))
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, torch {torch.__version__}, {args.threads} threads"
    print(f"{machine}, device {device}, medians of {args.repeats} (decode ×4)")
    print(f"{'model':17s} {'part':7s} {'exact':>10s} {'reference':>10s} {'ref/exact':>9s}")
    results = {}
    for name in args.models:
        results[name] = measure(name, args.repeats, device)
        for part in ("encode", "decode"):
            exact, reference = (
                results[name][f"{part}_exact_s"],
                results[name][f"{part}_reference_s"],
            )
            print(
                f"{name:17s} {part:7s} {exact * 1e3:8.1f}ms {reference * 1e3:8.1f}ms "
                f"{reference / exact:8.2f}×"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"machine": machine, "device": str(device), "results": results}, handle, indent=2
            )


if __name__ == "__main__":
    main()
