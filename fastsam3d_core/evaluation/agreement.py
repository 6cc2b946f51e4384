"""How closely a reduced-precision image encoder reproduces float32 (:mod:`..models.precision`).

Every figure compares one model with a copy of itself in another precision, same weights and
inputs; float32 is the reference, so no ground truth and no trained weights are needed:

* embedding relative error: max |e - e32| / max |e32|;
* equal voxels: the fraction of voxels on which the two masks (logit > 0) agree;
* Dice between the two masks at full resolution: the 128³ crop for crops, the volume's own voxel
  grid for scans (clicks through a :class:`~fastsam3d_core.session.Session`, as a user's land).

Each source reports its worst mask (lowest equal fraction, lowest Dice).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..geometry import Volume
    from ..golden import GoldenReference
    from ..models.sam3d import Sam3D

CROP_SIDE = 128
# A prompt: points (1, N, 3) in crop voxels (d0, d1, d2) and labels (1, N), 1 positive.
Prompt = tuple[torch.Tensor, torch.Tensor]


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


def reduced_copy(model: Sam3D, precision: str) -> Sam3D:
    """A copy of a float32 model whose encoder computes in ``precision``."""
    reduced = copy.deepcopy(model)
    reduced.set_precision(precision)
    return reduced


def embedding_relative_error(embedding: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.float()
    return float((embedding.float() - reference).abs().max() / reference.abs().max())


def mask_agreement(mask: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Fraction of equal voxels and Dice of two bool masks (Dice 1 when both are empty)."""
    total = int(np.count_nonzero(mask)) + int(np.count_nonzero(reference))
    dice = 2 * int(np.count_nonzero(mask & reference)) / total if total else 1.0
    return float(np.mean(mask == reference)), dice


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


def crop_masks(logits: torch.Tensor) -> np.ndarray:
    """Low-resolution logits ``(B, M, 32, 32, 32)`` to 128³ crop masks ``(B, M, 128, 128, 128)``
    (trilinear, align_corners=False, logit > 0: the released models' upsampling)."""
    upsampled = F.interpolate(
        logits.float().cpu(), size=(CROP_SIDE,) * 3, mode="trilinear", align_corners=False
    )
    return (upsampled > 0).numpy()


def crop_agreement(
    model: Sam3D, reduced: Sam3D, image: torch.Tensor, prompts: list[Prompt], source: str
) -> Agreement:
    """Agreement on one crop ``(1, 1, 128, 128, 128)`` (z-normalised, crop axes) and prompts,
    each decoded on a zero mask prompt."""
    with torch.inference_mode():
        embeddings = (reduced.encode(image), model.encode(image))
        masks = [
            (
                crop_masks(reduced.decode(embeddings[0], points, labels, None)[0]),
                crop_masks(model.decode(embeddings[1], points, labels, None)[0]),
            )
            for points, labels in prompts
        ]
    return _summarise(source, reduced.precision, embeddings, masks)


def check_crop() -> tuple[torch.Tensor, list[Prompt]]:
    """A synthetic 128³ crop and prompts for the agreement check of ``auto``.

    Two smooth-edged blobs of different contrast on a noisy background, z-normalised: an
    ellipsoid and a sphere. Prompts: a click in the ellipsoid; a click in the sphere; a click in
    the ellipsoid with a negative one in the sphere. Trained models segment such blobs; seeded
    ones give arbitrary but still comparable masks.
    """
    axis = torch.arange(CROP_SIDE, dtype=torch.float32)
    d0, d1, d2 = torch.meshgrid(axis, axis, axis, indexing="ij")
    ellipsoid = ((d0 - 50) / 22) ** 2 + ((d1 - 60) / 30) ** 2 + ((d2 - 55) / 18) ** 2
    sphere = ((d0 - 88) ** 2 + (d1 - 80) ** 2 + (d2 - 84) ** 2) / 14**2
    generator = torch.Generator().manual_seed(0)
    image = (
        1.0 * torch.sigmoid(4 * (1 - ellipsoid))
        + 0.6 * torch.sigmoid(4 * (1 - sphere))
        + 0.15 * torch.randn(CROP_SIDE, CROP_SIDE, CROP_SIDE, generator=generator)
    )
    image = ((image - image.mean()) / image.std()).reshape(1, 1, *image.shape)
    in_ellipsoid, in_sphere = [50.0, 60.0, 55.0], [88.0, 80.0, 84.0]
    prompts = [
        (torch.tensor([[in_ellipsoid]]), torch.tensor([[1]])),
        (torch.tensor([[in_sphere]]), torch.tensor([[1]])),
        (torch.tensor([[in_ellipsoid, in_sphere]]), torch.tensor([[1, 0]])),
    ]
    return image, prompts


def check_crop_agreement(model: Sam3D, precision: str) -> float:
    """The lowest Dice between ``precision``'s and float32's masks on :func:`check_crop`."""
    image, prompts = check_crop()
    reduced = reduced_copy(model, precision)
    return crop_agreement(model, reduced, image, prompts, "check crop").dice


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
