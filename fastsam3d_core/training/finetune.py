"""Fine-tuning with Med-SA adapters on the user's labelled cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..evaluation.protocol import run_clicks
from ..evaluation.report import EvaluationReport
from ..models.adapter import AdapterConfig, attach_adapters
from ..models.sam3d import Sam3D
from .data import TrainingCase
from .loop import LoopConfig, Ranks, case_of, train
from .objectives import InteractiveObjective


def finetune(
    model: Sam3D,
    cases: Sequence[TrainingCase],
    config: LoopConfig,
    ranks: Ranks,
    adapters: AdapterConfig | None = None,
    clicks: int = 5,
) -> list[dict]:
    """Attach adapters to ``model`` (frozen) and train them on ``cases``; returns the history.

    Args:
        model: the base model, its weights loaded, on ``ranks.device``.
        cases: prepared crops (:func:`~fastsam3d_core.training.data.prepare`).
        config, ranks: see :func:`~fastsam3d_core.training.loop.train`.
        adapters: their configuration (default :class:`AdapterConfig`).
        clicks: simulated clicks per crop and step.
    """
    attach_adapters(model, adapters or AdapterConfig())
    model.train()
    objective = InteractiveObjective(model, clicks)
    images = torch.from_numpy(np.stack([c.crop.image for c in cases]))[:, None]
    truths = torch.from_numpy(np.stack([c.truth for c in cases]))

    def compute_loss(wrapped: torch.nn.Module, samples: list[int], step: int) -> torch.Tensor:
        chosen = [case_of(n, len(cases), config.seed) for n in samples]
        seeds = [[config.seed, n] for n in samples]
        return wrapped(images[chosen].to(ranks.device), truths[chosen], seeds)

    try:
        return train(objective, compute_loss, config, ranks)
    finally:
        model.eval()


def click_dice(model: Sam3D, cases: Sequence[TrainingCase], clicks: int = 10) -> dict[int, float]:
    """Mean Dice after 1, 3, 5 and 10 clicks of the paper's protocol (fixed seeds) on ``cases``,
    as ``fastsam3d evaluate`` reports it."""
    from ..session.model_predictor import ModelPredictor

    predictor = ModelPredictor(model)
    results = tuple(
        run_clicks(predictor, case.crop, case.truth, clicks, False, np.random.default_rng(number))
        for number, case in enumerate(cases)
    )
    return EvaluationReport(results, clicks).mean_dice()
