"""What ``finetune --text`` minimises, and how a text prompt is scored on a whole volume.

The image encoder is frozen and carries no adapters in a text run, so each tile's encoder
outputs (the embedding and the block outputs the text path reads) are computed once, before the
first step; a step runs the text path and the mask decoder only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.protocol import next_click
from ..geometry import CROP_SIZE
from ..geometry.paste import logits_on_volume
from ..models.sam3d import Sam3D
from ..models.text_reference import CropFeatures
from .objectives import balanced_dice_ce_loss, dice_ce_loss
from .text_data import TextCase

# (case index, tile index, name): one training sample.
Sample = tuple[int, int, str]
# The weight of the vocabulary term (TextObjective._vocabulary_loss) beside a sample's loss:
# at 1 the "liver" and "spleen" masks still overlapped (Dice 0.44-0.74 after 150-200 steps),
# at 3 0.21-0.49, at 5 0.2 (docs/text-prompts.md).
VOCABULARY_WEIGHT = 5.0


def tile_features(model: Sam3D, cases: Sequence[TextCase]) -> list[list[CropFeatures]]:
    """Every tile's encoder outputs, computed once (the encoder is frozen)."""
    features = []
    with torch.no_grad():
        for case in cases:
            tiles = []
            for tile in case.tiles:
                image = torch.from_numpy(np.ascontiguousarray(tile.image))[None, None]
                embedding, levels = model.encode_levels(image)
                tiles.append(CropFeatures(embedding.float(), tuple(x.float() for x in levels)))
            features.append(tiles)
    return features


