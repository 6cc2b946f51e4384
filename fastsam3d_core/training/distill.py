"""FastSAM3D's distillation of a student encoder from a teacher's (paper §2.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..geometry import check_segmentable, crop_grid_around, extract_crop
from .data import DatasetError, find_images
from .loop import LoopConfig, Ranks, case_of, train
from .objectives import LayerwiseDistillation, layers_in_use, logit_loss
from .observer import TrainingObserver
from .validation import BestState, Evaluation


def image_crops(data: Path, say: Callable[[str], None] | None = None) -> torch.Tensor:
    """One 128³ crop per image of ``data``, centred on the image, normalised as for the model:
    ``(N, 1, 128, 128, 128)`` float32, crop voxels (d0, d1, d2). ``say`` is told how many."""
    from ..io import read_volume  # SimpleITK, on first use

    images = find_images(data)
    if say is not None:
        say(f"preparing {len(images)} image(s) from {data} ...")
    crops = []
    for path in images:
        volume = read_volume(path)
        try:
            check_segmentable(volume)
        except ValueError as error:
            raise DatasetError(f"{path}: {error}") from None
        centre = volume.index_to_ras((np.array(volume.shape) - 1) / 2)
        crops.append(extract_crop(volume, crop_grid_around(volume, centre)).image)
    return torch.from_numpy(np.stack(crops))[:, None]


def distill_encoder(
    objective: LayerwiseDistillation,
    crops: torch.Tensor,
    config: LoopConfig,
    ranks: Ranks,
    layerwise_steps: int,
    validation: BestState | None = None,
    observer: TrainingObserver | None = None,
) -> list[dict]:
    """Train the objective's student (and projections) toward its teacher: ``layerwise_steps``
    steps of the layer-wise loss with k from Eq. 2 (iteration = step, total =
    ``layerwise_steps``), then the rest of ``config.steps`` on the final embedding (logit
    level; k = 0 in the records).

    ``validation`` (see :func:`~fastsam3d_core.training.loop.train`) keeps the best student,
    e.g. by :func:`logit_validation`; ``observer`` is told of every step.

    Returns:
        One record per step: ``step``, ``loss``, ``k``, ``seconds``.
    """
    student = objective.student
    objective.to(ranks.device)
    student.train()
    depth = len(student.blocks)

    def k_at(step: int) -> int:
        if step < layerwise_steps:
            return layers_in_use(step + 1, layerwise_steps, depth)
        return 0

    def compute_loss(wrapped: torch.nn.Module, samples: list[int], step: int) -> torch.Tensor:
        chosen = [case_of(n, len(crops), config.seed) for n in samples]
        return wrapped(crops[chosen].to(ranks.device), k_at(step))

    try:
        describe = lambda step: {"k": k_at(step)}  # noqa: E731
        return train(objective, compute_loss, config, ranks, describe, validation, observer)
    finally:
        student.eval()


def logit_validation(
    objective: LayerwiseDistillation, crops: torch.Tensor, device: torch.device
) -> Callable[[], Evaluation]:
    """The validation of a distillation: the logit-level loss (final embeddings, student against
    teacher) over ``crops``, negated as a score. The teacher's embeddings are computed once."""
    teacher_embeddings: list[torch.Tensor] = []

    def evaluate() -> Evaluation:
        if not teacher_embeddings:
            teacher_embeddings.extend(objective.teacher(c[None].to(device)) for c in crops)
        losses = [
            float(logit_loss(target, objective.student(crop[None].to(device))))
            for crop, target in zip(crops, teacher_embeddings)
        ]
        mean = sum(losses) / len(losses)
        return Evaluation(-mean, details={"logit_loss": mean})

    return evaluate
