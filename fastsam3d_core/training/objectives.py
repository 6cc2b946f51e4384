"""What training minimises: the interactive segmentation loss and the distillation losses.

Each objective is an ``nn.Module`` whose ``forward`` computes a batch's loss, so that
DistributedDataParallel can wrap it and average the gradients of its trainable parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.protocol import LOW_RES_SIZE, next_click
from ..geometry import CROP_SIZE
from ..models.image_encoder import ImageEncoderViT3D
from ..models.sam3d import Sam3D
from .box_prompts import corner_prompt, jittered_box


def dice_ce_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus binary cross-entropy, averaged over the batch (SAM-Med3D's DiceCE).

    Args:
        logits: ``(B, 1, D0, D1, D2)``.
        truth: ``(B, 1, D0, D1, D2)`` float 0/1, same axes.
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, truth)
    probability = torch.sigmoid(logits).flatten(1)
    target = truth.flatten(1)
    overlap = (probability * target).sum(1)
    dice = (2 * overlap + 1e-5) / (probability.sum(1) + target.sum(1) + 1e-5)
    return cross_entropy + (1 - dice).mean()


def balanced_dice_ce_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus a class-balanced cross-entropy: the mean over the structure's voxels and
    the mean over the rest, averaged, so that the structure weighs half whatever its size.

    The plain mean over a 128³ crop is won by predicting "background" when the structure is a
    few per cent of the crop: that is how fine-tuning collapsed (docs/training.md). Balanced,
    an empty prediction costs as much as a full one.

    Args: as :func:`dice_ce_loss`.
    """
    per_voxel = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").flatten(1)
    target = truth.flatten(1)
    inside = (per_voxel * target).sum(1) / target.sum(1).clamp(min=1)
    outside = (per_voxel * (1 - target)).sum(1) / (1 - target).sum(1).clamp(min=1)
    probability = torch.sigmoid(logits).flatten(1)
    overlap = (probability * target).sum(1)
    dice = (2 * overlap + 1e-5) / (probability.sum(1) + target.sum(1) + 1e-5)
    return ((inside + outside) / 2 + 1 - dice).mean()


class InteractiveObjective(nn.Module):
    """The click simulation of SAM-Med3D / the paper's protocol, as a loss.

    The encoder runs once per crop; then ``clicks`` rounds: a click sampled from the current
    prediction's errors (:func:`~fastsam3d_core.evaluation.protocol.next_click`: the first two
    deep in the largest error region, later ones anywhere in the errors), decoded with the
    previous low-resolution logits as the mask prompt (detached, as at inference), and the Dice +
    cross-entropy of the 128³ upsampled logits. The loss is the mean over rounds.

    With ``prompts="box"`` the first round is the truth's box alone (jittered by up to
    :data:`~.box_prompts.BOX_JITTER` voxels per face, as learned corners, without a mask
    prompt), and each later round's click comes with the box's corners, as a session sends a
    box and the clicks that correct it.
    """

    def __init__(
        self, model: Sam3D, clicks: int = 5, balanced: bool = True, prompts: str = "point"
    ) -> None:
        super().__init__()
        self.model = model
        self.clicks = clicks
        self.loss = balanced_dice_ce_loss if balanced else dice_ce_loss
        self.boxes = prompts == "box"

    def forward(
        self, images: torch.Tensor, truths: torch.Tensor, seeds: list[list[int]]
    ) -> torch.Tensor:
        """Args:
        images: ``(B, 1, 128, 128, 128)`` float crops (crop voxels, axes d0, d1, d2).
        truths: ``(B, 128, 128, 128)`` bool, same axes.
        seeds: per crop, the seed of its click sampler (the same crop and seed give the
            same clicks in any process).
        """
        device = self.model.device
        embedding = self.model.encode(images)
        batch = images.shape[0]
        truth_np = truths.cpu().numpy()
        target = truths.to(device=device, dtype=embedding.dtype)[:, None]
        rngs = [np.random.default_rng(seed) for seed in seeds]
        boxes = _box_corners(truth_np, rngs) if self.boxes else None
        low = embedding.new_zeros(batch, 1, *(LOW_RES_SIZE,) * 3)
        upsampled_np = np.zeros(truth_np.shape, np.float32)
        points = np.zeros((batch, 1, 3), np.float32)
        labels = np.ones((batch, 1), np.int64)
        total = embedding.new_zeros(())
        for round_number in range(self.clicks):
            # With a box, round 0 is the box alone and click n comes in round n + 1.
            click_number = round_number - 1 if boxes is not None else round_number
            for n in range(batch):  # a crop without errors left keeps its last click
                click = (
                    next_click(truth_np[n], upsampled_np[n], click_number, rngs[n])
                    if click_number >= 0
                    else None
                )
                if click is not None:
                    points[n, 0], labels[n, 0] = click
            prompt = _with_box((points, labels), boxes, box_alone=click_number < 0)
            low, _ = self.model.decode(
                embedding,
                torch.from_numpy(prompt[0]).to(device),
                torch.from_numpy(prompt[1]).to(device),
                low.detach(),
            )
            upsampled = F.interpolate(
                low, size=(CROP_SIZE,) * 3, mode="trilinear", align_corners=False
            )
            total = total + self.loss(upsampled.float(), target.float())
            upsampled_np = upsampled.detach()[:, 0].float().cpu().numpy()
        return total / self.clicks


