"""How often ``finetune`` collapses, and what it gains: seeds × structures × linear paths.

Each run fine-tunes the seeded FastSAM3D (the golden recipe's random weights, so every point of
Dice is earned) on one real case and evaluates that same case (the overfit check that
``finetune`` runs with one case) with the paper's click protocol. A run *collapsed* when its
written model's Dice after 5 clicks is below half the base's (the adapters learned "background").
With ``--recipe current`` the run writes what ``fastsam3d finetune`` writes today; ``--recipe
unguarded`` trains the same steps and keeps the last state, as ``finetune`` did before it
validated (the "before" column).

The linear path (oneDNN's fused product or plain ``F.linear``) is fixed per process by
``FASTSAM3D_LINEAR``, so the script runs itself once per path:

    python benchmarks/finetune_collapse.py [--seeds 8] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STRUCTURES = {  # name: (image, label, label value), in ../shared/data
    "liver": ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz", 5),
    "spleen": ("totalseg_ct/example_ct_3mm.nii.gz", "totalseg_ct/example_seg_3mm.nii.gz", 1),
    "oedema": (
        "brats2021_flair_edema/imagesTr/BraTS2021_01646.nii.gz",
        "brats2021_flair_edema/labelsTr/BraTS2021_01646.nii.gz",
        1,
    ),
}
PATHS = ("onednn", "plain")


def run_path(arguments: argparse.Namespace) -> list[dict]:
    """Every structure and seed on this process's linear path; one record per run."""
    import torch
    from seeded import SHARED_DATA_DIR, seeded_model

    from fastsam3d_core.training import finetune as recipe
    from fastsam3d_core.training.data import CaseFiles, prepare
    from fastsam3d_core.training.loop import LoopConfig, Ranks

    torch.set_num_threads(arguments.threads)
    old = arguments.recipe == "unguarded"
    records = []
    for structure in arguments.structures or STRUCTURES:
        image, label, value = STRUCTURES[structure]
        files = CaseFiles(structure, SHARED_DATA_DIR / image, SHARED_DATA_DIR / label)
        case = prepare(files, value)
        for seed in range(arguments.first_seed, arguments.first_seed + arguments.seeds):
            started = time.perf_counter()
            model = seeded_model("fastsam3d")
            config = LoopConfig(
                steps=arguments.steps,
                learning_rate=arguments.lr,
                seed=seed,
                warmup_steps=arguments.warmup,
                clip_norm=arguments.clip or None,
            )
            balanced = _given(arguments.loss, "dicece" if old else recipe.LOSS) == "balanced"
            # Before validation: the last state, whatever it was (evaluated at the end only).
            every = arguments.steps if old else arguments.validate_every
            settings = recipe.ValidationSettings(every=every, keep_last=old)
            torch.manual_seed(seed)
            outcome = recipe.finetune_validated(
                model, [case], [case], config, Ranks(0, 1, torch.device("cpu")), settings,
                clicks=arguments.clicks, balanced=balanced,
            )  # fmt: skip
            after = outcome.dice_after if outcome.usable else outcome.dice_before
            record = {
                "structure": structure,
                "seed": seed,
                "path": os.environ.get("FASTSAM3D_LINEAR", "auto"),
                "recipe": arguments.recipe,
                "settings": {"lr": config.learning_rate, "warmup": config.warmup_steps,
                             "clip": config.clip_norm, "balanced": balanced},  # fmt: skip
                "before": outcome.dice_before,
                "after": after,  # what the user gets: the base when nothing is written
                "written": outcome.usable,
                "best_step": outcome.best.best_step,
                "collapsed_early": outcome.best.collapsed,
                "last_loss": outcome.history[-1]["loss"],
                "last_validation_5": [
                    r["validation_dice_5"] for r in outcome.history if "validation_dice_5" in r
                ][-1:],
                "seconds": time.perf_counter() - started,
            }
            print(json.dumps(record), flush=True)
            records.append(record)
    return records


def _given(value, default):
    return default if value is None else value


def collapsed(record: dict) -> bool:
    return record["after"]["5"] < 0.5 * record["before"]["5"]


def table(records: list[dict]) -> str:
    lines = ["| structure | path | runs | collapsed | median Dice@5 before → after | gain range |",
             "|---|---|---:|---:|---|---|"]  # fmt: skip
    for structure in STRUCTURES:
        for path in PATHS:
            runs = [r for r in records if r["structure"] == structure and r["path"] == path]
            if not runs:
                continue
            gains = [r["after"]["5"] - r["before"]["5"] for r in runs]
            before = statistics.median(r["before"]["5"] for r in runs)
            after = statistics.median(r["after"]["5"] for r in runs)
            lines.append(
                f"| {structure} | {path} | {len(runs)} | {sum(map(collapsed, runs))} | "
                f"{before:.3f} → {after:.3f} | {min(gains):+.3f} … {max(gains):+.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--validate-every", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--clip", type=float, default=0.0, help="0: none")
    parser.add_argument("--loss", choices=("dicece", "balanced"), help="default: the recipe's")
    parser.add_argument("--structures", nargs="+", choices=tuple(STRUCTURES))
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--recipe", choices=("current", "unguarded"), default="current")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--path", choices=PATHS, help="(internal) run one path in this process")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    if arguments.path:
        run_path(arguments)
        return
    from fastsam3d_core.benchmark import cpu_name

    print(f"CPU: {cpu_name()}", flush=True)
    records = []
    for path in PATHS:
        command = [sys.executable, __file__, *sys.argv[1:], "--path", path]
        env = {**os.environ, "FASTSAM3D_LINEAR": path}
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        records += [json.loads(line) for line in output.stdout.splitlines() if line[:1] == "{"]
    print(table(records))
    if arguments.json:
        arguments.json.write_text(json.dumps(records, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
