"""How ``auto`` picks the image encoder's precision: a reduced-precision copy of the loaded model
against the model itself on a synthetic check crop.

It runs once, when a model is loaded (:class:`fastsam3d_core.weights.ModelRecipe`), on the
model's own weights: float32 is the reference, so no ground truth is needed. The fuller
comparisons (golden scenarios, scans clicked through a session) are in
:mod:`fastsam3d_core.evaluation.agreement`, which builds on the pieces here.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from . import precision as precisions
from .precision import PrecisionChoice, check_precision

if TYPE_CHECKING:
    from .sam3d import Sam3D

CROP_SIDE = 128
# A prompt: points (1, N, 3) in crop voxels (d0, d1, d2) and labels (1, N), 1 positive.
Prompt = tuple[torch.Tensor, torch.Tensor]
# `auto` takes a reduced precision only if its masks agree with float32's at least this well.
AUTO_MIN_DICE = 0.99


def choose_precision(model: Sam3D, precision: str) -> PrecisionChoice:
    """Resolve ``precision`` (``auto`` included) for a loaded float32 model on its device.

    ``auto`` runs :func:`check_crop_agreement` on the model's own weights, so it costs one
    float32 and one bfloat16 encoder run on CPUs with bfloat16 units; nothing elsewhere.

    Raises:
        PrecisionError: an unknown precision, or one the model's device cannot run.
    """
    check_precision(precision, model.device)
    if precision != "auto":
        return PrecisionChoice(precision, "asked for")
    if model.device.type != "cpu":
        return PrecisionChoice("float32", f"the default on {model.device.type}")
    units = precisions.cpu_matrix_units()
    if not units.bfloat16:
        return PrecisionChoice(
            "float32", f"no AMX or AVX-512-BF16 on this CPU (matrix units: {units.describe()})"
        )
    dice = check_crop_agreement(model, "bfloat16")
    if dice < AUTO_MIN_DICE:
        return PrecisionChoice(
            "float32", f"bfloat16 masks agree with float32 only to Dice {dice:.3f} on this model"
        )
    return PrecisionChoice(
        "bfloat16", f"matrix units: {units.describe()}; Dice {dice:.4f} against float32"
    )


def reduced_copy(model: Sam3D, precision: str) -> Sam3D:
    """A copy of a float32 model whose encoder computes in ``precision`` (not ``auto``)."""
    reduced = copy.deepcopy(model)
    reduced.set_precision(precision)
    return reduced


def mask_agreement(mask: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Fraction of equal voxels and Dice of two bool masks (Dice 1 when both are empty)."""
    total = int(np.count_nonzero(mask)) + int(np.count_nonzero(reference))
    dice = 2 * int(np.count_nonzero(mask & reference)) / total if total else 1.0
    return float(np.mean(mask == reference)), dice


def crop_masks(logits: torch.Tensor) -> np.ndarray:
    """Low-resolution logits ``(B, M, 32, 32, 32)`` to 128³ crop masks ``(B, M, 128, 128, 128)``
    (trilinear, align_corners=False, logit > 0: the released models' upsampling)."""
    upsampled = F.interpolate(
        logits.float().cpu(), size=(CROP_SIDE,) * 3, mode="trilinear", align_corners=False
    )
    return (upsampled > 0).numpy()


def crop_mask_pairs(
    model: Sam3D, reduced: Sam3D, image: torch.Tensor, prompts: list[Prompt]
) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[np.ndarray, np.ndarray]]]:
    """Both models on one crop ``(1, 1, 128, 128, 128)`` (z-normalised, crop axes): their
    embeddings (reduced, reference) and, per prompt decoded on a zero mask prompt, their 128³
    masks (reduced, reference)."""
    with torch.inference_mode():
        embeddings = (reduced.encode(image), model.encode(image))
        masks = [
            (
                crop_masks(reduced.decode(embeddings[0], points, labels, None)[0]),
                crop_masks(model.decode(embeddings[1], points, labels, None)[0]),
            )
            for points, labels in prompts
        ]
    return embeddings, masks


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
    _, masks = crop_mask_pairs(model, reduced, image, prompts)
    return min(mask_agreement(mask, reference)[1] for mask, reference in masks)
