"""``fastsam3d finetune`` and ``fastsam3d distill`` (one process, or many under torchrun)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from .runtime import check_model_name

DataArgument = Annotated[
    Path,
    typer.Argument(
        metavar="DATA",
        help="An nnU-Net/MSD folder (imagesTr/, labelsTr/, dataset.json) or a text file of "
        "IMAGE LABEL lines.",
    ),
]
StepsOption = Annotated[int, typer.Option(min=0, metavar="N", help="Optimizer steps.")]
BatchOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Crops per step, across all torchrun processes.")
]
AccumulationOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Micro-batches per process and step.")
]
DeviceOption = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or mps.")]
SeedOption = Annotated[int, typer.Option(metavar="N", help="Seeds crop order and clicks.")]
CheckpointEveryOption = Annotated[
    int,
    typer.Option(min=1, metavar="N", help="Steps between training checkpoints (for resuming)."),
]


def finetune(
    data: DataArgument,
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="ADAPTER.pt", help="Adapter file to write.")
    ],
    model: Annotated[
        str, typer.Option(metavar="NAME", help="fastsam3d or sam-med3d-turbo.")
    ] = "fastsam3d",
    weights: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="The base checkpoint (default: the released one)."),
    ] = None,
    label: Annotated[
        Optional[str],
        typer.Option(
            metavar="V",
            help="The structure: a label value, or a name from dataset.json or the .seg.nrrd "
            "files (default: every non-zero voxel).",
        ),
    ] = None,
    steps: StepsOption = 200,
    epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1, metavar="N", help="Passes over the training cases, instead of --steps."
        ),
    ] = None,
    batch_size: BatchOption = 1,
    accumulation: AccumulationOption = 1,
    learning_rate: Annotated[
        float, typer.Option("--lr", metavar="LR", help="Adam's learning rate.")
    ] = 3e-3,
    warmup: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Steps over which the learning rate grows to --lr."),
    ] = 0,
    clip_norm: Annotated[
        Optional[float],
        typer.Option(min=0.0, metavar="X", help="Clip the gradients' global L2 norm to X."),
    ] = None,
    clicks: Annotated[
        int, typer.Option(min=1, metavar="N", help="Simulated clicks per crop and step.")
    ] = 5,
    validation: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="FRACTION",
            help="Cases held out for validation (0, or one case: the training cases).",
        ),
    ] = 0.2,
    validate_every: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Steps between evaluations of the held-out cases."),
    ] = 25,
    validation_clicks: Annotated[
        int, typer.Option(min=1, max=10, metavar="N", help="Clicks per held-out case there.")
    ] = 5,
    keep_last: Annotated[
        bool,
        typer.Option(
            "--keep-last",
            help="Write the last state when no evaluated state beats the base model "
            "(default: write nothing and fail).",
        ),
    ] = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    checkpoint_every: CheckpointEveryOption = 25,
) -> None:
    """Train Med-SA adapters on your labelled cases; the base model stays frozen and untouched.

    The held-out cases are evaluated before training and every --validate-every steps; the
    best state is written, and only if it beats the base model.
    """
    import torch

    from ..io import check_output_path
    from ..models import MODEL_REGISTRY
    from ..training import finetune as recipe
    from ..training.data import DatasetError, find_cases, label_names, prepare, resolve_label
    from ..training.loop import LoopConfig, join_group, leave_group
    from ..weights import resolve_weights
    from ..weights.download import sha256_of_file
    from .runtime import load_model, resolve_device

    check_model_name(model, sorted(MODEL_REGISTRY))
    files = find_cases(data)
    data_files = [path for case in files for path in (case.image, case.label)]
    check_output_path(output, inputs=(weights, data, *data_files))
    ranks = join_group(resolve_device(device))
    try:
        value = resolve_label(label, label_names(data))
        say = typer.echo if ranks.main else _quiet
        base = load_model(model, weights, ranks.device)  # a missing checkpoint fails here, early
        base_sha256 = sha256_of_file(resolve_weights(model, weights_file=weights))
        say(f"preparing {len(files)} case(s) from {data} ...")
        cases = []
        for case in files:  # a case without the structure is skipped, not the whole run
            try:
                cases.append(prepare(case, value))
            except DatasetError as error:
                say(f"note: skipped {error}")
        if not cases:
            which = f"label {label}" if label is not None else "a non-zero label voxel"
            raise DatasetError(f"{data}: no case has {which} in its crop")
        training, held_out = _split(cases, validation, seed)
        if epochs is not None:
            steps = math.ceil(epochs * len(training) / batch_size)
        config = LoopConfig(
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            accumulation=accumulation,
            seed=seed,
            checkpoint=output.with_name(output.name + ".state"),
            checkpoint_every=checkpoint_every,
            warmup_steps=warmup,
            clip_norm=clip_norm or None,
            run={"command": "finetune", "model": model, "base_sha256": base_sha256,
                 "label": label, "cases": [c.name for c in training], "clicks": clicks,
                 "loss": recipe.LOSS, "validate_every": validate_every,
                 "validation_clicks": validation_clicks},
        )  # fmt: skip
        settings = recipe.ValidationSettings(validate_every, validation_clicks, keep_last=keep_last)
        say(f"validating on {len(held_out)} held-out case(s) every {validate_every} steps")
        torch.manual_seed(seed)
        outcome = recipe.finetune_validated(base, training, held_out, config, ranks, settings,
                                            clicks, recipe.LOSS == "balanced")  # fmt: skip
        if ranks.main:
            _write_adapter(base, output, outcome, config, base_sha256, label, held_out)
    finally:
        leave_group()


def distill(
    data: DataArgument,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="STUDENT.pt", help="Student checkpoint to write."),
    ],
    teacher: Annotated[
        str, typer.Option(metavar="NAME", help="The teacher model.")
    ] = "sam-med3d-turbo",
    teacher_weights: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="The teacher's checkpoint (default: the released one)."),
    ] = None,
    student: Annotated[str, typer.Option(metavar="NAME", help="The student model.")] = "fastsam3d",
    student_weights: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="Start the student from this checkpoint's encoder (default: random).",
        ),
    ] = None,
    steps: StepsOption = 36,
    logit_steps: Annotated[
        int, typer.Option(min=0, metavar="N", help="Logit-level steps after the layer-wise ones.")
    ] = 36,
    batch_size: BatchOption = 1,
    accumulation: AccumulationOption = 1,
    learning_rate: Annotated[
        float, typer.Option("--lr", metavar="LR", help="Adam's learning rate (paper: 5e-3).")
    ] = 5e-3,
    validate_every: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Steps between evaluations of the logit loss."),
    ] = 12,
    keep_last: Annotated[
        bool,
        typer.Option(
            "--keep-last",
            help="Write the last student when no evaluated one beats the start "
            "(default: write nothing and fail).",
        ),
    ] = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    checkpoint_every: CheckpointEveryOption = 25,
) -> None:
    """Distil a fast student encoder from a teacher: FastSAM3D's layer-wise progressive
    distillation (Eq. 1-2), then logit-level; no labels needed.

    Every --validate-every steps the student's logit-level loss over the images is evaluated;
    the best student is written, and only if it beats the one it started from."""
    import torch

    from .. import build_model, load_checkpoint
    from ..io import check_output_path
    from ..io._atomic import write_atomically
    from ..models import MODEL_REGISTRY
    from ..training.data import find_images
    from ..training.distill import distill_encoder, image_crops, logit_validation
    from ..training.loop import LoopConfig, join_group, leave_group, remove_state, write_metrics
    from ..training.objectives import LayerwiseDistillation
    from ..training.validation import BestState, ValidationPlan
    from ..weights import resolve_weights
    from ..weights.download import sha256_of_file
    from .runtime import load_model, resolve_device

    for name in (teacher, student):
        check_model_name(name, sorted(MODEL_REGISTRY))
    images = find_images(data)
    check_output_path(output, inputs=(teacher_weights, student_weights, data, *images))
    ranks = join_group(resolve_device(device))
    try:
        say = typer.echo if ranks.main else _quiet
        crops = image_crops(data, say)
        teacher_model = load_model(teacher, teacher_weights, ranks.device)
        torch.manual_seed(seed)
        student_model = build_model(student, device=ranks.device)
        student_start = None
        if student_weights is not None:
            student_path = resolve_weights(student, weights_file=student_weights)
            load_checkpoint(student_model, student_path)
            student_start = sha256_of_file(student_path)
        teacher_path = resolve_weights(teacher, weights_file=teacher_weights)
        config = LoopConfig(
            steps=steps + logit_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            accumulation=accumulation,
            seed=seed,
            checkpoint=output.with_name(output.name + ".state"),
            checkpoint_every=checkpoint_every,
            run={"command": "distill", "teacher": teacher, "student": student,
                 "teacher_sha256": sha256_of_file(teacher_path), "student_sha256": student_start,
                 "images": [path.name for path in images], "layerwise_steps": steps},
        )  # fmt: skip
        objective = LayerwiseDistillation(teacher_model.image_encoder, student_model.image_encoder)
        plan = ValidationPlan(logit_validation(objective, crops, ranks.device), validate_every)
        best = BestState(plan)
        history = distill_encoder(objective, crops, config, ranks, steps, best)
        best.restore_best()
        if not ranks.main:
            return
        say(_distill_verdict(best, len(history), output, keep_last))
        # The student's encoder with the teacher's prompt encoder and decoder (as FastSAM3D).
        state = {
            **{
                k: v
                for k, v in teacher_model.state_dict().items()
                if not k.startswith("image_encoder.")
            },
            **{
                f"image_encoder.{k}": v for k, v in student_model.image_encoder.state_dict().items()
            },
        }
        content = {
            "model_state_dict": {k: v.detach().cpu() for k, v in state.items()},
            "distillation": {
                "teacher": teacher,
                "steps": steps,
                "logit_steps": logit_steps,
                "history": history,
                "best_step": best.best_step,
            },
        }
        write_atomically(output, ".pt", lambda temporary: torch.save(content, temporary))
        remove_state(config, ranks)
        written = write_metrics(history, output, f"distill {teacher} → {student}")
        typer.echo(
            f"wrote {output} (load it with --model {student} --weights {output}) and "
            f"{', '.join(p.name for p in written)}"
        )
    finally:
        leave_group()


def _distill_verdict(best, steps_run: int, output: Path, keep_last: bool) -> str:
    """What a validated distillation keeps, in one line; raises when nothing is to be written."""
    from ..training.finetune import NotImprovedError

    start = -best.start.score
    if best.improved:
        return (f"kept the student of step {best.best_step} of {steps_run} (logit-level loss "
                f"{-best.best.score:.4g}; at the start {start:.4g})")  # fmt: skip
    if not keep_last:
        raise NotImprovedError(
            f"{output}: not written: no evaluated student beat the one it started from "
            f"(logit-level loss {start:.4g}); try a lower --lr or more steps, or --keep-last "
            "to write the last student anyway"
        )
    return (f"warning: no evaluated student beat the start; --keep-last: writing the last one "
            f"(step {steps_run})")  # fmt: skip


def _write_adapter(model, output: Path, outcome, config, base_sha256: str, label, held_out) -> None:
    """Write the adapters kept by a validated run with their summary and metrics, or fail in
    one line when no trained state beat the base."""
    from ..training.finetune import NotImprovedError
    from ..training.loop import Ranks, remove_state, write_metrics
    from ..weights.adapter_file import save_adapter

    best = outcome.best
    typer.echo(f"Dice before (clicks: Dice) on {len(held_out)} held-out case(s): "
               f"{_dice(outcome.dice_before)}")  # fmt: skip
    if not outcome.usable:  # the state stays: --keep-last resumes it and writes at once
        write_metrics(outcome.history, output, "finetune")
        raise NotImprovedError(f"{output}: not written: {outcome.verdict()}")
    if best.improved:
        typer.echo(f"kept the state of step {best.best_step} of {len(outcome.history)} (mean Dice "
                   f"after 1, 3, 5 clicks {best.best.score:.3f}, base {best.start.score:.3f})")
    else:
        typer.echo(f"warning: no trained state beat the base; --keep-last: writing the last "
                   f"state (step {len(outcome.history)})", err=True)  # fmt: skip
    typer.echo(f"Dice after: {_dice(outcome.dice_after)}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    summary = {
        "cases": config.run["cases"],
        "held_out": [c.name for c in held_out],
        "label": label,
        "steps": config.steps,
        "steps_run": len(outcome.history),
        "best_step": best.best_step,
        "validation_score_base": best.start.score,
        "validation_score_best": (best.best or best.start).score,
        "kept_last": outcome.kept_last and not best.improved,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "clicks": config.run["clicks"],
        "processes": _world(),
        "dice_before": outcome.dice_before,
        "dice_after": outcome.dice_after,
        "trainable_fraction": trainable / total,
        "final_loss": outcome.history[-1]["loss"] if outcome.history else None,
    }
    save_adapter(model, output, checkpoint_sha256=base_sha256, summary=summary)
    remove_state(config, Ranks(0, 1, model.device))
    dice = {"before": outcome.dice_before, "after": outcome.dice_after}
    written = write_metrics(outcome.history, output, "finetune", dice)
    typer.echo(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB; adapters "
        f"{100 * trainable / total:.2f} % of the model's parameters) and "
        f"{', '.join(p.name for p in written)}"
    )


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _split(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """Training and held-out cases; with one case, or a fraction of 0, the training cases are
    the held-out ones too (an overfit check)."""
    import numpy as np

    if len(cases) == 1 or fraction == 0:
        return cases, cases
    held = min(len(cases) - 1, max(1, round(fraction * len(cases))))  # both sides non-empty
    order = np.random.default_rng(seed).permutation(len(cases))
    return [cases[i] for i in order[held:]], [cases[i] for i in order[:held]]


def _dice(scores: dict[int, float]) -> str:
    return ", ".join(f"{n}: {v:.3f}" for n, v in scores.items())


def _quiet(*_: object, **__: object) -> None:
    pass
