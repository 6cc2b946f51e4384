"""Mask decoder: prompts and image embedding to low-resolution mask logits (spec §3.3)."""

from __future__ import annotations

import torch
from torch import nn

from .common import LayerNorm3d, MLPHead
from .transformer import TwoWayTransformer3D


class MaskDecoder3D(nn.Module):
    """Predicts ``num_multimask_outputs + 1`` masks and their IoU scores.

    Mask 0 is the single-mask output; masks 1… are the multimask outputs.

    Args:
        transformer_dim: width of tokens and embedding (384).
        transformer: the two-way transformer.
        num_multimask_outputs: masks produced in multimask mode (3).
        iou_head_depth, iou_head_hidden_dim: the IoU-prediction MLP (3 layers, 256 wide).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer3D,
        num_multimask_outputs: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose3d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLPHead(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLPHead(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt: torch.Tensor,
        dense_prompt: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode masks.

        Args:
            image_embedding: ``(1 or B, dim, G0, G1, G2)``; a batch of 1 is shared by all prompts.
            image_pe: ``(1, dim, G0, G1, G2)`` dense positional encoding.
            sparse_prompt: ``(B, T, dim)`` point embeddings (T may be 0).
            dense_prompt: ``(B, dim, G0, G1, G2)`` mask embedding.
            multimask_output: return masks 1… instead of mask 0.

        Returns:
            logits ``(B, 1 or num_multimask_outputs, 4·G0, 4·G1, 4·G2)`` and IoU ``(B, 1 or …)``.
        """
        batch = sparse_prompt.shape[0]
        if image_embedding.shape[0] not in (1, batch):
            raise ValueError(
                f"embedding batch {image_embedding.shape[0]} does not match prompt batch {batch}"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse_prompt], dim=1)
        image = image_embedding.expand(batch, -1, -1, -1, -1) + dense_prompt
        hidden, image_tokens = self.transformer(
            image, image_pe.expand(batch, -1, -1, -1, -1), tokens
        )
        grid = image.shape[2:]
        image = image_tokens.transpose(1, 2).reshape(batch, -1, *grid)
        upscaled = self.output_upscaling(image)  # (B, dim/8, 4·G0, 4·G1, 4·G2)

        selected = slice(1, None) if multimask_output else slice(0, 1)
        mask_indices = range(self.num_mask_tokens)[selected]
        hyper = torch.stack(
            [self.output_hypernetworks_mlps[i](hidden[:, 1 + i]) for i in mask_indices], dim=1
        )
        logits = (hyper @ upscaled.flatten(2)).reshape(
            batch, len(mask_indices), *upscaled.shape[2:]
        )
        iou = self.iou_prediction_head(hidden[:, 0])[:, selected]
        return logits, iou
