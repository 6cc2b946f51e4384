"""What each drawn prompt costs per interaction, against a point click in the same run.

Usage: python benchmarks/bench_prompts.py [--repeats 9] [--shape 512,512,300] [--json out.json]

On a CT-sized volume (synthetic, 0.7×0.7×1.0 mm) with the seeded FastSAM3D, every interaction
is timed warm: its crop's image embedding is already cached (as for every click after a crop's
first), then undone, so each repeat starts from the same state. Then the decoder alone with 1 to
32 points, for the scribble's point cap (docs/prompts.md). Prints the CPU and the torch
threads; medians of ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
from seeded import seeded_model

from fastsam3d_core.benchmark.machine import cpu_name
from fastsam3d_core.benchmark.suite import ct_sized_volume
from fastsam3d_core.session import ModelPredictor, Session


def interactions(volume: Any) -> dict[str, Callable[[Session], Any]]:
    """One interaction of each kind around the volume's centre, in RAS."""
    centre = np.array(volume.shape, dtype=float) / 2
    ras = volume.index_to_ras
    k = centre[2]
    ring = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    contour = ras(
        np.stack(
            [centre[0] + 30 * np.cos(ring), centre[1] + 30 * np.sin(ring), np.full(32, k)], axis=1
        )
    )
    stroke = ras(np.stack([centre + [-40, -10, -5], centre, centre + [40, 15, 5]]))
    box = ras(np.stack([centre - [40, 40, 30], centre + [40, 40, 30]]))
    return {
        "point": lambda s: s.add_point(ras(centre)),
        "box": lambda s: s.add_box(box[0], box[1]),
        "negative box": lambda s: s.add_box(box[0], box[1], positive=False),
        "scribble": lambda s: s.add_scribble(stroke),
        "lasso": lambda s: s.add_lasso(contour),
    }


def time_interactions(session: Session, volume: Any, repeats: int) -> dict[str, dict]:
    """Median seconds of each interaction, the embedding cached; each undone after."""
    timings: dict[str, dict] = {}
    for name, interact in interactions(volume).items():
        interact(session)  # warm-up: the encoder runs here, once per crop
        session.undo()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = interact(session)
            samples.append(time.perf_counter() - start)
            if result.encoder_ran:
                raise RuntimeError(f"the {name} re-ran the encoder: its crop was not cached")
            session.undo()
        timings[name] = {"median_s": statistics.median(samples), "samples_s": samples}
    point = timings["point"]["median_s"]
    for timing in timings.values():
        timing["vs_point"] = timing["median_s"] / point
    return timings


def time_decoder_points(model: Any, repeats: int) -> dict[int, float]:
    """Median seconds of one decode (prompt encoder + mask decoder) with N points."""
    image = torch.zeros(1, 1, 128, 128, 128)
    with torch.inference_mode():
        embedding = model.encode(image)
        medians = {}
        for count in (1, 2, 4, 8, 12, 16, 24, 32):
            points = torch.rand(1, count, 3) * 127
            labels = torch.ones(1, count, dtype=torch.long)
            model.decode(embedding, points, labels, None)
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.decode(embedding, points, labels, None)
                samples.append(time.perf_counter() - start)
            medians[count] = statistics.median(samples)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--shape", default="512,512,300")
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    shape = tuple(int(n) for n in options.shape.split(","))
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = seeded_model("fastsam3d")
    volume = ct_sized_volume(shape)
    session = Session(volume, ModelPredictor(model))
    report = {
        "cpu": cpu_name(),
        "shape": shape,
        "interactions": time_interactions(session, volume, options.repeats),
        "decode_points_s": time_decoder_points(model, options.repeats),
    }
    print(f"{'interaction':<14} {'median ms':>10} {'× point':>8}")
    for name, timing in report["interactions"].items():
        print(f"{name:<14} {1000 * timing['median_s']:>10.1f} {timing['vs_point']:>8.2f}")
    print(
        "decode with N points (ms): "
        + ", ".join(f"{n}: {1000 * s:.1f}" for n, s in report["decode_points_s"].items())
    )
    if options.json:
        with open(options.json, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()
