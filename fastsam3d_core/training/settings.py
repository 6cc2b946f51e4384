"""What a ``finetune`` or ``distill`` run is asked to do: its settings, with their defaults.

The command line takes its options' defaults from here, so a run from Python and one from the
command line with the same arguments are the same run. Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# What ``finetune --prompts`` trains the model to start from: clicks (the paper's protocol), or
# the structure's box, whose corners get learned embeddings (labels 2 and 3).
PROMPTS = ("point", "box")

# How the learning rate goes after the warm-up (training.loop.LoopConfig.learning_rate_at).
SCHEDULES = ("constant", "cosine")

# The settings that name files: given as strings (a script's literals, a parsed config), they
# are made paths at once, not minutes later where a path's method is first called on them.
_PATH_FIELDS = ("data", "output", "weights", "teacher_weights", "student_weights")


def _paths_as_paths(settings: object) -> None:
    """Turn ``settings``' file fields (any of :data:`_PATH_FIELDS`) into :class:`Path`; None
    stays None (the released weights)."""
    for field in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        if field.name in _PATH_FIELDS and value is not None and not isinstance(value, Path):
            object.__setattr__(settings, field.name, Path(value))  # frozen: set once, here


# The settings that take one of a few words, each with its option's name and the words.
CHOICES = {"prompts": ("--prompts", PROMPTS), "schedule": ("--schedule", SCHEDULES)}


def check_choice(setting: str, value: str) -> None:
    """Raises ValueError, in one line naming the option, for a ``value`` of ``setting`` (a key
    of :data:`CHOICES`) that is not one of its words."""
    option, words = CHOICES[setting]
    if value not in words:
        raise ValueError(f"{option} {value!r}: choose from {', '.join(words)}")


@dataclass(frozen=True)
class FinetuneSettings:
    """A fine-tuning run (see :func:`~fastsam3d_core.training.workflows.run_finetune`).

    Attributes:
        data: an nnU-Net/MSD folder (imagesTr/, labelsTr/, dataset.json) or a text file of
            ``IMAGE LABEL`` lines.
        output: the adapter file to write; ``OUTPUT.state`` holds the resumable training state,
            ``OUTPUT.metrics.csv/.json`` and ``OUTPUT.png`` the history.
        model, weights: the base model and its checkpoint (None: the released one).
        label: the structure: a label value, or a name from dataset.json or the .seg.nrrd
            files (None: every non-zero voxel).
        steps: optimizer steps; ``epochs`` (passes over the training cases) replaces them.
        batch_size: crops per step, across all torchrun processes.
        accumulation: micro-batches per process and step.
        learning_rate, warmup: Adam's rate, and the steps over which it grows to it.
        schedule: the rate after the warm-up: ``constant`` or ``cosine`` (down to 0 at the
            last step; see :class:`~fastsam3d_core.training.loop.LoopConfig`).
        clip_norm: the gradients' global L2 norm is clipped to this (None or 0: not).
        clicks: simulated clicks per crop and step.
        prompts: what each crop starts from: ``point`` (the paper's clicks) or ``box`` (the
            structure's box, jittered; its corners' embeddings are learned with the adapters
            and stored in the adapter file, and validation scores the box alone too).
        validation: the fraction of cases held out (0, or one case: the training cases).
        validate_every, validation_clicks: steps between evaluations of the held-out cases,
            and the protocol's clicks per case there.
        keep_last: write the last state when no evaluated state beats the base (default:
            write nothing and raise :class:`~fastsam3d_core.training.finetune.NotImprovedError`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps`` (or a torch device).
        seed: seeds the split, crop order and clicks.
        checkpoint_every: steps between saved training states.
        text: train the text path (RefSAM3D's cross-modal reference) and the decoder's
            adapters on every named structure instead (:mod:`.text_workflow`); ``label`` and
            ``prompts`` do not apply, ``clicks`` counts the text as its first round.
        synonyms: with ``text``, ``"name=synonym"`` pairs (``liver=hepatic``).
        text_model: with ``text``, the text encoder: a registry name, a file or ``seeded:<n>``
            (None: the default CLIP text model).
    """

    data: Path
    output: Path
    model: str = "fastsam3d"
    weights: Path | None = None
    label: str | int | None = None
    steps: int = 200
    epochs: int | None = None
    batch_size: int = 1
    accumulation: int = 1
    learning_rate: float = 3e-3
    warmup: int = 0
    schedule: str = "constant"
    clip_norm: float | None = None
    clicks: int = 5
    prompts: str = "point"
    validation: float = 0.2
    validate_every: int = 25
    validation_clicks: int = 5
    keep_last: bool = False
    device: str | torch.device = "auto"
    seed: int = 0
    checkpoint_every: int = 25
    text: bool = False
    synonyms: tuple[str, ...] = ()
    text_model: str | None = None

    def __post_init__(self) -> None:
        _paths_as_paths(self)
        for setting in CHOICES:  # here, not minutes later where the loop starts
            check_choice(setting, getattr(self, setting))
        object.__setattr__(self, "synonyms", tuple(self.synonyms))  # frozen: set once, here


@dataclass(frozen=True)
class DistillSettings:
    """A distillation run (see :func:`~fastsam3d_core.training.workflows.run_distill`).

    Attributes:
        data: a folder of images (its imagesTr/ if it has one) or a text file listing them.
        output: the student checkpoint to write (with ``.state``, ``.metrics.*`` beside it).
        teacher, teacher_weights: the teacher model and its checkpoint (None: the released one).
        student, student_weights: the student model, started from this checkpoint's encoder
            (None: random, from ``seed``).
        steps: layer-wise steps (Eq. 1-2); ``logit_steps`` logit-level steps follow them.
        batch_size, accumulation, learning_rate, device, seed, checkpoint_every: as for
            :class:`FinetuneSettings`.
        validate_every: steps between evaluations of the logit-level loss.
        keep_last: write the last student when no evaluated one beats the start.
    """

    data: Path
    output: Path
    teacher: str = "sam-med3d-turbo"
    teacher_weights: Path | None = None
    student: str = "fastsam3d"
    student_weights: Path | None = None
    steps: int = 36
    logit_steps: int = 36
    batch_size: int = 1
    accumulation: int = 1
    learning_rate: float = 5e-3
    validate_every: int = 12
    keep_last: bool = False
    device: str | torch.device = "auto"
    seed: int = 0
    checkpoint_every: int = 25

    def __post_init__(self) -> None:
        _paths_as_paths(self)
