"""``fastsam3d finetune`` and ``fastsam3d distill`` (one process, or many under torchrun)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from .runtime import check_model_name
from .train_options import (
    AccumulationOption,
    BatchOption,
    CheckpointEveryOption,
    ClicksOption,
    ClipNormOption,
    DataArgument,
    DeviceOption,
    DistillRateOption,
    DistillValidateEveryOption,
    EpochsOption,
    KeepLastOption,
    LabelOption,
    LearningRateOption,
    LogitStepsOption,
    ModelOption,
    OutputAdapter,
    OutputStudent,
    SeedOption,
    StepsOption,
    StudentOption,
    StudentWeightsOption,
    TeacherOption,
    TeacherWeightsOption,
    ValidateEveryOption,
    ValidationClicksOption,
    ValidationOption,
    WarmupOption,
    WeightsOption,
)


def finetune(
    data: DataArgument,
    output: OutputAdapter,
    model: ModelOption = "fastsam3d",
    weights: WeightsOption = None,
    label: LabelOption = None,
    steps: StepsOption = 200,
    epochs: EpochsOption = None,
    batch_size: BatchOption = 1,
    accumulation: AccumulationOption = 1,
    learning_rate: LearningRateOption = 3e-3,
    warmup: WarmupOption = 0,
    clip_norm: ClipNormOption = None,
    clicks: ClicksOption = 5,
    validation: ValidationOption = 0.2,
    validate_every: ValidateEveryOption = 25,
    validation_clicks: ValidationClicksOption = 5,
    keep_last: KeepLastOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    checkpoint_every: CheckpointEveryOption = 25
) -> None:
    """Train Med-SA adapters on your labelled cases; the base model stays frozen and untouched.

    The held-out cases are evaluated before training and every --validate-every steps; the
    best state is written, and only if it beats the base model.
    """
    import torch

    from ..io import check_output_path
    from ..models import MODEL_REGISTRY
    from ..training import finetune as recipe
    from ..training.data import find_cases, label_names, resolve_label
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
        cases = _prepare_cases(files, value, data, label, say)
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
    output: OutputStudent,
    teacher: TeacherOption = "sam-med3d-turbo",
    teacher_weights: TeacherWeightsOption = None,
    student: StudentOption = "fastsam3d",
    student_weights: StudentWeightsOption = None,
    steps: StepsOption = 36,
    logit_steps: LogitStepsOption = 36,
    batch_size: BatchOption = 1,
    accumulation: AccumulationOption = 1,
    learning_rate: DistillRateOption = 5e-3,
    validate_every: DistillValidateEveryOption = 12,
    keep_last: KeepLastOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    checkpoint_every: CheckpointEveryOption = 25
) -> None:
    """Distil a fast student encoder from a teacher: FastSAM3D's layer-wise progressive
    distillation (Eq. 1-2), then logit-level; no labels needed.

    Every --validate-every steps the student's logit-level loss over the images is evaluated;
    the best student is written, and only if it beats the one it started from."""
    from ..io import check_output_path
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
        student_model, student_start = _student(student, student_weights, ranks.device, seed)
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
                 "images": [path.name for path in images], "layerwise_steps": steps,
                 "validated": True},  # states from before validation: their start is unknown
        )  # fmt: skip
        objective = LayerwiseDistillation(teacher_model.image_encoder, student_model.image_encoder)
        plan = ValidationPlan(logit_validation(objective, crops, ranks.device), validate_every)
        best = BestState(plan)
        history = distill_encoder(objective, crops, config, ranks, steps, best)
        best.restore_best()
        if not ranks.main:
            return
        say(_distill_verdict(best, len(history), output, keep_last))
        details = {"teacher": teacher, "steps": steps, "logit_steps": logit_steps,
                   "history": history, "best_step": best.best_step}  # fmt: skip
        _write_student(output, teacher_model, student_model, details)
        remove_state(config, ranks)
        written = write_metrics(history, output, f"distill {teacher} → {student}")
        typer.echo(
            f"wrote {output} (load it with --model {student} --weights {output}) and "
            f"{', '.join(p.name for p in written)}"
        )
    finally:
        leave_group()


def _prepare_cases(files: list, value, data: Path, label, say) -> list:
    """The cases prepared for training; a case without the structure is skipped, not the run."""
    from ..training.data import DatasetError, prepare

    say(f"preparing {len(files)} case(s) from {data} ...")
    cases = []
    for case in files:
        try:
            cases.append(prepare(case, value))
        except DatasetError as error:
            say(f"note: skipped {error}")
    if not cases:
        which = f"label {label}" if label is not None else "a non-zero label voxel"
        raise DatasetError(f"{data}: no case has {which} in its crop")
    return cases


def _student(name: str, weights: Path | None, device, seed: int) -> tuple:
    """The student to distil (random from ``seed``, or from ``weights``' encoder) and the
    SHA-256 of the weights it started from (None when random)."""
    import torch

    from .. import build_model, load_checkpoint
    from ..weights import resolve_weights
    from ..weights.download import sha256_of_file

    torch.manual_seed(seed)
    model = build_model(name, device=device)
    if weights is None:
        return model, None
    path = resolve_weights(name, weights_file=weights)
    load_checkpoint(model, path)
    return model, sha256_of_file(path)


def _write_student(output: Path, teacher_model, student_model, details: dict) -> None:
    """A full checkpoint: the student's encoder with the teacher's prompt encoder and decoder
    (as FastSAM3D pairs them), and the distillation's ``details``."""
    import torch

    from ..io._atomic import write_atomically

    state = {
        **{k: v for k, v in teacher_model.state_dict().items() if not k.startswith("image_enc")},
        **{f"image_encoder.{k}": v for k, v in student_model.image_encoder.state_dict().items()},
    }
    content = {
        "model_state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "distillation": details,
    }
    write_atomically(output, ".pt", lambda temporary: torch.save(content, temporary))


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
    typer.echo(f"warning: no evaluated student beat the start; --keep-last: writing the last one "
               f"(step {steps_run})", err=True)  # fmt: skip
    return f"kept the last student (step {steps_run})"


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
    if best.collapsed:
        typer.echo(f"warning: training stopped at step {len(outcome.history)}: the adapters "
                   "collapsed (nothing of the structure found on any held-out case)", err=True)
    if best.improved:
        typer.echo(f"kept the state of step {best.best_step} of {len(outcome.history)} (mean Dice "
                   f"after {outcome.scored_clicks} clicks {best.best.score:.3f}, base "
                   f"{best.start.score:.3f})")  # fmt: skip
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
        "stopped_on_collapse": best.collapsed,
        "validate_every": best.plan.every,
        "validation_clicks": config.run["validation_clicks"],
        "loss": config.run["loss"],
        "warmup_steps": config.warmup_steps,
        "clip_norm": config.clip_norm,
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
