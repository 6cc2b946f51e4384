"""Validation during training: the loop's best-state keeping on a model small enough to reason
about (a single weight trained toward a target, evaluated by how close it came), and
``fastsam3d finetune`` refusing to write a model worse than its base."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from training_cli import finetune_command, run_cli

from fastsam3d_core.training.loop import LoopConfig, Ranks, train
from fastsam3d_core.training.validation import BestState, Evaluation, ValidationPlan

CPU = Ranks(0, 1, torch.device("cpu"))


class Weight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))


def _loss_toward(target: float):
    def compute_loss(objective: nn.Module, samples: list[int], step: int) -> torch.Tensor:
        return (objective.value - target) ** 2

    return compute_loss


def _closeness(objective: Weight, target: float, empty_below: float = -1.0):
    """Score: minus the distance to ``target``; 'empty' when the score is below a bound."""

    def evaluate() -> Evaluation:
        score = -abs(float(objective.value.detach()) - target)
        value = float(objective.value.detach())
        return Evaluation(score, empty=score < empty_below, details={"value": value})

    return evaluate


def test_the_best_evaluated_state_is_kept_and_restored_and_the_last_step_is_evaluated():
    objective = Weight()
    # The loss pulls the weight toward 3, past the validation's target 1: the best state is
    # the one nearest 1, not the last.
    best = BestState(ValidationPlan(_closeness(objective, 1.0), every=2))
    config = LoopConfig(steps=7, learning_rate=0.3)
    history = train(objective, _loss_toward(3.0), config, CPU, validation=best)
    evaluated = [r["step"] for r in history if "validation" in r]
    assert evaluated == [2, 4, 6, 7]
    values = {r["step"]: r["validation_value"] for r in history if "validation" in r}
    nearest = min(values, key=lambda step: abs(values[step] - 1.0))
    assert best.improved and best.best_step == nearest and nearest != 7
    assert best.start is not None and best.start.score == -1.0  # evaluated before any step
    last = float(objective.value.detach())
    best.restore_best()
    assert float(objective.value.detach()) == pytest.approx(values[nearest]) != last


def test_no_state_better_than_the_start_leaves_nothing_to_restore():
    objective = Weight()
    best = BestState(ValidationPlan(_closeness(objective, 0.0), every=1))
    config = LoopConfig(steps=3, learning_rate=0.5)
    train(objective, _loss_toward(5.0), config, CPU, validation=best)
    assert not best.improved and best.best_step == 0
    before = float(objective.value.detach())
    best.restore_best()  # nothing beat the start: the parameters stay as they are
    assert float(objective.value.detach()) == before != 0.0


def test_a_collapse_stops_the_run_after_that_many_empty_evaluations_in_a_row():
    objective = Weight()
    plan = ValidationPlan(_closeness(objective, 0.0, empty_below=-0.5), every=1, collapse_after=3)
    best = BestState(plan)
    config = LoopConfig(steps=50, learning_rate=0.5)
    history = train(objective, _loss_toward(5.0), config, CPU, validation=best)
    empty_from = next(r["step"] for r in history if r["validation"] < -0.5)
    assert best.collapsed and len(history) == empty_from + 2 < 50


def test_a_resumed_run_keeps_the_best_state_found_before_it_stopped(tmp_path):
    state = tmp_path / "run.state"

    def run(steps: int) -> tuple[Weight, BestState, list[dict]]:
        objective = Weight()
        best = BestState(ValidationPlan(_closeness(objective, 1.0), every=2))
        config = LoopConfig(steps=steps, learning_rate=0.3, checkpoint=state, checkpoint_every=1)
        return objective, best, train(objective, _loss_toward(3.0), config, CPU, validation=best)

    _, whole, _ = run(7)
    state.unlink()
    run(4)  # stops after step 4, as if killed; the state holds its best so far
    objective, resumed, history = run(7)
    assert len(history) == 7 and resumed.best_step == whole.best_step
    assert resumed.start == whole.start and resumed.best == whole.best
    resumed.restore_best()
    assert torch.equal(objective.value.detach(), whole.best_parameters["value"])


def test_a_run_stopped_on_a_collapse_stays_stopped_when_resumed(tmp_path):
    state = tmp_path / "run.state"

    def run() -> tuple[BestState, list[dict]]:
        objective = Weight()
        plan = ValidationPlan(_closeness(objective, 0.0, empty_below=-0.5), every=1)
        best = BestState(plan)
        config = LoopConfig(steps=50, learning_rate=0.5, checkpoint=state, checkpoint_every=50)
        return best, train(objective, _loss_toward(5.0), config, CPU, validation=best)

    first, history = run()
    assert first.collapsed and len(history) < 50
    again, resumed = run()  # e.g. with --keep-last: nothing is trained again
    assert again.collapsed and resumed == history


def test_the_validation_score_is_the_mean_dice_after_1_3_and_5_of_the_first_clicks():
    from fastsam3d_core.evaluation.protocol import CaseResult
    from fastsam3d_core.evaluation.report import EvaluationReport
    from fastsam3d_core.training.finetune import as_evaluation

    dice = (0.0, 0.0, 0.3, 0.0, 0.6, 0.1, 0.2, 0.3, 0.4, 0.9)
    report = EvaluationReport((CaseResult("a", "ok", dice=dice, iou=dice),), 10)
    five = as_evaluation(report, 5)
    assert five.score == pytest.approx((0.0 + 0.3 + 0.6) / 3) and not five.empty
    assert five.details == {"dice_1": 0.0, "dice_3": 0.3, "dice_5": 0.6}
    two = as_evaluation(report, 2)  # only the first two clicks count, also for "empty"
    assert two.score == 0.0 and two.empty


@pytest.mark.slow
def test_a_diverging_finetune_writes_no_adapter_and_says_so_in_one_line(
    seeded_checkpoint, liver_listing, tmp_path
):
    adapter = tmp_path / "diverged.adapter.pt"
    command = finetune_command(seeded_checkpoint, liver_listing, adapter, 4, "--lr", "30",
                                "--validate-every", "2")  # fmt: skip
    run = run_cli(command, env={"FASTSAM3D_DEBUG": ""})
    assert run.returncode == 1, run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and str(adapter) in line, run.stderr
    assert "not written: no trained state beat the base model" in line and "--lr" in line
    assert not adapter.exists()
    records = json.loads(adapter.with_name(adapter.name + ".metrics.json").read_text("utf-8"))
    assert [r["step"] for r in records if "validation" in r] == [2, 4]
    # The user who wants it anyway: --keep-last resumes the kept state (no step again) and
    # writes the last state, with a warning.
    run = run_cli([*command, "--keep-last"])
    assert run.returncode == 0, run.stderr
    assert "resuming from" in run.stderr and "--keep-last: writing the last state" in run.stderr
    summary = torch.load(adapter, weights_only=True)["summary"]
    assert summary["kept_last"] and summary["best_step"] == 0 and summary["steps_run"] == 4
