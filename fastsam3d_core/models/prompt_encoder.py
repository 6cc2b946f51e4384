"""Prompt encoder: points and a low-resolution mask to sparse and dense embeddings (model.md
§3.2).

The released checkpoints embed two point labels, 1 (positive) and 0 (negative). A model fine-tuned
with ``fastsam3d finetune --prompts box`` also takes a box as two corner points, labels 2 (its low
corner) and 3 (its high corner), as SAM takes 2-D boxes: the corners' embeddings are learned with
the adapters and stored in the adapter file (:mod:`.adapter`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from .common import LayerNorm3d, cached_derived


class PositionEmbeddingRandom3D(nn.Module):
    """Random-Fourier positional encoding of normalised 3-D coordinates.

    The Gaussian projection is a persistent buffer: it is part of the checkpoints and must be
    loaded with them (model.md §2.1).
    """

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((3, num_pos_feats))
        )

    def _encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` coordinates in [0, 1] -> ``(..., 3·num_pos_feats)``."""
        projected = (2 * unit_coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = 2 * math.pi * projected
        # [sin, cos, sin]: SAM-Med3D's way of filling 3 × num_pos_feats channels (model.md §3.2).
        return torch.cat([projected.sin(), projected.cos(), projected.sin()], dim=-1)

    def dense(self, grid_size: tuple[int, int, int]) -> torch.Tensor:
        """Encoding of every cell of the embedding grid.

        Cell (a, b, c) is encoded as the point ((b+.5)/size0, (a+.5)/size1, (c+.5)/size2): the first
        two axes are swapped relative to :meth:`points` (model.md §0 item 7), as the
        checkpoints were trained.

        Returns:
            ``(3·num_pos_feats, size0, size1, size2)``.
        """
        matrix = self.positional_encoding_gaussian_matrix
        cells = [torch.arange(n, device=matrix.device, dtype=matrix.dtype) + 0.5 for n in grid_size]
        index0, index1, index2 = torch.meshgrid(*cells, indexing="ij")
        unit = torch.stack(
            [index1 / grid_size[0], index0 / grid_size[1], index2 / grid_size[2]], dim=-1
        )
        return self._encode(unit).permute(3, 0, 1, 2)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int, int]) -> torch.Tensor:
        """Encode points given in input-voxel units, axis order (d0, d1, d2).

        Args:
            coords: ``(B, N, 3)`` float, already shifted to voxel centres.
            image_size: the network input's size, (d0, d1, d2).

        Returns:
            ``(B, N, 3·num_pos_feats)``.
        """
        size = torch.tensor(image_size, device=coords.device, dtype=coords.dtype)
        return self._encode(coords / size)


# Labels of a box's corners, as SAM numbers them: the corner with the smallest (d0, d1, d2)
# indices, and the one with the largest.
BOX_LOW_CORNER, BOX_HIGH_CORNER = 2, 3


