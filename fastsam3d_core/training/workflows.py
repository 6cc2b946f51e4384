"""Whole ``finetune`` and ``distill`` runs, from a data folder to the files written.

:func:`run_finetune` and :func:`run_distill` are what the commands run: the command line only
parses its options into :class:`~.settings.FinetuneSettings` or
:class:`~.settings.DistillSettings` and calls them, so a script that calls them with the same
settings gets the same files. They print nothing: what they report goes to a
:class:`~.observer.TrainingObserver`. Under torchrun every process calls them; rank 0 writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..io import check_output_path
from ..models.build import resolve_device
from ..models.sam3d import Sam3D
from ..weights import resolve_weights
from ..weights.download import sha256_of_file
from ..weights.recipe import LoadedModel, ModelRecipe
from .data import DatasetError, find_cases, find_images, label_names, prepare, resolve_label
from .distill import distill_encoder, image_crops, logit_validation
from .finetune import (
    LOSS,
    FinetuneOutcome,
    NotImprovedError,
    ValidationSettings,
    finetune_loop_config,
    finetune_validated,
)
from .loop import LoopConfig, Ranks, process_group, remove_state, write_metrics
from .objectives import LayerwiseDistillation
from .observer import TrainingObserver
from .settings import DistillSettings, FinetuneSettings
from .text_workflow import TextOutcome, run_text_finetune
from .validation import BestState, ValidationPlan

# load(recipe) -> the model loaded by its recipe (ModelRecipe.load), with the identity of its
# weights. The command line passes its own, which also shows downloads.
ModelLoader = Callable[[ModelRecipe], LoadedModel]


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`run_finetune` did.

    Attributes:
        outcome: the training's history, Dice before and after, and validation state.
        summary: the ``summary`` the adapter file records (None on ranks other than 0).
        files: the adapter file, then the metrics files (empty on ranks other than 0).
    """

    outcome: FinetuneOutcome
    summary: dict | None = None
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class DistillResult:
    """What :func:`run_distill` did.

    Attributes:
        history: one record per step (``step``, ``loss``, ``k``, ``seconds``, validations).
        best_step: the step of the student kept (0: none beat the start).
        files: the student checkpoint, then the metrics files (empty on ranks other than 0).
    """

    history: list[dict]
    best_step: int
    files: list[Path] = field(default_factory=list)


def run_finetune(
    settings: FinetuneSettings,
    observer: TrainingObserver | None = None,
    load_model: ModelLoader | None = None,
) -> FinetuneResult:
    """Train Med-SA adapters on labelled cases (the base model stays frozen) and write the best
    state, if it beats the base on the held-out cases, to ``settings.output``.

    The held-out cases are evaluated before training and every ``settings.validate_every``
    steps. A run whose ``OUTPUT.state`` exists continues from it.

    Raises:
        NotImprovedError: no evaluated state beat the base (and not ``settings.keep_last``);
            nothing is written but the metrics.
        DatasetError, ValueError, OSError: bad data, output or settings.
        WeightsError, CheckpointError: the base checkpoint cannot be had or loaded.
    """
    observer = observer or TrainingObserver()
    if settings.text:  # the text path (finetune --text)
        history, summary, written = run_text_finetune(settings, observer, load_model)
        return FinetuneResult(TextOutcome(history), summary, written)  # type: ignore[arg-type]
    files = find_cases(settings.data)
    data_files = [path for case in files for path in (case.image, case.label)]
    check_output_path(settings.output, inputs=(settings.weights, settings.data, *data_files))
    with process_group(resolve_device(settings.device)) as ranks:
        return _finetune_in_group(settings, files, ranks, observer, load_model)


def _finetune_in_group(
    settings: FinetuneSettings,
    files: list,
    ranks: Ranks,
    observer: TrainingObserver,
    load_model: ModelLoader | None,
) -> FinetuneResult:
    label = None if settings.label is None else str(settings.label)
    value = resolve_label(label, label_names(settings.data))
    say = observer.message if ranks.main else _quiet
    load = load_model or (lambda recipe: _load(recipe, say))
    loaded = load(ModelRecipe(settings.model, settings.weights, device=ranks.device))  # fails early
    base, base_sha256 = loaded.model, loaded.checkpoint_sha256
    cases = _prepare_cases(files, value, settings.data, label, say)
    training, held_out = split_cases(cases, settings.validation, settings.seed)
    config = _finetune_config(settings, [case.name for case in training], base_sha256, label)
    validation = ValidationSettings(
        settings.validate_every, settings.validation_clicks, keep_last=settings.keep_last
    )
    say(f"validating on {len(held_out)} held-out case(s) every {settings.validate_every} steps")
    torch.manual_seed(settings.seed)
    outcome = finetune_validated(base, training, held_out, config, ranks, validation,
                                 settings.clicks, LOSS == "balanced", observer,
                                 settings.prompts)  # fmt: skip
    if not ranks.main:
        return FinetuneResult(outcome)
    return _write_adapter(base, settings.output, outcome, config, base_sha256, held_out, ranks,
                          observer)  # fmt: skip