class TextObjective(nn.Module):
    """A sample's loss: the text alone (no mask prompt), then ``clicks`` rounds each adding one
    click sampled from the errors (:func:`~fastsam3d_core.evaluation.protocol.next_click`),
    decoded with the text's prompts, every click so far and the previous logits as the mask
    prompt (as a session refines a text's mask). The mean over the rounds of the
    class-balanced Dice + CE at 128³.
    """

    def __init__(
        self,
        model: Sam3D,
        cases: Sequence[TextCase],
        features: list[list[CropFeatures]],
        clicks: int = 1,
        balanced: bool = True,
        vocabulary: dict[str, torch.Tensor] | None = None,
        vocabulary_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.cases = list(cases)
        self.features = features
        self.clicks = clicks
        self.loss = balanced_dice_ce_loss if balanced else dice_ce_loss
        self.vocabulary = dict(sorted((vocabulary or {}).items()))
        self.vocabulary_weight = vocabulary_weight
        # Per case, tile and name: the structure at the prior's 32^3, where half a cell is in.
        self.coarse = [
            {
                name: torch.stack([_coarse(truth) for truth in case.truths[name]])
                for name in self.vocabulary if name in case.truths
            }
            for case in self.cases
        ]  # fmt: skip

    def forward(self, samples: list[Sample], texts: torch.Tensor, seeds: list[list[int]]):
        """Args: samples; texts ``(B, 512)`` their text embeddings; seeds: per sample, its
        click sampler's seed. Returns the mean loss (a scalar)."""
        total = texts.new_zeros(())
        for (case, tile, name), text, seed in zip(samples, texts, seeds):
            total = total + self._sample_loss(case, tile, name, text, seed)
            if self.vocabulary and self.vocabulary_weight:
                total = total + self.vocabulary_weight * self._vocabulary_loss(case, tile)
        return total / len(samples)

    def _vocabulary_loss(self, case: int, tile: int) -> torch.Tensor:
        """Every training name's logit prior on the sample's tile against its own structure
        (class-balanced BCE at 32^3, empty where the name is not in the tile): a sample's loss
        shows one name, this term sets all of them apart on the same image tokens, as a
        labelmap's structures are. It costs the text path only (no decoder), once per name."""
        names = [name for name in self.vocabulary if name in self.coarse[case]]
        device = self.model.device
        texts = torch.stack([self.vocabulary[name] for name in names]).to(device)
        _, _, prior = self.model.text_reference(self.features[case][tile].levels, texts)
        prior = F.interpolate(prior, size=(CROP_SIZE // 4,) * 3, mode="trilinear",
                              align_corners=False)[:, 0].float()  # fmt: skip
        losses = [
            _balanced_bce(prior[index], self.coarse[case][name][tile].to(device))
            for index, name in enumerate(names)
        ]
        return torch.stack(losses).mean()

    def _sample_loss(
        self, case: int, tile: int, name: str, text: torch.Tensor, seed: list[int]
    ) -> torch.Tensor:
        features = self.features[case][tile]
        truth = self.cases[case].truths[name][tile]
        device = self.model.device
        target = torch.from_numpy(truth).to(device=device, dtype=torch.float32)[None, None]
        low, _ = self.model.decode_text(features.embedding, features.levels, text[None])
        upsampled = _upsample(low)
        losses = [self.loss(upsampled.float(), target)]
        rng = np.random.default_rng(seed)
        points, labels = [], []
        for number in range(self.clicks):
            click = next_click(truth, upsampled.detach()[0, 0].cpu().numpy(), number, rng)
            if click is None:
                break
            points.append(click[0])
            labels.append(click[1])
            # As a session refines a text's mask: every click so far with the text's prompts.
            point = torch.as_tensor(np.array(points), dtype=torch.float32, device=device)[None]
            label = torch.tensor([labels], device=device)
            # The decoder's own answer: the click rule (models/text_clicks.py) learns nothing.
            low, _ = self.model.decode_text(
                features.embedding, features.levels, text[None], low.detach(), point, label,
                honour_clicks=False,
            )  # fmt: skip
            upsampled = _upsample(low)
            losses.append(self.loss(upsampled.float(), target))
        return torch.stack(losses).mean()


def _coarse(truth: np.ndarray) -> torch.Tensor:
    """A (128,)*3 bool structure -> (32,)*3 bool: cells at least half inside."""
    tensor = torch.from_numpy(np.ascontiguousarray(truth, np.float32))[None, None]
    return F.avg_pool3d(tensor, 4)[0, 0] >= 0.5


def _balanced_bce(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """BCE with the inside and the outside weighing half each (an empty structure: the
    outside only)."""
    inside = truth.float()
    weight_in = 0.5 / inside.sum().clamp(min=1)
    weight_out = (0.5 if bool(truth.any()) else 1.0) / (1 - inside).sum().clamp(min=1)
    weight = torch.where(truth, weight_in, weight_out)
    return F.binary_cross_entropy_with_logits(logits, inside, weight=weight, reduction="sum")


def _upsample(low: torch.Tensor) -> torch.Tensor:
    return F.interpolate(low, size=(CROP_SIZE,) * 3, mode="trilinear", align_corners=False)


def text_logits_on_volume(
    predictor, case: TextCase, features: list[CropFeatures], text: torch.Tensor
) -> np.ndarray:
    """The text's logits on the case's image grid ``(I, J, K)`` float32: each tile's logits
    resampled onto the voxels it covers, the largest where tiles overlap (-inf where none
    does). ``predictor``: a :class:`~fastsam3d_core.session.model_predictor.ModelPredictor`."""
    merged = np.full(case.image.shape, -np.inf, np.float32)
    for tile, tile_features_ in zip(case.tiles, features):
        logits = predictor.decode_text(tile_features_, text)
        box = logits_on_volume(logits, tile.grid, case.image)
        region = merged[box.slices]
        np.maximum(region, np.where(box.inside, box.values, -np.inf), out=region)
    return merged


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two bool masks (1.0 when both are empty)."""
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def text_dice(
    model: Sam3D,
    cases: Sequence[TextCase],
    features: list[list[CropFeatures]],
    texts: dict[str, torch.Tensor],
) -> dict[str, float]:
    """Per name, the mean whole-volume Dice of the text alone over the cases that have it."""
    from ..session.model_predictor import ModelPredictor

    predictor = ModelPredictor(model)
    scores: dict[str, list[float]] = {}
    for case, case_features in zip(cases, features):
        for name, structure in case.structures.items():
            logits = text_logits_on_volume(predictor, case, case_features, texts[name])
            scores.setdefault(name, []).append(dice(logits > 0, structure))
    return {name: float(np.mean(values)) for name, values in sorted(scores.items())}