def _box_corners(
    truths: np.ndarray, rngs: list[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """Each crop's jittered truth box as corners: points float32 ``(B, 2, 3)``, labels int64
    ``(B, 2)``."""
    prompts = [corner_prompt(jittered_box(truth, rng)) for truth, rng in zip(truths, rngs)]
    return np.stack([p[0] for p in prompts]), np.stack([p[1] for p in prompts])


def _with_box(
    clicks: tuple[np.ndarray, np.ndarray],
    boxes: tuple[np.ndarray, np.ndarray] | None,
    box_alone: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """A round's prompt: the clicks ``(B, 1, 3)``/``(B, 1)``, after the box corners if any, or
    the corners alone."""
    if boxes is None:
        return clicks
    if box_alone:
        return boxes
    return np.concatenate([boxes[0], clicks[0]], 1), np.concatenate([boxes[1], clicks[1]], 1)


def layers_in_use(iteration: int, total: int, student_depth: int) -> int:
    """Eq. 2 of FastSAM3D: k = ⌈iteration · depth / total⌉ student layers, for iteration
    1..total (so k grows from 1 to the student's depth)."""
    if not 1 <= iteration <= total:
        raise ValueError(f"iteration must be in 1..{total}, got {iteration}")
    return math.ceil(iteration * student_depth / total)


class LayerwiseDistillation(nn.Module):
    """FastSAM3D's layer-wise progressive distillation (paper §2.2, Eq. 1-2), then logit-level.

    Layer i of the student (1-based) learns the output of layer ``i · T/S`` of the teacher
    (T, S their depths; 2i for 12 → 6), through a linear projection where their widths differ:
    ``L = E_x[(1/k) Σ_{i=1..k} ‖f_t^(iT/S)(x) − P f_s^(i)(x)‖₂]``, with the L2 norm over each
    crop's whole feature tensor and k from :func:`layers_in_use`. The logit-level phase (k = 0
    here) matches the final embeddings (after the necks) the same way.

    The teacher is frozen and runs without gradients.
    """

    def __init__(self, teacher: ImageEncoderViT3D, student: ImageEncoderViT3D) -> None:
        super().__init__()
        self.teacher = teacher.requires_grad_(False).eval()
        self.student = student
        teacher_depth, student_depth = len(teacher.blocks), len(student.blocks)
        if teacher_depth % student_depth:
            raise ValueError(
                f"the student's depth {student_depth} must divide the teacher's {teacher_depth}"
            )
        self.stride = teacher_depth // student_depth
        student_width = student.pos_embed.shape[-1]
        teacher_width = teacher.pos_embed.shape[-1]
        self.projections = nn.ModuleList(
            nn.Identity() if student_width == teacher_width
            else nn.Linear(student_width, teacher_width)
            for _ in range(student_depth)
        )  # fmt: skip

    def forward(self, images: torch.Tensor, k: int) -> torch.Tensor:
        """Args: images ``(B, 1, S, S, S)``; k: student layers in the loss (Eq. 2), or 0 for the
        logit-level loss on the final embeddings."""
        with torch.no_grad():
            teacher_out = _block_outputs(self.teacher, images, self.stride, final=k == 0)
        student_out = _block_outputs(self.student, images, 1, final=k == 0)
        if k == 0:
            return _l2(teacher_out[-1], student_out[-1])
        losses = [_l2(teacher_out[i], self.projections[i](student_out[i])) for i in range(k)]
        return torch.stack(losses).mean()


def _block_outputs(
    encoder: ImageEncoderViT3D, images: torch.Tensor, stride: int, final: bool
) -> list[torch.Tensor]:
    """Outputs ``(B, G, G, G, C)`` of blocks stride, 2·stride, … (1-based); with ``final``, only
    the embedding after the neck (through the encoder's own forward)."""
    if final:
        return [encoder(images)]
    x = encoder.patch_embed(images) + encoder.pos_embed
    outputs = []
    for number, block in enumerate(encoder.blocks, 1):
        x = block(x)
        if number % stride == 0:
            outputs.append(x)
    return outputs


def logit_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """The logit-level loss between final embeddings ``(B, C, G, G, G)``: mean L2 per crop."""
    return _l2(target, prediction)


def _l2(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each crop's L2 distance ‖target − prediction‖₂."""
    return (target.float() - prediction.float()).flatten(1).norm(dim=1).mean()
