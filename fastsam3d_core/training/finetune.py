"""Fine-tuning with Med-SA adapters on the user's labelled cases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..evaluation.protocol import run_clicks
from ..evaluation.report import EvaluationReport
from ..models.adapter import AdapterConfig, attach_adapters
from ..models.sam3d import Sam3D
from .box_prompts import box_alone_dice
from .data import TrainingCase
from .loop import LoopConfig, Ranks, case_of, train
from .objectives import InteractiveObjective
from .observer import TrainingObserver
from .settings import FinetuneSettings, check_choice
from .validation import BestState, Evaluation, ValidationPlan

PROTOCOL_CLICKS = 10  # the paper's: Dice after 1, 3, 5 and 10 clicks
SCORED_CLICKS = (1, 3, 5)  # validation: the mean of the Dice after these (those made)
# The loss ``fastsam3d finetune`` trains with: the class-balanced one; "dicece" is SAM-Med3D's,
# which collapsed (docs/training.md has the measurements).
LOSS = "balanced"


def finetune(
    model: Sam3D,
    cases: Sequence[TrainingCase],
    config: LoopConfig,
    ranks: Ranks,
    adapters: AdapterConfig | None = None,
    clicks: int = 5,
    validation: BestState | None = None,
    balanced: bool = True,
    observer: TrainingObserver | None = None,
    prompts: str = "point",
) -> list[dict]:
    """Attach adapters to ``model`` (frozen) and train them on ``cases``; returns the history.

    Args:
        model: the base model, its weights loaded, on ``ranks.device``.
        cases: prepared crops (:func:`~fastsam3d_core.training.data.prepare`).
        config, ranks, validation, observer: see :func:`~fastsam3d_core.training.loop.train`
            (the adapters are left as the last step made them).
        adapters: their configuration (default :class:`AdapterConfig`).
        clicks: simulated clicks per crop and step.
        balanced: the class-balanced loss (:func:`~.objectives.balanced_dice_ce_loss`), else
            SAM-Med3D's DiceCE.
        prompts: ``"point"`` (clicks), or ``"box"``: each crop starts from its truth's box,
            and the box corners' embeddings are trained with the adapters (see
            :class:`~.objectives.InteractiveObjective`).
    """
    check_choice("prompts", prompts)
    adapters = adapters or AdapterConfig()
    attach_adapters(model, replace(adapters, box_corners=adapters.box_corners or prompts == "box"))
    model.train()
    objective = InteractiveObjective(model, clicks, balanced, prompts)
    images = torch.from_numpy(np.stack([c.crop.image for c in cases]))[:, None]
    truths = torch.from_numpy(np.stack([c.truth for c in cases]))

    def compute_loss(wrapped: torch.nn.Module, samples: list[int], step: int) -> torch.Tensor:
        chosen = [case_of(n, len(cases), config.seed) for n in samples]
        seeds = [[config.seed, n] for n in samples]
        return wrapped(images[chosen].to(ranks.device), truths[chosen], seeds)

    try:
        return train(
            objective, compute_loss, config, ranks, validation=validation, observer=observer
        )
    finally:
        model.eval()


def click_results(model: Sam3D, cases: Sequence[TrainingCase], clicks: int) -> EvaluationReport:
    """The paper's protocol (fixed seeds: case n's clicks come from seed n) on ``cases``."""
    from ..session.model_predictor import ModelPredictor

    predictor = ModelPredictor(model)
    results = tuple(
        run_clicks(predictor, case.crop, case.truth, clicks, False, np.random.default_rng(number))
        for number, case in enumerate(cases)
    )
    return EvaluationReport(results, clicks)


def click_dice(model: Sam3D, cases: Sequence[TrainingCase], clicks: int = 10) -> dict[int, float]:
    """Mean Dice after 1, 3, 5 and 10 clicks of the paper's protocol (fixed seeds) on ``cases``,
    as ``fastsam3d evaluate`` reports it."""
    return click_results(model, cases, clicks).mean_dice()


def box_dice(model: Sam3D, cases: Sequence[TrainingCase]) -> float:
    """Mean Dice from each case's truth box alone (:func:`~.box_prompts.box_alone_dice`): as
    learned corners where the model has them, else as the derived prompts."""
    from ..session.model_predictor import ModelPredictor

    return float(np.mean(box_alone_dice(ModelPredictor(model), cases)))


def as_evaluation(report: EvaluationReport, clicks: int) -> Evaluation:
    """A validation score from the protocol's first ``clicks`` clicks: the mean of the Dice
    after 1, 3 and 5 of them (those made). The protocol's clicks do not depend on how many
    follow, so the first clicks of a longer run are the shorter run's."""
    dice = report.mean_dice([n for n in SCORED_CLICKS if n <= clicks])
    # Nothing of the structure found after any click, on every case (Dice 0: the prediction
    # is empty or misses the structure entirely): the adapters have learned "background".
    empty = all(max(r.dice[:clicks]) == 0.0 for r in report.evaluated)
    details = {f"dice_{n}": value for n, value in dice.items()}
    return Evaluation(float(np.mean(list(dice.values()))), empty, details)


