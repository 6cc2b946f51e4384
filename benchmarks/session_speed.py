"""Click latency of a session on a CT-sized volume (512×512×300, 0.7×0.7×1.0 mm).

Usage: python benchmarks/session_speed.py [--model fastsam3d] [--repeats 5] [--threads 2]

Times, with medians over repeats after a warm-up:
  * a click that opens a new crop (resampling, z-normalisation, encoder, decoder, paste-back);
  * a click inside the current crop (decoder with the cached embedding, paste-back);
and, as a reference measured in the same run, the encoder and the decoder alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fastsam3d_core import build_model
from fastsam3d_core.geometry import Volume
from fastsam3d_core.session import Session


def ct_sized_volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 200, (512, 512, 300)).astype(np.int16)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    affine[:3, 3] = (180.0, 180.0, -150.0)
    return Volume(array, affine)


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastsam3d")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    volume = ct_sized_volume()
    model = build_model(args.model)
    session = Session(volume, model)
    # Far enough apart that every centre needs its own crop (128 × 1.5 mm = 192 mm).
    centres = [
        np.array([256.0 + 150 * (-1) ** i, 256.0, 40.0 + 220 * i / args.repeats])
        for i in range(args.repeats + 1)
    ]
    new_crop, inside = [], []
    for centre in centres:
        start = time.perf_counter()
        session.add_point_ijk(centre)
        new_crop.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = session.add_point_ijk(centre + [5, 5, 2], positive=False)
        inside.append(time.perf_counter() - start)
        if result.encoder_ran:
            raise RuntimeError("a click inside the crop re-ran the encoder")
    image = torch.randn(1, 1, 128, 128, 128)
    with torch.inference_mode():
        embedding = model.encode(image)
        encode, decode = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.encode(image)
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.decode(embedding, torch.tensor([[[64.0, 64.0, 64.0]]]), torch.tensor([[1]]), None)
            decode.append(time.perf_counter() - start)
    print(f"{args.model}, volume {volume.shape}, torch {torch.__version__}, {args.threads} threads")
    print(
        f"click opening a new crop : {median_ms(new_crop[1:]):8.1f} ms (median of {args.repeats})"
    )
    print(f"click inside the crop    : {median_ms(inside[1:]):8.1f} ms")
    print(f"  reference, encoder only: {median_ms(encode):8.1f} ms")
    print(f"  reference, decoder only: {median_ms(decode):8.1f} ms")


if __name__ == "__main__":
    main()
