"""How closely a reduced-precision image encoder reproduces float32 (:mod:`..models.precision`).

Every figure compares one model with a copy of itself in another precision, same weights and
inputs; float32 is the reference, so no ground truth and no trained weights are needed:

* embedding relative error: max |e - e32| / max |e32|;
* equal voxels: the fraction of voxels on which the two masks (logit > 0) agree;
* Dice between the two masks at full resolution: the 128³ crop for crops, the volume's own voxel
  grid for scans (clicks through a :class:`~fastsam3d_core.session.Session`, as a user's land).

Each source reports its worst mask (lowest equal fraction, lowest Dice). The check crop that
``auto`` decides on, and the mask comparison, live with the models
(:mod:`fastsam3d_core.models.precision_choice`), since a model is loaded with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.precision_choice import (
    CROP_SIDE,
    Prompt,
    check_crop,
    crop_mask_pairs,
    crop_masks,
    mask_agreement,
    reduced_copy,
)

if TYPE_CHECKING:
    from ..geometry import Volume
    from ..golden import GoldenReference
    from ..models.sam3d import Sam3D

__all__ = [
    "CROP_SIDE",
    "Agreement",
    "Prompt",
    "check_crop",
    "crop_agreement",
    "crop_masks",
    "embedding_relative_error",
    "golden_agreement",
    "mask_agreement",
    "reduced_copy",
    "scan_agreement",
    "scan_clicks",
]


@dataclass(frozen=True)
class Agreement:
    """One source's agreement of a precision with float32 (worst mask of the source)."""

    source: str
    precision: str
    # None for scans: their clicks run through a session, whose crops are not compared.
    embedding_rel_error: float | None
    equal_voxels: float
    dice: float
    masks: int

    def describe(self) -> str:
        embedding = (
            f"embedding max rel. error {self.embedding_rel_error:.1e}, "
            if self.embedding_rel_error is not None
            else ""
        )
        return (
            f"{self.source}: {embedding}{100 * self.equal_voxels:.3f}% voxels equal, "
            f"Dice {self.dice:.4f} ({_worst_of(self.masks)})"
        )


def _worst_of(masks: int) -> str:
    return "one mask" if masks == 1 else f"worst of {masks} masks"


def embedding_relative_error(embedding: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.float()
    return float((embedding.float() - reference).abs().max() / reference.abs().max())


def _summarise(
    source: str,
    precision: str,
    embeddings: tuple[torch.Tensor, torch.Tensor] | None,
    masks: list[tuple[np.ndarray, np.ndarray]],
) -> Agreement:
    pairs = [mask_agreement(mask, reference) for mask, reference in masks]
    error = embedding_relative_error(*embeddings) if embeddings is not None else None
    return Agreement(
        source,
        precision,
        error,
        min(equal for equal, _ in pairs),
        min(dice for _, dice in pairs),
        len(pairs),
    )


def crop_agreement(
    model: Sam3D, reduced: Sam3D, image: torch.Tensor, prompts: list[Prompt], source: str
) -> Agreement:
    """Agreement on one crop ``(1, 1, 128, 128, 128)`` (z-normalised, crop axes) and prompts,
    each decoded on a zero mask prompt."""
    embeddings, masks = crop_mask_pairs(model, reduced, image, prompts)
    return _summarise(source, reduced.precision, embeddings, masks)


def golden_agreement(reference: GoldenReference, model: Sam3D, reduced: Sam3D) -> Agreement:
    """Agreement on a golden reference's image and prompt scenarios (both models carrying the
    reference's seeded weights): embedding, and every scenario's masks at 128³."""
    ours, theirs = reference.run(reduced), reference.run(model)
    masks = [
        (crop_masks(ours[key]), crop_masks(theirs[key])) for key in ours if key.endswith("_logits")
    ]
    embeddings = (ours["embedding"], theirs["embedding"])
    return _summarise(f"golden {reference.name}", reduced.precision, embeddings, masks)


def scan_clicks(label: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Three clicks on a structure, in the label's voxel indices, as a user might place them:
    its deepest voxel, the interior voxel farthest from that one, and a negative click in the
    background three voxels outside the structure, nearest to the first click."""
    from scipy.ndimage import distance_transform_edt  # type: ignore[import-untyped]

    inside = distance_transform_edt(label)
    first = np.array(np.unravel_index(np.argmax(inside), label.shape))
    interior = np.argwhere(inside >= min(2.0, inside.max()))
    second = interior[np.argmax(np.linalg.norm(interior - first, axis=1))]
    ring = np.argwhere(np.abs(distance_transform_edt(~label) - 3) < 0.5)
    negative = ring[np.argmin(np.linalg.norm(ring - first, axis=1))]
    return [(first, True), (second, True), (negative, False)]


def scan_agreement(
    volume: Volume, label: np.ndarray, model: Sam3D, reduced: Sam3D, source: str
) -> Agreement:
    """Agreement on a scan: :func:`scan_clicks` of ``label`` (bool, the volume's grid) placed in
    a session on each model; the full-resolution masks after every click are compared."""
    from ..session import Session
    from ..session.model_predictor import ModelPredictor

    sessions = [Session(volume, ModelPredictor(m)) for m in (reduced, model)]
    masks = []
    for point, positive in scan_clicks(label):
        for session in sessions:
            session.add_point_ijk(point.astype(float), positive=positive)
        masks.append((sessions[0].mask(), sessions[1].mask()))
    return _summarise(source, reduced.precision, None, masks)