def _finetune_config(
    settings: FinetuneSettings, training: list[str], base_sha256: str, label: str | None
) -> LoopConfig:
    """The loop's configuration; ``run`` identifies the run a saved state belongs to."""
    return finetune_loop_config(
        settings,
        len(training),
        {"command": "finetune", "model": settings.model, "base_sha256": base_sha256,
             "label": label, "cases": training, "clicks": settings.clicks, "loss": LOSS,
             "validate_every": settings.validate_every,
             "validation_clicks": settings.validation_clicks,
             # Boxes added later: states saved before them trained with clicks only.
             **({"prompts": settings.prompts} if settings.prompts != "point" else {})},
    )  # fmt: skip


def _prepare_cases(files: list, value, data: Path, label: str | None, say) -> list:
    """The cases prepared for training; a case without the structure is skipped, not the run."""
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


def split_cases(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """Training and held-out cases; with one case, or a fraction of 0, the training cases are
    the held-out ones too (an overfit check)."""
    if len(cases) == 1 or fraction == 0:
        return cases, cases
    held = min(len(cases) - 1, max(1, round(fraction * len(cases))))  # both sides non-empty
    order = np.random.default_rng(seed).permutation(len(cases))
    return [cases[i] for i in order[held:]], [cases[i] for i in order[:held]]


def _write_adapter(
    model: Sam3D,
    output: Path,
    outcome: FinetuneOutcome,
    config: LoopConfig,
    base_sha256: str,
    held_out: list,
    ranks: Ranks,
    observer: TrainingObserver,
) -> FinetuneResult:
    """Write the adapters kept by a validated run with their summary and metrics, or raise
    when no trained state beat the base."""
    from ..weights.adapter_file import save_adapter

    best = outcome.best
    observer.message(f"Dice before (clicks: Dice) on {len(held_out)} held-out case(s): "
                     f"{_dice(outcome.dice_before)}")  # fmt: skip
    if not outcome.usable:  # the state stays: --keep-last resumes it and writes at once
        write_metrics(outcome.history, output, "finetune")
        raise NotImprovedError(f"{output}: not written: {outcome.verdict()}")
    if best.collapsed:
        observer.warning(
            f"training stopped at step {len(outcome.history)}: the adapters "
            "collapsed (nothing of the structure found on any held-out case)"
        )
    if best.improved:
        observer.message(f"kept the state of step {best.best_step} of {len(outcome.history)} "
                         f"({outcome.score_name} {best.best.score:.3f}, base "
                         f"{best.start.score:.3f})")  # fmt: skip
    else:
        observer.warning(f"no trained state beat the base; --keep-last: writing the last state "
                         f"(step {len(outcome.history)})")  # fmt: skip
    observer.message(f"Dice after: {_dice(outcome.dice_after)}")
    if outcome.box_before is not None and outcome.box_after is not None:
        observer.message(f"Dice from the box alone: before {outcome.box_before:.3f} (centre "
                         f"point and box interior as prompts), after {outcome.box_after:.3f} "
                         "(learned corners)")  # fmt: skip
    summary = _finetune_summary(model, outcome, config, held_out, ranks.world)
    save_adapter(model, output, checkpoint_sha256=base_sha256, summary=summary)
    remove_state(config, ranks)
    dice = {"before": outcome.dice_before, "after": outcome.dice_after}
    written = write_metrics(outcome.history, output, "finetune", dice)
    observer.message(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB; adapters "
        f"{100 * summary['trainable_fraction']:.2f} % of the model's parameters) and "
        f"{', '.join(p.name for p in written)}"
    )
    return FinetuneResult(outcome, summary, [output, *written])


def _finetune_summary(
    model: Sam3D, outcome: FinetuneOutcome, config: LoopConfig, held_out: list, processes: int
) -> dict:
    """What the adapter file records about the run that trained it."""
    best = outcome.best
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        "cases": config.run["cases"],
        "held_out": [c.name for c in held_out],
        "label": config.run["label"],
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
        "schedule": config.schedule,
        "clip_norm": config.clip_norm,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "clicks": config.run["clicks"],
        **_box_summary(outcome),
        "processes": processes,
        "dice_before": outcome.dice_before,
        "dice_after": outcome.dice_after,
        "trainable_fraction": trainable / total,
        "final_loss": outcome.history[-1]["loss"] if outcome.history else None,
    }


def _box_summary(outcome: FinetuneOutcome) -> dict:
    """A ``--prompts box`` run's entries in the summary (none for clicks, whose files stay as
    they were): the box-alone Dice of the base (derived prompts) and of the adapters kept."""
    if outcome.box_before is None:
        return {}
    return {"prompts": "box", "box_dice_before": outcome.box_before,
            "box_dice_after": outcome.box_after}  # fmt: skip


