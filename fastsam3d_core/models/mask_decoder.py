"""Mask decoder: prompts and image embedding to low-resolution mask logits (model.md §3.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm3d, MLPHead, cached_derived, fused_linear, linear, sources_key
from .transformer import ImageProjections, TwoWayTransformer3D


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
        # True: upscale through the modules one by one (the plain path, for the reference).
        self.plain = False

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt: torch.Tensor,
        dense_prompt: torch.Tensor,
        multimask_output: bool,
        first_projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode masks.

        Args:
            image_embedding: ``(1 or B, dim, G0, G1, G2)``; a batch of 1 is shared by all prompts.
            image_pe: ``(1, dim, G0, G1, G2)`` dense positional encoding.
            sparse_prompt: ``(B, T, dim)`` point embeddings (T may be 0).
            dense_prompt: ``(B, dim, G0, G1, G2)`` mask embedding.
            multimask_output: return masks 1… instead of mask 0.
            first_projections: the first two-way block's products of ``image_embedding +
                dense_prompt`` (:meth:`first_projections`), or None to compute them.

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
            image, image_pe.expand(batch, -1, -1, -1, -1), tokens, sparse_prompt, first_projections
        )
        # Only the hypernetworks of the masks asked for run (model.md §3.3 step 5).
        selected = slice(1, None) if multimask_output else slice(0, 1)
        mask_indices = range(self.num_mask_tokens)[selected]
        hyper = torch.stack(
            [self.output_hypernetworks_mlps[i](hidden[:, 1 + i]) for i in mask_indices], dim=1
        )
        grid = tuple(image.shape[2:])
        if self.plain:
            image = image_tokens.transpose(1, 2).reshape(batch, -1, *grid)
            upscaled = self.output_upscaling(image)  # (B, dim/8, 4·G0, 4·G1, 4·G2)
            logits = (hyper @ upscaled.flatten(2)).reshape(
                batch, len(mask_indices), *upscaled.shape[2:]
            )
        else:
            logits = self._upscaled_logits(image_tokens, hyper, grid)
        iou = self.iou_prediction_head(hidden[:, 0])[:, selected]
        return logits, iou

    def _upscaled_logits(
        self, image_tokens: torch.Tensor, hyper: torch.Tensor, grid: tuple[int, ...]
    ) -> torch.Tensor:
        """``hyper · output_upscaling(image)`` computed channels-last, a slab at a time.

        A transposed convolution with kernel 2 and stride 2 maps each input voxel to its own
        2×2×2 output voxels: it is one matrix product ``(voxels, C_in) @ (C_in, 8·C_out)``.
        LayerNorm and GELU act per voxel, so both stages run on the tokens as they come out of
        the transformer, with voxels kept in the nested order (voxel, sub-voxel, sub-sub-voxel);
        one permutation at the end puts the logits in place. The second stage, GELU and the
        product with the hypernetwork weights run slab by slab so the 4·G³ × C/8 activations stay
        in cache. Same arithmetic as the modules in ``output_upscaling``.

        Args:
            image_tokens: ``(B, G0·G1·G2, C)`` from the transformer.
            hyper: ``(B, M, C/8)`` hypernetwork outputs of the M masks asked for.
            grid: (G0, G1, G2).

        Returns:
            logits ``(B, M, 4·G0, 4·G1, 4·G2)``.
        """
        norm = cast(LayerNorm3d, self.output_upscaling[1])
        batch, tokens, _ = image_tokens.shape
        masks = hyper.shape[1]
        weight1, bias1, weight2, bias2 = self._upscaling_as_linear()
        mid, out = weight1.shape[0] // 8, weight2.shape[0] // 8
        first = fused_linear(image_tokens, weight1, bias1)
        first = F.layer_norm(first.view(-1, mid), (mid,), norm.weight, norm.bias, norm.eps)
        first = F.gelu(first).view(batch, tokens * 8, mid)  # (B, voxels at 2G, mid)
        hyper_t = hyper.transpose(1, 2)  # (B, C/8, M)
        logits = first.new_empty(batch, tokens * 8, 8, masks)
        slab = 1024
        for start in range(0, tokens * 8, slab):
            second = fused_linear(first[:, start : start + slab], weight2, bias2, "gelu")
            logits[:, start : start + slab] = (second.view(batch, -1, out) @ hyper_t).view(
                batch, -1, 8, masks
            )
        # (B, G0, G1, G2, a, b, c, a', b', c', M) -> (B, M, G0·2·2, G1·2·2, G2·2·2)
        logits = logits.view(batch, *grid, 2, 2, 2, 2, 2, 2, masks)
        logits = logits.permute(0, 10, 1, 4, 7, 2, 5, 8, 3, 6, 9)
        return logits.reshape(batch, masks, *(4 * g for g in grid))

    def _upscaling_as_linear(self) -> tuple[torch.Tensor, ...]:
        """The two transposed convolutions as linear layers: weights (sub-voxel · C_out, C_in)
        and biases (sub-voxel · C_out,), so that the GELU can be fused
        (:func:`models.common.fused_linear`). Kept until the weights change, where no gradient
        flows to them (the permuted copies cost about 0.5 ms a click)."""
        up1 = cast(nn.ConvTranspose3d, self.output_upscaling[0])
        up2 = cast(nn.ConvTranspose3d, self.output_upscaling[3])

        def permuted() -> tuple[torch.Tensor, ...]:
            result = []
            for up in (up1, up2):
                inputs, outputs = up.in_channels, up.out_channels
                weight = up.weight.reshape(inputs, outputs, 8).permute(2, 1, 0)
                bias = up.bias if up.bias is not None else up.weight.new_zeros(outputs)
                result += [weight.reshape(8 * outputs, inputs), bias.repeat(8)]
            return tuple(result)

        parameters = tuple(p for up in (up1, up2) for p in (up.weight, up.bias) if p is not None)
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return permuted()
        return cached_derived(self, "_upscaling_linear", parameters, permuted)

    def _first_block_layers(self) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
        """The first block's projections of the image tokens, where they are plain linear
        layers (an adapter may wrap them) on the fast path."""
        block = self.transformer.layers[0]
        layers = (
            block.cross_attn_token_to_image.k_proj,
            block.cross_attn_token_to_image.v_proj,
            block.cross_attn_image_to_token.q_proj,
        )
        if block.cross_attn_token_to_image.plain or any(type(x) is not nn.Linear for x in layers):
            return None
        return cast("tuple[nn.Linear, nn.Linear, nn.Linear]", layers)

    def image_cache(
        self, embedding: torch.Tensor, image_pe: torch.Tensor, mask_projection: nn.Conv3d
    ) -> DecoderImageCache | None:
        """What every click on one embedding shares (:class:`DecoderImageCache`), or None where
        the first block's projections are not plain linear layers or run the plain path.

        Args:
            embedding: ``(1, dim, G0, G1, G2)``; image_pe: ``(1, dim, G0, G1, G2)``.
            mask_projection: the prompt encoder's last mask layer, a 1×1×1 convolution from
                the mask features to ``dim`` (:meth:`PromptEncoder3D.mask_features`).
        """
        layers = self._first_block_layers()
        if layers is None or mask_projection.kernel_size != (1, 1, 1):
            return None
        sources = _cache_sources(layers, mask_projection, image_pe)
        bias = mask_projection.bias
        image = embedding if bias is None else embedding + bias.view(1, -1, 1, 1, 1)
        tokens = image.flatten(2).transpose(1, 2)
        with_pe = tokens + image_pe.flatten(2).transpose(1, 2)
        keys, values, queries = (
            linear(layers[0], with_pe),
            linear(layers[1], tokens),
            linear(layers[2], with_pe),
        )
        return DecoderImageCache(
            embedding, sources_key(sources), sources, torch.cat([keys, values, queries], dim=-1)
        )

    def cache_serves(
        self,
        cache: DecoderImageCache,
        embedding: torch.Tensor,
        image_pe: torch.Tensor,
        mask_projection: nn.Conv3d,
    ) -> bool:
        """Whether :meth:`first_projections` may use ``cache`` for ``embedding``: the same
        embedding, weights unchanged, the fast path, no gradient."""
        layers = self._first_block_layers()
        return (
            layers is not None
            and not torch.is_grad_enabled()
            and cache.serves(embedding, _cache_sources(layers, mask_projection, image_pe))
        )

    def first_projections(
        self,
        cache: DecoderImageCache,
        mask_features: torch.Tensor,
        mask_projection: nn.Conv3d,
    ) -> ImageProjections:
        """The first block's three products of ``embedding + mask_projection(mask_features)``
        (+ positional encoding) from the cache: the dense prompt is a 1×1×1 convolution of 16
        features, so each product is the cached one of the embedding plus the features times
        (projection weight · convolution weight), 16 instead of 384 inputs a voxel. The same
        sums up to float32 rounding (the terms are added in another order).

        Args:
            cache: from :meth:`image_cache`, for the decoded embedding and these weights.
            mask_features: ``(B, F, G0, G1, G2)``.
        """
        layers = self._first_block_layers()
        assert layers is not None
        conv_weight = mask_projection.weight

        def combined() -> torch.Tensor:
            conv = conv_weight.reshape(conv_weight.shape[0], -1)  # (dim, F)
            return torch.cat([layer.weight @ conv for layer in layers]).t().contiguous()

        weight = cached_derived(
            self,
            "_mask_feature_products",
            tuple(x.weight for x in layers) + (conv_weight,),
            combined,
        )  # (F, 3 · internal)
        features = mask_features.flatten(2).transpose(1, 2)  # (B, N, F)
        products = (features @ weight).add_(cache.products)
        keys, values, queries = products.split(layers[0].out_features, dim=-1)
        return ImageProjections(keys, values, queries)


def _cache_sources(
    layers: tuple[nn.Linear, ...], mask_projection: nn.Conv3d, image_pe: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    parameters = [p for x in (*layers, mask_projection) for p in (x.weight, x.bias)]
    return tuple(p for p in parameters if p is not None) + (image_pe,)


@dataclass(frozen=True)
class DecoderImageCache:
    """The first two-way block's products of one embedding, shared by every click on it:
    ``products`` ``(1, N, 3 · internal)`` = the token → image keys of (embedding + mask bias +
    positional encoding), its values of (embedding + mask bias), the image → token queries of
    (embedding + mask bias + positional encoding), each with its layer's bias.

    It holds the embedding and the weights it was computed with; :meth:`serves` says whether it
    still applies. Treat the embedding as read-only while the cache is used (as
    :meth:`Sam3D.encode` returns it).
    """

    embedding: torch.Tensor
    key: tuple
    sources: tuple[torch.Tensor, ...]
    products: torch.Tensor

    def serves(self, embedding: torch.Tensor, sources: tuple[torch.Tensor, ...]) -> bool:
        return embedding is self.embedding and sources_key(sources) == self.key
