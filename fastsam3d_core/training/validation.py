"""Validation during training: evaluate every K steps, keep the best state, stop a collapse.

A fine-tuned or distilled model is only worth writing when it is better than what the user
started from. The training loop asks a :class:`BestState` after every step whether to evaluate;
it evaluates the trained parameters, remembers the best of them (in memory and in the loop's
saved state, so a resumed run still knows them) and tells the loop to stop early when the
evaluations show a collapse (nothing of the structure found on any validation case several times
in a row). Higher scores are better (a loss is passed negated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the model being trained.

    Attributes:
        score: higher is better (mean Dice; a loss negated).
        empty: nothing of the structure was found on any validation case (fine-tuning only).
        details: what the record and the summary show (e.g. Dice after each click count).
    """

    score: float
    empty: bool = False
    details: dict | None = None


@dataclass(frozen=True)
class ValidationPlan:
    """When and how to evaluate.

    Attributes:
        evaluate: evaluates the model as it is now (called on every rank, in eval mode and
            without gradients; the same on every rank).
        every: steps between evaluations; the last step is always evaluated.
        collapse_after: evaluations in a row with an "empty" evaluation that stop the run.
    """

    evaluate: Callable[[], Evaluation]
    every: int = 25
    collapse_after: int = 3


class BestState:
    """The best evaluated state of a training run, and whether the run collapsed.

    Attributes:
        start: the evaluation before any step (the base the result must beat).
        best_step, best: the step and evaluation of the best state so far (0 and ``start``
            until a state beats the start).
        collapsed: the run stopped because ``collapse_after`` evaluations in a row were empty.
    """

    def __init__(self, plan: ValidationPlan) -> None:
        self.plan = plan
        self.start: Evaluation | None = None
        self.best_step = 0
        self.best: Evaluation | None = None
        self.best_parameters: dict[str, torch.Tensor] | None = None
        self.empty_in_a_row = 0
        self.collapsed = False
        self._objective: nn.Module | None = None

    @property
    def improved(self) -> bool:
        """A state evaluated better than the start."""
        return self.best_parameters is not None

    def begin(self, objective: nn.Module) -> None:
        """Evaluate the start once (a resumed run keeps the one it saved; a start given by the
        caller is rank 0's on every rank); ``objective`` holds the trained parameters (by their
        names there)."""
        self._objective = objective
        self.start = self._evaluate(objective) if self.start is None else _agreed(self.start)

    def after_step(self, step: int, objective: nn.Module, last: bool, record: dict) -> bool:
        """Evaluate after ``step`` (1-based) when due; returns True when the run must stop."""
        if not last and step % self.plan.every:
            return False
        assert self.start is not None, "begin() first"
        evaluation = self._evaluate(objective)
        record["validation"] = evaluation.score
        record.update({f"validation_{k}": v for k, v in (evaluation.details or {}).items()})
        if evaluation.score > (self.best or self.start).score:
            self.best_step, self.best = step, evaluation
            self.best_parameters = trained_state(objective)
        self.empty_in_a_row = self.empty_in_a_row + 1 if evaluation.empty else 0
        self.collapsed = self.empty_in_a_row >= self.plan.collapse_after
        return self.collapsed

    def restore_best(self) -> None:
        """Put the best state's parameters back into the objective trained (when a state beat
        the start; else they stay as the last step left them)."""
        if self.best_parameters is None or self._objective is None:
            return
        parameters = dict(self._objective.named_parameters())
        with torch.no_grad():
            for name, value in self.best_parameters.items():
                parameters[name].copy_(value)

    def state_dict(self) -> dict:
        return {
            "start": _as_dict(self.start),
            "best": _as_dict(self.best),
            "best_step": self.best_step,
            "best_parameters": self.best_parameters,
            "empty_in_a_row": self.empty_in_a_row,
            "collapsed": self.collapsed,
        }

    def load_state_dict(self, state: dict) -> None:
        self.start = _from_dict(state["start"])
        self.best = _from_dict(state["best"])
        self.best_step = int(state["best_step"])
        self.best_parameters = state["best_parameters"]
        self.empty_in_a_row = int(state["empty_in_a_row"])
        # A run that stopped on a collapse stays stopped when resumed (to write with --keep-last).
        self.collapsed = bool(state.get("collapsed", False))

    def _evaluate(self, objective: nn.Module) -> Evaluation:
        was_training = objective.training
        objective.eval()
        try:
            with torch.no_grad():
                evaluation = self.plan.evaluate()
        finally:
            objective.train(was_training)
        return _agreed(evaluation)


def trained_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters by their names in ``objective``, copied to the CPU."""
    return {
        name: p.detach().cpu().clone()
        for name, p in objective.named_parameters()
        if p.requires_grad
    }


def _agreed(evaluation: Evaluation) -> Evaluation:
    """Rank 0's evaluation on every rank, so that all ranks keep the same state and stop
    together even where their arithmetic differs in the last bit."""
    if not (dist.is_available() and dist.is_initialized()):
        return evaluation
    shared = [evaluation]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _as_dict(evaluation: Evaluation | None) -> dict | None:
    if evaluation is None:
        return None
    return {"score": evaluation.score, "empty": evaluation.empty, "details": evaluation.details}


def _from_dict(saved: dict | None) -> Evaluation | None:
    return None if saved is None else Evaluation(**saved)