def run_distill(
    settings: DistillSettings,
    observer: TrainingObserver | None = None,
    load_model: ModelLoader | None = None,
) -> DistillResult:
    """Distil a fast student encoder from a teacher: FastSAM3D's layer-wise progressive
    distillation (Eq. 1-2), then logit level; no labels needed. Every
    ``settings.validate_every`` steps the student's logit-level loss over the images is
    evaluated; the best student is written, and only if it beats the one it started from.

    Raises:
        NotImprovedError: no evaluated student beat the start (and not ``settings.keep_last``).
        DatasetError, ValueError, OSError, WeightsError, CheckpointError: as
            :func:`run_finetune`.
    """
    observer = observer or TrainingObserver()
    images = find_images(settings.data)
    inputs = (settings.teacher_weights, settings.student_weights, settings.data, *images)
    check_output_path(settings.output, inputs=inputs)
    with process_group(resolve_device(settings.device)) as ranks:
        return _distill_in_group(settings, images, ranks, observer, load_model)


def _distill_in_group(
    settings: DistillSettings,
    images: list[Path],
    ranks: Ranks,
    observer: TrainingObserver,
    load_model: ModelLoader | None,
) -> DistillResult:
    say = observer.message if ranks.main else _quiet
    load = load_model or (lambda recipe: _load(recipe, say))
    crops = image_crops(settings.data, say)
    loaded = load(ModelRecipe(settings.teacher, settings.teacher_weights, device=ranks.device))
    teacher = loaded.model
    student, student_start = _student(settings, ranks.device)
    config = _distill_config(settings, images, loaded.checkpoint_sha256, student_start)
    objective = LayerwiseDistillation(teacher.image_encoder, student.image_encoder)
    plan = ValidationPlan(logit_validation(objective, crops, ranks.device), settings.validate_every)
    best = BestState(plan)
    history = distill_encoder(objective, crops, config, ranks, settings.steps, best, observer)
    best.restore_best()
    if not ranks.main:
        return DistillResult(history, best.best_step)
    say(_distill_verdict(best, len(history), settings.output, settings.keep_last, observer))
    details = {"teacher": settings.teacher, "steps": settings.steps,
               "logit_steps": settings.logit_steps, "history": history,
               "best_step": best.best_step}  # fmt: skip
    _write_student(settings.output, teacher, student, details)
    remove_state(config, ranks)
    output = settings.output
    written = write_metrics(history, output, f"distill {settings.teacher} → {settings.student}")
    observer.message(
        f"wrote {output} (load it with --model {settings.student} --weights {output}) and "
        f"{', '.join(p.name for p in written)}"
    )
    return DistillResult(history, best.best_step, [output, *written])


def _distill_config(
    settings: DistillSettings, images: list[Path], teacher_sha256: str, student_start: str | None
) -> LoopConfig:
    """The loop's configuration; ``run`` identifies the run a saved state belongs to."""
    return LoopConfig.for_command(
        settings,
        settings.steps + settings.logit_steps,
        run={"command": "distill", "teacher": settings.teacher, "student": settings.student,
             "teacher_sha256": teacher_sha256, "student_sha256": student_start,
             "images": [path.name for path in images], "layerwise_steps": settings.steps,
             "validated": True},  # states from before validation: their start is unknown
    )  # fmt: skip


def _student(settings: DistillSettings, device: torch.device) -> tuple[Sam3D, str | None]:
    """The student to distil (random from the seed, or from ``student_weights``' encoder) and
    the SHA-256 of the weights it started from (None when random)."""
    from ..models.build import build_model
    from ..weights.checkpoint import load_checkpoint

    torch.manual_seed(settings.seed)
    model = build_model(settings.student, device=device)
    if settings.student_weights is None:
        return model, None
    path = resolve_weights(settings.student, weights_file=settings.student_weights)
    load_checkpoint(model, path)
    return model, sha256_of_file(path)


def _write_student(output: Path, teacher: Sam3D, student: Sam3D, details: dict) -> None:
    """A full checkpoint: the student's encoder with the teacher's prompt encoder and decoder
    (as FastSAM3D pairs them), and the distillation's ``details``."""
    from ..io._atomic import write_atomically

    state = {
        **{k: v for k, v in teacher.state_dict().items() if not k.startswith("image_enc")},
        **{f"image_encoder.{k}": v for k, v in student.image_encoder.state_dict().items()},
    }
    content = {
        "model_state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "distillation": details,
    }
    write_atomically(output, ".pt", lambda temporary: torch.save(content, temporary))


def _distill_verdict(
    best: BestState, steps_run: int, output: Path, keep_last: bool, observer: TrainingObserver
) -> str:
    """What a validated distillation keeps, in one line; raises when nothing is to be written."""
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
    observer.warning(f"no evaluated student beat the start; --keep-last: writing the last one "
                     f"(step {steps_run})")  # fmt: skip
    return f"kept the last student (step {steps_run})"


def _load(recipe: ModelRecipe, say) -> LoadedModel:
    """The model by its recipe (its weights, else the released ones, downloaded once): checked
    to be complete, in float32."""
    recipe = recipe.with_weights()
    say(recipe.loading_line())
    return recipe.load()


def _dice(scores: dict[int, float]) -> str:
    return ", ".join(f"{n}: {v:.3f}" for n, v in scores.items())


def _quiet(*_: object, **__: object) -> None:
    pass
