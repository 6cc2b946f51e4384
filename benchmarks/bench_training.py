"""Time per training step of ``finetune`` (each model), ``finetune --text`` and ``distill``
on this machine.

Seeded weights (the golden recipe), one 128³ crop of the shared CT per step, 5 simulated clicks
for fine-tuning; the text step is the text recipe's (the text, one click round, the vocabulary
term). The reference in the same run is the model's inference encoder pass. Prints the CPU,
medians over the timed steps, the ratio to the reference and, on a GPU, the peak memory.

    python benchmarks/bench_training.py [--steps 6] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from seeded import GOLDEN_DIR, SHARED_DATA_DIR, seeded_model

from fastsam3d_core import build_model
from fastsam3d_core.benchmark import cpu_name
from fastsam3d_core.geometry import Crop, CropGrid
from fastsam3d_core.training.data import CaseFiles, DatasetError, TrainingCase, prepare
from fastsam3d_core.training.distill import distill_encoder
from fastsam3d_core.training.finetune import finetune
from fastsam3d_core.training.loop import LoopConfig, Ranks
from fastsam3d_core.training.objectives import LayerwiseDistillation


def training_case() -> TrainingCase:
    """The shared CT's liver crop; a sphere in noise where SimpleITK or the data are missing
    (a GPU machine): step times do not depend on the content."""
    ct = SHARED_DATA_DIR / "totalseg_ct"
    try:
        return prepare(
            CaseFiles("ct", ct / "example_ct_3mm.nii.gz", ct / "example_seg_3mm.nii.gz"), 5
        )
    except (ImportError, DatasetError) as error:
        print(f"note: a synthetic crop ({error})")
    grid = np.indices((128,) * 3) - 64
    truth = (grid**2).sum(0) < 30**2
    image = np.random.default_rng(0).standard_normal(truth.shape).astype(np.float32) + truth
    return TrainingCase("synthetic", Crop(image, CropGrid(np.diag([1.5, 1.5, 1.5, 1.0]))), truth)


def seeded(name: str, device: torch.device):
    if not GOLDEN_DIR.is_dir():
        return build_model(name, device=device).allow_random_weights()
    return seeded_model(name).to(device)


def encoder_seconds(model, image: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        model.encode(image)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode(image)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def text_steps(case: TrainingCase, device: torch.device, config: LoopConfig) -> list[dict]:
    """``finetune --text``'s steps on the crop, built as its workflow builds them: FastSAM3D
    with decoder adapters and the text path (texts centred on the names'), the recipe of
    Testing/test_text_training.py (``--clicks 2``: the text, then one click round) and the
    vocabulary term over five names (the liver and four parts of the rest of the crop). Seeded
    random embeddings stand in for a text encoder's: a step's time does not depend on the
    words."""
    from fastsam3d_core.models.adapter import AdapterConfig, attach_adapters
    from fastsam3d_core.models.text_reference import TEXT_EMBED_DIM, attach_text_reference
    from fastsam3d_core.training.loop import train
    from fastsam3d_core.training.text_objective import (
        VOCABULARY_WEIGHT,
        TextObjective,
        tile_features,
    )

    model = seeded("fastsam3d", device)
    torch.manual_seed(0)
    attach_adapters(model, AdapterConfig(encoder=False))
    attach_text_reference(model)
    model.to(device)
    text_case = five_named_structures(case)
    names = sorted(text_case.structures)
    generator = torch.Generator().manual_seed(0)
    texts = {name: torch.randn(TEXT_EMBED_DIM, generator=generator) for name in names}
    model.text_reference.set_text_centre(torch.stack([texts[n] for n in names]))
    objective = TextObjective(model, [text_case], tile_features(model, [text_case]), clicks=1,
                              vocabulary=texts, vocabulary_weight=VOCABULARY_WEIGHT)  # fmt: skip

    def compute_loss(wrapped, numbers: list[int], step: int) -> torch.Tensor:
        name = names[step % len(names)]
        return wrapped([(0, 0, name)], texts[name][None].to(device), [[0, n] for n in numbers])

    model.train()
    return train(objective, compute_loss, config, Ranks(0, 1, device))


def five_named_structures(case: TrainingCase):
    """The crop as a text case of one tile: the liver, and the rest of the crop in four slabs
    along d0 (as many names as the test's five organs)."""
    from fastsam3d_core.geometry import Volume
    from fastsam3d_core.training.text_data import TextCase

    slab = np.arange(case.truth.shape[0])[:, None, None] * 4 // case.truth.shape[0]
    structures = {"liver": case.truth}
    for part in range(4):
        structures[f"part {part + 1}"] = ~case.truth & (slab == part)
    image = Volume(case.crop.image, case.crop.grid.crop_to_ras)
    return TextCase("ct", image, (case.crop,), structures,
                    {name: (truth,) for name, truth in structures.items()})  # fmt: skip


def step_seconds(history: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in history[1:])  # the first warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    ranks = Ranks(0, 1, device)
    case = training_case()
    image = torch.from_numpy(case.crop.image)[None, None].to(device)
    config = LoopConfig(steps=args.steps, learning_rate=3e-3)
    rows = []
    for name in ("fastsam3d", "sam-med3d-turbo"):
        model = seeded(name, device)
        reference = encoder_seconds(model, image, 3)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        history = finetune(model, [case], config, ranks, clicks=5)
        memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows.append({"run": f"finetune {name}", "step_s": step_seconds(history),
                     "encoder_s": reference, "gpu_peak_gib": memory})  # fmt: skip
    del model, history  # SAM-Med3D-turbo's weights would count in the text step's peak
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    history = text_steps(case, device, config)
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    rows.append({"run": "finetune --text fastsam3d", "step_s": step_seconds(history),
                 "encoder_s": rows[0]["encoder_s"], "gpu_peak_gib": memory})  # fmt: skip
    teacher, student = seeded("sam-med3d-turbo", device), build_model("fastsam3d", device=device)
    objective = LayerwiseDistillation(teacher.image_encoder, student.image_encoder)
    crops = image.cpu().repeat(2, 1, 1, 1, 1)
    history = distill_encoder(objective, crops, config, ranks, layerwise_steps=args.steps)
    rows.append({"run": "distill sam-med3d-turbo -> fastsam3d (layer-wise)",
                 "step_s": step_seconds(history), "encoder_s": rows[1]["encoder_s"]})  # fmt: skip
    report(rows, device, args.json)


def report(rows: list[dict], device: torch.device, json_path: Path | None) -> None:
    print(f"\n{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}")  # fmt: skip
    for row in rows:
        peak = f", peak {row['gpu_peak_gib']:.2f} GiB" if row.get("gpu_peak_gib") else ""
        print(f"{row['run']:<52} {row['step_s']:6.2f} s/step  = "
              f"{row['step_s'] / row['encoder_s']:4.1f} × the encoder's inference pass "
              f"({row['encoder_s'] * 1000:.0f} ms){peak}")  # fmt: skip
    if json_path:
        json_path.write_text(json.dumps({"cpu": cpu_name(), "device": str(device),
                                         "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
