"""What a training run tells its caller, as one observer object.

The training code prints nothing: ``fastsam3d finetune`` and ``distill`` pass an observer that
prints (lines on stdout, warnings and the step counter on stderr); a script passes its own, or
none. Every method has a default that does nothing.
"""

from __future__ import annotations

from pathlib import Path


class TrainingObserver:
    """Receives a training run's events. Override what the caller shows."""

    def message(self, text: str) -> None:
        """A line for the user: what the run does ("preparing 3 case(s) ...") or found."""

    def warning(self, text: str) -> None:
        """Something the user must read, e.g. that the last state is written though it did not
        beat the start (``--keep-last``)."""

    def resumed(self, path: Path, steps_done: int) -> None:
        """The run continues from its saved state ``path``, after ``steps_done`` steps."""

    def step_finished(self, record: dict, steps: int) -> None:
        """Optimizer step ``record["step"]`` of ``steps`` is done (on rank 0 only); ``record``
        holds its ``loss``, ``seconds`` and, when it was evaluated, ``validation``."""

    def steps_ended(self) -> None:
        """No more steps follow (on rank 0 only): the last step, or a stop on a collapse."""


def describe_step(record: dict, steps: int) -> str:
    """One step's progress as the command line shows it: loss, validation, time left."""
    done = record["step"]
    eta = record["seconds"] * (steps - done)
    validation = f"  validation {record['validation']:.3f}" if "validation" in record else ""
    return (
        f"step {done}/{steps}  loss {record['loss']:.4f}{validation}  "
        f"{record['seconds']:.1f} s/step  about {eta:.0f} s left "
    )