class PromptEncoder3D(nn.Module):
    """Embeds point prompts and a mask prompt for the mask decoder.

    Args:
        embed_dim: prompt embedding width (384).
        image_embedding_size: the encoder's token grid (8, 8, 8).
        input_image_size: the network input's size (128, 128, 128).
        mask_in_chans: hidden channels of the mask downscaling path (16).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int, int],
        input_image_size: tuple[int, int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom3D(embed_dim // 3)
        # Index 0: negative point, index 1: positive point (the labels' values).
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(2))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        # Index 0: a box's low corner (label 2), 1: its high corner (label 3). None in the released
        # models; :meth:`add_box_corner_embeddings` creates it (fine-tuning or an adapter file).
        self.box_corner_embeddings: nn.Embedding | None = None
        quarter = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, quarter, kernel_size=2, stride=2),
            LayerNorm3d(quarter),
            nn.GELU(),
            nn.Conv3d(quarter, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def accepts_box_corners(self) -> bool:
        """Whether labels 2 and 3 (a box's corners) have learned embeddings here."""
        return self.box_corner_embeddings is not None

    def add_box_corner_embeddings(self) -> nn.Embedding:
        """Create the box corners' embeddings and return them.

        Both start as the positive point's embedding: an untrained box is read as two positive
        points at its corners, something the model knows, and training moves each corner's
        embedding from there.

        Raises:
            ValueError: the encoder has them already.
        """
        if self.box_corner_embeddings is not None:
            raise ValueError("the prompt encoder has box corner embeddings already")
        positive = cast(nn.Embedding, self.point_embeddings[1]).weight
        table = nn.Embedding(2, self.embed_dim).to(device=positive.device, dtype=positive.dtype)
        with torch.no_grad():
            table.weight.copy_(positive.expand(2, -1))
        self.box_corner_embeddings = table
        return table

    @property
    def mask_input_size(self) -> tuple[int, int, int]:
        return tuple(4 * n for n in self.image_embedding_size)  # type: ignore[return-value]

    def get_dense_pe(self) -> torch.Tensor:
        """Dense positional encoding ``(1, embed_dim, G0, G1, G2)`` of the embedding grid
        (channels-last in memory). It depends only on the Gaussian projection: computed once
        and kept until that changes (a click saved about 0.3 ms); read it, do not write it."""
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        return cached_derived(
            self,
            "_dense_pe",
            (matrix,),
            lambda: self.pe_layer.dense(self.image_embedding_size).unsqueeze(0),
        )

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # One padding point (label -1) is always appended, as in training (model.md §3.2 step 2).
        padding_point = points.new_zeros(points.shape[0], 1, 3)
        padding_label = -labels.new_ones(labels.shape[0], 1)
        points = torch.cat([points + 0.5, padding_point], dim=1)
        labels = torch.cat([labels, padding_label], dim=1)
        encoded = self.pe_layer.points(points, self.input_image_size)
        is_padding = (labels == -1)[..., None]
        encoded = torch.where(is_padding, self.not_a_point_embed.weight, encoded)
        for label, embedding in enumerate(self.point_embeddings):
            encoded = encoded + (labels == label)[..., None] * cast(nn.Embedding, embedding).weight
        if self.box_corner_embeddings is not None:  # the released models skip this: unchanged
            for corner, label in enumerate((BOX_LOW_CORNER, BOX_HIGH_CORNER)):
                weight = self.box_corner_embeddings.weight[corner]
                encoded = encoded + (labels == label)[..., None] * weight
        return encoded

    def sparse_embeddings(
        self, points: torch.Tensor | None, labels: torch.Tensor | None, batch: int
    ) -> torch.Tensor:
        """The points' embeddings ``(B, N+1, embed_dim)``, or ``(batch, 0, embed_dim)`` without
        points (see :meth:`forward`)."""
        if points is None:
            return self.not_a_point_embed.weight.new_empty(batch, 0, self.embed_dim)
        if labels is None or labels.shape != points.shape[:2]:
            raise ValueError("labels must be given with points, shaped (B, N)")
        return self._embed_points(points, labels)

    @property
    def mask_projection(self) -> nn.Conv3d:
        """The mask path's last layer: a 1×1×1 convolution of :meth:`mask_features` to the
        dense embedding."""
        return cast(nn.Conv3d, self.mask_downscaling[-1])

    def mask_features(self, masks: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *mask_input_size)`` logits → ``(B, mask_in_chans, G0, G1, G2)``: the mask path
        before :attr:`mask_projection` (the dense embedding is that projection of these)."""
        return self.mask_downscaling[:-1](masks)

    def forward(
        self,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompts.

        Args:
            points: ``(B, N, 3)`` float voxel coordinates (d0, d1, d2) of the network input, or
                None.
            labels: ``(B, N)`` int, 1 positive, 0 negative; 2 and 3 a box's low and high
                corners where :attr:`accepts_box_corners`; required with ``points``.
            masks: ``(B, 1, *mask_input_size)`` low-resolution logits, or None.

        Returns:
            sparse ``(B, N+1, embed_dim)`` (``(B, 0, embed_dim)`` without points) and
            dense ``(B, embed_dim, G0, G1, G2)``.
        """
        batch = _batch_size(points, masks)
        sparse = self.sparse_embeddings(points, labels, batch)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(
                batch, -1, *self.image_embedding_size
            )
        return sparse, dense


def _batch_size(points: torch.Tensor | None, masks: torch.Tensor | None) -> int:
    if points is not None:
        return points.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
