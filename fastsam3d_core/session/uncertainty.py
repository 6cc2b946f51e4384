"""Uncertainty by self-ensembling (FastSAM3D Slicer paper, model.md §5.7), on a cached embedding.

The decoder runs many times on the same crop and embedding with perturbed prompts: every click
jittered by a Gaussian of a few voxels, plus one positive point drawn from the current mask. The
mean of the passes' probabilities is the per-voxel probability; its binary entropy (bits) is the
uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import CropGrid, Volume
from ..geometry.paste import logits_on_volume, upsample_logits
from .predictor import Predictor
from .state import CropState, decoder_prompt


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """Self-ensembling result on the volume's grid.

    Attributes:
        probability: float32 volume in [0, 1]; outside the crop, the segment's current mask.
        entropy: float32 volume in bits, 0 outside the crop.
        most_uncertain_ras: RAS mm (3,) of the highest-entropy voxel, or None if all are certain.
    """

    probability: Volume
    entropy: Volume
    most_uncertain_ras: np.ndarray | None


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy in bits of Bernoulli variables with the given probabilities."""
    p = np.clip(probability, 1e-7, 1 - 1e-7)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def ensemble_probability(
    predictor: Predictor,
    embedding: Any,
    crop: CropState,
    samples: int,
    jitter_voxels: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mean probability over ``samples`` decoder passes, float32 ``(S, S, S)`` on the crop grid
    (crop axes d0, d1, d2)."""
    if not crop.clicks or crop.logits is None:
        raise ValueError("uncertainty needs at least one click in the crop")
    size = crop.grid.size
    base, labels = decoder_prompt(crop.grid, crop.clicks)
    current = upsample_logits(crop.logits, size) > 0
    inside = np.argwhere(current)
    total = np.zeros((size,) * 3, dtype=np.float32)
    for _ in range(samples):
        points = np.clip(base + rng.normal(0, jitter_voxels, base.shape), 0, size - 1)
        point_labels = labels
        if len(inside):
            points = np.vstack([points, inside[rng.integers(len(inside))]]).astype(np.float32)
            point_labels = np.append(labels, 1)
        logits = predictor.decode(embedding, points.astype(np.float32), point_labels, crop.logits)
        logits = np.asarray(logits, dtype=np.float32)
        logits = logits.reshape((-1,) + logits.shape[-3:])[0]
        # The logistic function, written so that no exp overflows.
        total += np.exp(-np.logaddexp(0.0, -upsample_logits(logits, size)))
    return total / samples


def on_volume(
    volume: Volume, mask: np.ndarray, grid: CropGrid, probability_crop: np.ndarray
) -> Uncertainty:
    """The crop's ensemble probability (``(S, S, S)`` on ``grid``, axes d0, d1, d2) on the
    volume's grid: the segment's ``mask`` (uint8 ``(I, J, K)``) outside the crop's footprint."""
    box = logits_on_volume(probability_crop, grid, volume)
    probability = mask.astype(np.float32)
    probability[box.slices] = np.where(box.inside, box.values, probability[box.slices])
    entropy = np.zeros_like(probability)
    entropy[box.slices] = np.where(box.inside, binary_entropy(box.values), 0)
    peak = np.unravel_index(np.argmax(entropy), entropy.shape)
    most_uncertain = volume.index_to_ras(np.array(peak)) if entropy[peak] > 0.01 else None
    return Uncertainty(volume.with_array(probability), volume.with_array(entropy), most_uncertain)
