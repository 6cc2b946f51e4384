"""``fastsam3d finetune`` and ``distill`` are their Python workflows: the same settings give the
same files and report the same numbers, whichever way they are called.

Both sides run in this process (the command through its entry point), on the same threads: a
thread count changes the encoder's rounding, and the sampled clicks follow it. One step each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA_DIR, invoke_cli, seeded_model
from training_cli import LIVER, finetune_command

from fastsam3d_core.training.observer import TrainingObserver
from fastsam3d_core.training.settings import DistillSettings, FinetuneSettings
from fastsam3d_core.training.workflows import run_distill, run_finetune


class Recorder(TrainingObserver):
    """Keeps what a run reports."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []
        self.steps: list[tuple[int, int]] = []
        self.ended = 0

    def message(self, text: str) -> None:
        self.messages.append(text)

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def step_finished(self, record: dict, steps: int) -> None:
        self.steps.append((record["step"], steps))

    def steps_ended(self) -> None:
        self.ended += 1


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _named(lines: list[str], output: Path) -> list[str]:
    """The lines with the output's name (and its folder) replaced, to compare two runs."""
    return [line.replace(str(output), "OUT").replace(output.name, "OUT") for line in lines]


@pytest.mark.slow
def test_finetune_from_python_writes_the_adapter_the_command_writes(
    seeded_checkpoint, liver_listing, tmp_path
):
    by_command = tmp_path / "command.pt"
    options = ("--validate-every", "1", "--validation-clicks", "1", "--keep-last")
    command = finetune_command(seeded_checkpoint, liver_listing, by_command, 1, *options)
    run = invoke_cli(command[1:])
    assert run.exit_code == 0, run.output
    by_python = tmp_path / "python.pt"
    settings = FinetuneSettings(data=liver_listing, output=by_python, weights=seeded_checkpoint,
                                label=LIVER, steps=1, clicks=2, validate_every=1,
                                validation_clicks=1, keep_last=True, device="cpu")  # fmt: skip
    recorder = Recorder()
    result = run_finetune(settings, recorder)

    written, expected = _load(by_python), _load(by_command)
    assert written["summary"] == expected["summary"] == result.summary
    assert written["base"] == expected["base"]
    assert written["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in written["state_dict"].items():
        assert torch.equal(value, expected["state_dict"][key]), key
    assert result.outcome.dice_before == expected["summary"]["dice_before"]
    assert result.outcome.dice_after == expected["summary"]["dice_after"]
    assert result.files[0] == by_python and all(path.is_file() for path in result.files)
    # The command prints what the workflow reports, line for line (the Dice among them).
    assert _named(recorder.messages, by_python) == _named(run.stdout.splitlines(), by_command)
    assert recorder.steps == [(1, 1)] and recorder.ended == 1
    assert "step 1/1  loss" in run.stderr


@pytest.mark.slow
def test_distill_from_python_writes_the_student_the_command_writes(tmp_path):
    teacher = tmp_path / "turbo-seeded.pth"
    torch.save({"model_state_dict": seeded_model("sam-med3d-turbo").state_dict()}, teacher)
    data = SHARED_DATA_DIR / "brats2021_flair_edema"
    by_command = tmp_path / "command.pt"
    run = invoke_cli(["distill", data, "--teacher-weights", teacher, "--steps", "1",
                      "--logit-steps", "0", "--validate-every", "1", "--keep-last",
                      "--device", "cpu", "-o", by_command])  # fmt: skip
    assert run.exit_code == 0, run.output
    by_python = tmp_path / "python.pt"
    settings = DistillSettings(
        data=data,
        output=by_python,
        teacher_weights=teacher,
        steps=1,
        logit_steps=0,
        validate_every=1,
        keep_last=True,
        device="cpu",
    )
    recorder = Recorder()
    result = run_distill(settings, recorder)

    written, expected = _load(by_python), _load(by_command)
    assert written["distillation"]["best_step"] == result.best_step
    for key in ("history", "best_step", "steps", "logit_steps", "teacher"):
        if key == "history":  # the same losses; the seconds differ
            losses = [(r["step"], r["loss"], r["k"]) for r in written["distillation"][key]]
            assert losses == [(r["step"], r["loss"], r["k"]) for r in expected["distillation"][key]]
        else:
            assert written["distillation"][key] == expected["distillation"][key], key
    for key, value in written["model_state_dict"].items():
        assert torch.equal(value, expected["model_state_dict"][key]), key
    assert _named(recorder.messages, by_python) == _named(run.stdout.splitlines(), by_command)
    assert [f"warning: {text}" for text in recorder.warnings] == [
        line for line in run.stderr.splitlines() if line.startswith("warning: ")
    ]


def test_settings_take_file_names_as_strings(tmp_path):
    """A script may name its files with strings: they are paths from the start, so the run does
    not fail where it first takes a path's name (the state file beside the output)."""
    from fastsam3d_core.training.workflows import _finetune_config

    output = str(tmp_path / "liver.adapter.pt")
    finetune = FinetuneSettings(data="cases.txt", output=output, weights="base.pth")
    assert (finetune.data, finetune.output, finetune.weights) == (
        Path("cases.txt"), Path(output), Path("base.pth"))  # fmt: skip
    config = _finetune_config(finetune, ["case_1"], "0" * 64, None)
    assert config.checkpoint == Path(output + ".state")
    distill = DistillSettings(data="images", output="student.pt", teacher_weights="turbo.pth",
                              student_weights="start.pth")  # fmt: skip
    assert all(isinstance(path, Path) for path in (distill.data, distill.output,
               distill.teacher_weights, distill.student_weights))  # fmt: skip
    assert FinetuneSettings(data="cases.txt", output="out.pt").weights is None  # the released
    assert DistillSettings(data="images", output="out.pt").student_weights is None  # random