def with_box_dice(clicks: Evaluation, box: float, base: Evaluation | None = None) -> Evaluation:
    """A ``--prompts box`` validation score: the mean of the click score and the box-alone Dice.

    Against ``base`` (the base model's, already with its box Dice), a state whose click score
    or box Dice is below the base's scores no higher than the base: it is never kept, however
    much the other gained.
    """
    score = (clicks.score + box) / 2
    details = {**(clicks.details or {}), "click_score": clicks.score, "box_alone_dice": box}
    if base is not None and base.details is not None:
        worse = clicks.score < base.details["click_score"] or box < base.details["box_alone_dice"]
        score = min(score, base.score) if worse else score
    return Evaluation(score, clicks.empty, details)


def finetune_loop_config(settings: FinetuneSettings, samples: int, run: dict) -> LoopConfig:
    """The training loop's configuration of a fine-tuning run over ``samples`` samples (what
    ``--epochs`` counts); ``run`` identifies the run a saved state belongs to."""
    steps = settings.steps
    if settings.epochs is not None:
        steps = math.ceil(settings.epochs * samples / settings.batch_size)
    return LoopConfig.for_command(
        settings, steps, run, warmup_steps=settings.warmup, schedule=settings.schedule,
        clip_norm=settings.clip_norm or None,
    )  # fmt: skip


class NotImprovedError(ValueError):
    """No trained state beat the base model: nothing is written."""


