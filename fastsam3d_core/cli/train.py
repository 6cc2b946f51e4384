"""``fastsam3d finetune`` and ``fastsam3d distill`` (one process, or many under torchrun).

Each parses its options into the settings of :mod:`fastsam3d_core.training.workflows` and runs
them there; the defaults are the settings' own. What the run reports is printed by
:class:`_Console`.
"""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from pathlib import Path

import typer

from ..training.observer import TrainingObserver, describe_step
from ..training.settings import CHOICES, check_choice
from ..training.settings import DistillSettings as Distill
from ..training.settings import FinetuneSettings as Finetune
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
    PromptsOption,
    ScheduleOption,
    SeedOption,
    StepsOption,
    StudentOption,
    StudentWeightsOption,
    SynonymOption,
    TeacherOption,
    TeacherWeightsOption,
    TextModelOption,
    TextOption,
    ValidateEveryOption,
    ValidationClicksOption,
    ValidationOption,
    WarmupOption,
    WeightsOption,
)


def finetune(
    data: DataArgument,
    output: OutputAdapter,
    model: ModelOption = Finetune.model,
    weights: WeightsOption = Finetune.weights,
    label: LabelOption = Finetune.label,
    steps: StepsOption = Finetune.steps,
    epochs: EpochsOption = Finetune.epochs,
    batch_size: BatchOption = Finetune.batch_size,
    accumulation: AccumulationOption = Finetune.accumulation,
    learning_rate: LearningRateOption = Finetune.learning_rate,
    warmup: WarmupOption = Finetune.warmup,
    schedule: ScheduleOption = Finetune.schedule,
    clip_norm: ClipNormOption = Finetune.clip_norm,
    clicks: ClicksOption = Finetune.clicks,
    prompts: PromptsOption = Finetune.prompts,
    validation: ValidationOption = Finetune.validation,
    validate_every: ValidateEveryOption = Finetune.validate_every,
    validation_clicks: ValidationClicksOption = Finetune.validation_clicks,
    keep_last: KeepLastOption = Finetune.keep_last,
    device: DeviceOption = Finetune.device,
    seed: SeedOption = Finetune.seed,
    checkpoint_every: CheckpointEveryOption = Finetune.checkpoint_every,
    text: TextOption = Finetune.text,
    synonym: SynonymOption = None,
    text_model: TextModelOption = Finetune.text_model,
) -> None:
    """Train Med-SA adapters on your labelled cases; the base model stays frozen and untouched.

    The held-out cases are evaluated before training and every --validate-every steps; the
    best state is written, and only if it beats the base model.
    """
    from ..models import MODEL_REGISTRY
    from ..training.workflows import run_finetune
    from .runtime import load_recipe, resolve_device

    check_model_name(model, sorted(MODEL_REGISTRY))
    for setting, value in (("prompts", prompts), ("schedule", schedule)):
        try:
            check_choice(setting, value)
        except ValueError as error:
            hint = CHOICES[setting][0]
            raise typer.BadParameter(str(error).removeprefix(f"{hint} "), param_hint=hint) from None
    settings = Finetune(
        data=data, output=output, model=model, weights=weights, label=label, steps=steps,
        epochs=epochs, batch_size=batch_size, accumulation=accumulation,
        learning_rate=learning_rate, warmup=warmup, schedule=schedule, clip_norm=clip_norm,
        clicks=clicks, prompts=prompts, validation=validation, validate_every=validate_every,
        validation_clicks=validation_clicks, keep_last=keep_last,
        device=resolve_device(device), seed=seed, checkpoint_every=checkpoint_every,
        text=text, synonyms=tuple(synonym or ()), text_model=text_model,
    )  # fmt: skip
    if text:
        from ..training.text_data import parse_synonyms

        try:
            parse_synonyms(settings.synonyms)
        except ValueError as error:
            raise typer.BadParameter(str(error).removeprefix("--synonym "),
                                     param_hint="--synonym") from None  # fmt: skip
    run_finetune(settings, _Console(), load_recipe)


def distill(
    data: DataArgument,
    output: OutputStudent,
    teacher: TeacherOption = Distill.teacher,
    teacher_weights: TeacherWeightsOption = Distill.teacher_weights,
    student: StudentOption = Distill.student,
    student_weights: StudentWeightsOption = Distill.student_weights,
    steps: StepsOption = Distill.steps,
    logit_steps: LogitStepsOption = Distill.logit_steps,
    batch_size: BatchOption = Distill.batch_size,
    accumulation: AccumulationOption = Distill.accumulation,
    learning_rate: DistillRateOption = Distill.learning_rate,
    validate_every: DistillValidateEveryOption = Distill.validate_every,
    keep_last: KeepLastOption = Distill.keep_last,
    device: DeviceOption = Distill.device,
    seed: SeedOption = Distill.seed,
    checkpoint_every: CheckpointEveryOption = Distill.checkpoint_every,
) -> None:
    """Distil a fast student encoder from a teacher: FastSAM3D's layer-wise progressive
    distillation (Eq. 1-2), then logit-level; no labels needed.

    Every --validate-every steps the student's logit-level loss over the images is evaluated;
    the best student is written, and only if it beats the one it started from."""
    from ..models import MODEL_REGISTRY
    from ..training.workflows import run_distill
    from .runtime import load_recipe, resolve_device

    for name in (teacher, student):
        check_model_name(name, sorted(MODEL_REGISTRY))
    settings = Distill(
        data=data, output=output, teacher=teacher, teacher_weights=teacher_weights,
        student=student, student_weights=student_weights, steps=steps, logit_steps=logit_steps,
        batch_size=batch_size, accumulation=accumulation, learning_rate=learning_rate,
        validate_every=validate_every, keep_last=keep_last, device=resolve_device(device),
        seed=seed, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    run_distill(settings, _Console(), load_recipe)


class _Console(TrainingObserver):
    """Shows a run as the commands always have: its lines on stdout; warnings, a resumption and
    the step counter (one line, rewritten after each step) on stderr."""

    def message(self, text: str) -> None:
        typer.echo(text)

    def warning(self, text: str) -> None:
        typer.echo(f"warning: {text}", err=True)

    def resumed(self, path: Path, steps_done: int) -> None:
        typer.echo(f"resuming from {path} after step {steps_done}", err=True)

    def step_finished(self, record: dict, steps: int) -> None:
        typer.echo(f"\r{describe_step(record, steps)}", nl=False, err=True)

    def steps_ended(self) -> None:
        typer.echo("", err=True)
