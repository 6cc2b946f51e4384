"""Fine-tuning on a GPU: a tiny validated run under bfloat16 autocast, and two NCCL processes.

1. ``finetune``'s validated recipe on the shared CT's liver crop (a sphere in noise where
   SimpleITK or the data are missing), seeded FastSAM3D, under the loop's bfloat16 autocast:
   the loss of every step finite, the base and the kept state's Dice, time per step and peak
   memory.
2. Two processes joined by NCCL (one GPU each) against one process with the same global batch
   and one crop per forward pass: the adapters must agree within 1e-4 (3 % of an Adam step), the
   CPU test's bound; on a GPU it is a measurement (the backward's atomics are not
   deterministic). Needs two GPUs; with one it says so.

    python benchmarks/gpu_training.py [--device cuda] [--steps 12] [--json out.json]

Exit status 1 when a check fails. ``--device cpu`` runs the same (gloo for the two processes),
as a dry run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_training import seeded, training_case

from fastsam3d_core.training import finetune as recipe
from fastsam3d_core.training.loop import LoopConfig, Ranks, join_group, leave_group

LEARNING_RATE = 3e-3  # fastsam3d finetune's default


def tiny_finetune(device: torch.device, steps: int) -> dict:
    """A validated run; its record (checks included)."""
    model = seeded("fastsam3d", device)
    case = training_case()
    config = LoopConfig(steps=steps, learning_rate=LEARNING_RATE)
    settings = recipe.ValidationSettings(every=max(1, steps // 3), clicks=3, keep_last=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    outcome = recipe.finetune_validated(model, [case], [case], config, Ranks(0, 1, device),
                                        settings, clicks=3)  # fmt: skip
    losses = [r["loss"] for r in outcome.history]
    return {
        "check": "finetune, bfloat16 autocast" if device.type == "cuda" else "finetune, float32",
        "ok": all(math.isfinite(v) for v in losses),
        "losses": losses,
        "dice_before": outcome.dice_before,
        "dice_after": outcome.dice_after,
        "best_step": outcome.best.best_step,
        "seconds_per_step": sorted(r["seconds"] for r in outcome.history)[len(losses) // 2],
        "total_seconds": time.perf_counter() - started,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else None,
    }  # fmt: skip


def _adapters(ranks: Ranks, accumulation: int = 1) -> dict[str, torch.Tensor]:
    """The adapters after 2 steps with a global batch of 2 (the case twice), one crop per
    forward pass in each process (``accumulation`` 2 in one process): the encoder's batch size
    changes its rounding, and the sampled clicks follow any change of the prediction."""
    from fastsam3d_core.training.finetune import finetune

    torch.manual_seed(0)
    model = seeded("fastsam3d", ranks.device)
    case = training_case()
    config = LoopConfig(steps=2, learning_rate=LEARNING_RATE, batch_size=2,
                        accumulation=accumulation)  # fmt: skip
    finetune(model, [case, case], config, ranks, clicks=2)
    return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}


def _rank(rank: int, port: int, device_type: str, folder: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    ranks = join_group(torch.device(device_type))
    try:
        adapters = _adapters(ranks)
        if ranks.main:
            torch.save(adapters, Path(folder) / "parallel.pt")
    finally:
        leave_group()


def two_processes(device: torch.device) -> dict:
    """NCCL (gloo on the CPU) with two processes against one; the largest difference."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return {"check": "two processes, nccl", "ok": True,
                "skipped": f"needs 2 GPUs, {torch.cuda.device_count()} here"}  # fmt: skip
    single = _adapters(Ranks(0, 1, device), accumulation=2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(_rank, args=(port, device.type, folder), nprocs=2)
        parallel = torch.load(Path(folder) / "parallel.pt", weights_only=True)
    differences = torch.cat([(parallel[k] - v).abs().flatten() for k, v in single.items()])
    largest = float(differences.max())
    # Adam moves a weight by about the learning rate whatever its gradient: the all-reduce's
    # rounding of a gradient near Adam's eps shows, but within 3 % of a step (as on the CPU).
    return {"check": f"two processes, {backend}", "ok": largest < 1e-4,
            "largest_difference": largest,
            "fraction_over_1e-6": float((differences > 1e-6).float().mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    rows = [tiny_finetune(device, arguments.steps), two_processes(device)]
    for row in rows:
        shown = {k: v for k, v in row.items() if k != "losses"}
        print(("ok    " if row["ok"] else "FAILED ") + json.dumps(shown))
    if arguments.json:
        arguments.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    sys.exit(0 if all(row["ok"] for row in rows) else 1)


if __name__ == "__main__":
    main()