@dataclass(frozen=True)
class FinetuneOutcome:
    """What a validated fine-tuning run found.

    Attributes:
        history: one record per step (evaluated steps carry ``validation…`` columns).
        dice_before, dice_after: the protocol's mean Dice (1, 3, 5, 10 clicks) on the
            validation cases, of the base and of the adapters kept (empty when none is kept).
        box_before, box_after: ``--prompts box`` only: the mean box-alone Dice on them, of the
            base (derived prompts) and of the adapters kept (learned corners); else None.
        best: the validation state: ``best_step`` (0 when no evaluated state beat the base),
            ``start`` and ``best`` scores, ``collapsed``.
        kept_last: no state beat the base and the last one was kept on request.
    """

    history: list[dict]
    dice_before: dict[int, float]
    dice_after: dict[int, float]
    best: BestState
    kept_last: bool
    box_before: float | None = None
    box_after: float | None = None

    @property
    def scored_clicks(self) -> str:
        """The click counts whose Dice the validation score averages, e.g. "1, 3, 5"."""
        details = self.best.start.details if self.best.start else None
        keys = [key for key in details or {} if key.startswith("dice_")]
        return ", ".join(key.removeprefix("dice_") for key in keys)

    @property
    def score_name(self) -> str:
        """What the validation score is, e.g. "mean Dice after 1, 3, 5 clicks"."""
        clicks = f"mean Dice after {self.scored_clicks} clicks"
        if self.box_before is None:
            return clicks
        return f"mean of the {clicks} and the box-alone Dice"

    @property
    def usable(self) -> bool:
        """The adapters left in the model are to be written."""
        return self.best.improved or self.kept_last

    @property
    def _box_rule(self) -> str:
        if self.box_before is None:
            return ""
        return "; a state whose clicks or box alone do worse than the base's does not count"

    def verdict(self) -> str:
        """Why nothing was written, in one sentence and what to try."""
        start = self.best.start.score if self.best.start else float("nan")
        best = self.best.best.score if self.best.best else start
        collapse = (
            f"training stopped at step {len(self.history)}: nothing of the structure was found "
            "on any validation case at "
            f"{self.best.plan.collapse_after} evaluations in a row (the adapters collapsed); "
            if self.best.collapsed
            else ""
        )
        return (
            f"no trained state beat the base model on the validation case(s) ({self.score_name}"
            f": base {start:.3f}, best trained {best:.3f}{self._box_rule}); "
            f"{collapse}try a lower "
            "--lr, more cases or steps, or --keep-last to write the last state anyway"
        )


def finetune_validated(
    model: Sam3D,
    training: Sequence[TrainingCase],
    held_out: Sequence[TrainingCase],
    config: LoopConfig,
    ranks: Ranks,
    settings: ValidationSettings,
    clicks: int = 5,
    balanced: bool = True,
    observer: TrainingObserver | None = None,
    prompts: str = "point",
) -> FinetuneOutcome:
    """:func:`finetune` with validation: the base and every ``settings.every`` steps evaluated on
    ``held_out`` (``settings.clicks`` clicks of the protocol; with ``prompts="box"`` also each
    case's box alone, see :func:`with_box_dice`), the best state restored into ``model`` at the
    end; a collapse stops the run early.

    When no evaluated state beats the base, the model keeps the last state and the outcome is
    not :attr:`~FinetuneOutcome.usable` unless ``settings.keep_last``.
    """
    before = click_results(model, held_out, PROTOCOL_CLICKS)
    start = as_evaluation(before, settings.clicks)
    box_before = box_dice(model, held_out) if prompts == "box" else None
    if box_before is not None:
        start = with_box_dice(start, box_before)

    def evaluate() -> Evaluation:
        evaluation = as_evaluation(click_results(model, held_out, settings.clicks), settings.clicks)
        if box_before is None:
            return evaluation
        return with_box_dice(evaluation, box_dice(model, held_out), start)

    plan = ValidationPlan(evaluate, every=settings.every, collapse_after=settings.collapse_after)
    best = BestState(plan)
    best.start = start
    history = finetune(model, training, config, ranks, clicks=clicks, validation=best,
                       balanced=balanced, observer=observer, prompts=prompts)  # fmt: skip
    best.restore_best()
    outcome = FinetuneOutcome(
        history, before.mean_dice(), {}, best, settings.keep_last, box_before=box_before
    )
    if not outcome.usable:
        return outcome
    box_after = box_dice(model, held_out) if box_before is not None else None
    return replace(
        outcome, dice_after=click_dice(model, held_out, PROTOCOL_CLICKS), box_after=box_after
    )


@dataclass(frozen=True)
class ValidationSettings:
    """How ``finetune`` validates (see :func:`finetune_validated`).

    Attributes:
        every: steps between evaluations (and the last step).
        clicks: clicks of the protocol per validation case (cheap: the encoder runs once per
            case, the decoder once per click).
        collapse_after: evaluations in a row with an empty prediction that stop the run.
        keep_last: keep the last state when no evaluated state beats the base.
    """

    every: int = 25
    clicks: int = 5
    collapse_after: int = 3
    keep_last: bool = False
