"""Boxes as prompts: from a ground truth for ``finetune --prompts box``, and their Dice.

A box is given to the model in one of two ways:

- **learned corners** (a model fine-tuned with ``--prompts box``): its low and high corners as
  two points labelled 2 and 3, the way SAM takes a 2-D box;
- **derived prompts** (every other model, whose prompt encoder knows only points and a mask):
  a positive point at the box's centre, and the box's interior as the mask prompt's prior. This
  is the session's fallback; it is computed here too, as the base a box-trained model must beat.

Boxes are in crop voxel indices (d0, d1, d2), ``lo`` and ``hi`` inclusive: the centres of the
box's outermost voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..evaluation.protocol import MASK_LOGIT_THRESHOLD, crop_logits, dice_iou
from ..geometry import CROP_SIZE
from ..models.prompt_encoder import BOX_HIGH_CORNER, BOX_LOW_CORNER
from ..session.composition import box_prior_logits
from .data import TrainingCase

# Crop voxels (1.5 mm): each face of a training box moves in or out by up to this many, drawn
# uniformly, so that the model learns boxes drawn about the structure rather than exactly on it.
BOX_JITTER = 2

Box = tuple[np.ndarray, np.ndarray]  # lo, hi: int64 (3,) inclusive crop voxel indices


def truth_box(truth: np.ndarray) -> Box:
    """The bounding box of a bool ``(D0, D1, D2)`` mask with at least one voxel."""
    where = np.argwhere(truth)
    if not where.size:
        raise ValueError("the ground truth has no voxel: it has no box")
    return where.min(axis=0).astype(np.int64), where.max(axis=0).astype(np.int64)


def jittered_box(truth: np.ndarray, rng: np.random.Generator, jitter: int = BOX_JITTER) -> Box:
    """The truth's box with each of its six faces moved by a uniform integer in
    ``[-jitter, jitter]`` voxels, kept inside the crop and holding the truth's middle voxel."""
    lo, hi = truth_box(truth)
    moves = rng.integers(-jitter, jitter + 1, size=(2, 3))
    last = np.asarray(truth.shape) - 1
    # A face moves in no further than the truth's middle voxel, so the box always holds some of
    # a small or thin object (as evaluate's simulated box).
    middle = (lo + hi) // 2
    lo = np.clip(lo - moves[0], 0, middle)
    hi = np.clip(hi + moves[1], middle, last)
    return lo, hi


def corner_prompt(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """A box as learned corners: points float32 ``(2, 3)`` and labels int64 ``(2,)`` = (2, 3)."""
    points = np.stack(box).astype(np.float32)
    return points, np.array([BOX_LOW_CORNER, BOX_HIGH_CORNER], dtype=np.int64)


def derived_prompt(box: Box, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box as prompts that any model takes, as the session derives them: a positive point at
    its centre (float32 ``(1, 3)``, label int64 ``(1,)`` = 1), and the box as the mask prompt's
    prior, float32 ``(32, 32, 32)`` logits: the session's own
    :func:`~fastsam3d_core.session.composition.box_prior_logits` for a segment that is empty
    there."""
    centre = ((box[0] + box[1]) / 2.0).astype(np.float32)[None]
    prior = box_prior_logits(inside_box(box, (size,) * 3))
    return centre, np.ones(1, dtype=np.int64), prior


def inside_box(box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """Bool mask of ``shape``, True inside ``box``."""
    lo, hi = box
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = True
    return mask


def box_alone_dice(
    predictor: Any, cases: Sequence[TrainingCase], learned: bool | None = None
) -> list[float]:
    """Each case's Dice from its truth's box alone (no jitter, one decode), the prediction kept
    inside the box as the session keeps a box's result.

    Args:
        predictor: a :class:`~fastsam3d_core.session.model_predictor.ModelPredictor` (any
            predictor with ``encode``/``decode``).
        learned: give the box as learned corners (True) or as derived prompts (False); None:
            corners where the predictor ``accepts_box_corners``.
    """
    if learned is None:
        learned = bool(getattr(predictor, "accepts_box_corners", False))
    scores = []
    for case in cases:
        box = truth_box(case.truth)
        embedding = predictor.encode(case.crop)
        if learned:
            logits = predictor.decode(embedding, *corner_prompt(box), None)
        else:
            logits = predictor.decode(embedding, *derived_prompt(box))
        predicted = crop_logits(logits) > MASK_LOGIT_THRESHOLD
        predicted &= inside_box(box, predicted.shape)
        scores.append(dice_iou(predicted, case.truth)[0])
    return scores
