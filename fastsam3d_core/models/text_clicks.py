"""Clicks after a text prompt, honoured where they land: a click pulls the text's logits around
it towards its own label, as far as the image there resembles the image at the click.

The text path adds a logit prior to the decoder's logits (:class:`.text_reference.TextReference`),
whose scale training sets. The decoder's answer to a click comes from its trained attention,
which relates a click's position to the image: through the frozen seeded decoder a click moves
the logits by a small fraction of the prior's spread, and nothing ties a trained decoder's
answer to the prior's scale (docs/text-prompts.md has the figures). So a click also has its say
where the prior has its own, at the output:

- around the click, a Gaussian of the distance (:data:`REACH_VOXELS` crop voxels), times how
  much each image token resembles the clicked one as the text path sees the image (the cosine,
  at least 0, of :meth:`.text_reference.TextReference.image_as_seen`: the shallowest level's
  local intensities through the projection the path learned to tell structures apart by),
  trilinear from the 8³ tokens onto the 32³ logits and taken relative to the click's own cell;
- the logits are moved that share of the way to :data:`CLICK_LOGIT` with the click's sign, and
  only towards it: a negative click never raises a logit, a positive one never lowers one, a
  logit already beyond the click's target keeps its value, and the clicked cell ends on the
  click's side (the Gaussian at its centre is at least 0.977: any logit within ±85).

Nothing is learned (no state in the adapter file, and training reads the decoder's answer
alone); clicks are applied in their order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A click's reach: the Gaussian's standard deviation, in crop voxels (an image token is 16).
# Chosen on three adapters of the test's recipe (docs/text-prompts.md): a wider reach gained
# more but let a click at the boundary spoil more.
REACH_VOXELS = 12.0
# Where a click pulls its own voxel's logit: firmly on its side of 0, no further (a voxel
# already beyond it keeps its logit).
CLICK_LOGIT = 2.0
# Crop voxels per low-resolution logit cell along each axis (128 / 32).
CELL_VOXELS = 4


def honour_clicks(
    logits: torch.Tensor, level: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Args:
        logits: ``(B, 1, 32, 32, 32)`` low-resolution logits of the crop (axes d0, d1, d2).
        level: ``(B or 1, 8, 8, 8, C)`` the image tokens a click's place is compared with
            (:meth:`.text_reference.TextReference.image_as_seen`).
        points: ``(B, N, 3)`` crop voxel coordinates (d0, d1, d2, 0-127), as the decoder takes;
            inside the crop (a session passes only those).
        labels: ``(B, N)`` 1 positive, 0 negative; other values (padding) are skipped.

    Returns:
        The logits with each click honoured, ``(B, 1, 32, 32, 32)``, the same dtype.
    """
    size, tokens = tuple(logits.shape[2:]), tuple(level.shape[1:4])
    unit = F.normalize(level.float().flatten(1, 3), dim=-1)  # (B or 1, T, C)
    honoured = []
    for b in range(logits.shape[0]):
        out = logits[b, 0].float()
        kept = [
            (p, label) for p, label in zip(points[b].float(), labels[b].tolist()) if label in (0, 1)
        ]
        if kept:
            clicks = torch.stack([p for p, _ in kept])  # (N, 3)
            features = unit[b if unit.shape[0] > 1 else 0]
            shares = _reach(clicks, size) * _resemblance(features, clicks, tokens, size)
            for share, (_, label) in zip(shares, kept):  # in order: a later click has the last say
                target = CLICK_LOGIT if label == 1 else -CLICK_LOGIT
                moved = out + share * (target - out)
                out = torch.maximum(out, moved) if label == 1 else torch.minimum(out, moved)
        honoured.append(out)
    return torch.stack(honoured)[:, None].to(logits.dtype)


def _reach(clicks: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(N, *size)``: the Gaussian of each cell's centre's distance to each click, 1 at the
    click; one factor per axis."""
    factors = []
    for axis, length in enumerate(size):
        cells = torch.arange(length, device=clicks.device, dtype=torch.float32)
        centres = (cells + 0.5) * CELL_VOXELS - 0.5
        offset = centres[None] - clicks[:, axis, None]  # (N, length)
        factors.append(torch.exp(-(offset**2) / (2 * REACH_VOXELS**2)))
    return factors[0][:, :, None, None] * factors[1][:, None, :, None] * factors[2][:, None, None]


def _resemblance(
    features: torch.Tensor, clicks: torch.Tensor, tokens: tuple[int, ...], size: tuple[int, ...]
) -> torch.Tensor:
    """``(N, *size)``: the cosine (at least 0) of each image token with each clicked one,
    trilinear onto ``size``, relative to the click's own cell: interpolation mixes the clicked
    token's cosine of 1 with its neighbours' even at the click, and the click's own place is
    meant to resemble itself fully."""
    grid = torch.tensor(tokens, device=clicks.device)
    crop = CELL_VOXELS * torch.tensor(size, device=clicks.device)
    token = torch.minimum((clicks.clamp(min=0) / crop * grid).long(), grid - 1)
    index = (token[:, 0] * tokens[1] + token[:, 1]) * tokens[2] + token[:, 2]
    cosine = (features[index] @ features.T).clamp(min=0).reshape(1, -1, *tokens)
    smooth = F.interpolate(cosine, size=size, mode="trilinear", align_corners=False)[0]
    cell = torch.minimum((clicks.clamp(min=0) / CELL_VOXELS).long(), crop // CELL_VOXELS - 1)
    own = smooth[torch.arange(len(clicks)), cell[:, 0], cell[:, 1], cell[:, 2]].clamp(min=1e-6)
    return (smooth / own[:, None, None, None]).clamp(max=1)
