"""Two-way transformer of the mask decoder: tokens and image attend to each other (model.md
§3.3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..attention import AttentionConfig, attend
from .common import MLPBlock, linear


class ImageProjections(NamedTuple):
    """A two-way block's three products of the image tokens, each ``(B, N, internal)``: the
    token → image attention's keys (of image + positional encoding) and values (of the image),
    the image → token attention's queries (of image + positional encoding)."""

    token_to_image_keys: torch.Tensor
    values: torch.Tensor
    image_to_token_queries: torch.Tensor


class DecoderAttention(nn.Module):
    """Multi-head attention with projections, optionally to a narrower internal width.

    Args:
        embedding_dim: width of inputs and output.
        num_heads: heads; internal width ``embedding_dim // downsample_rate`` is split among them.
        downsample_rate: 1 for self-attention, 2 for the cross-attentions of the released models.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide the internal width {internal_dim}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)
        self.config = AttentionConfig()
        # True: call the projections as modules (the plain path, for the reference).
        self.plain = False

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, heads·c)`` -> ``(B, heads, N, c)``."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        projected: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Args: q ``(B, Nq, dim)``, k and v ``(B, Nk, dim)``; ``projected``: any of "q", "k",
        "v" already through its projection, ``(B, N, internal)`` (that input may be None).
        Returns ``(B, Nq, dim)``."""
        plain = self.plain
        projected = projected or {}
        heads_q, heads_k, heads_v = (
            self._split_heads(
                projected[name] if name in projected else linear(layer, x, plain=plain)
            )
            for name, layer, x in (
                ("q", self.q_proj, q),
                ("k", self.k_proj, k),
                ("v", self.v_proj, v),
            )
        )
        if not plain and _few_keys_applies(heads_q, heads_k, self.config):
            out = _attend_few_keys(heads_q, heads_k, heads_v)
        else:
            out = attend(heads_q, heads_k, heads_v, config=self.config)
        # Recombine head-major: (B, heads, Nq, c) -> (B, Nq, heads·c).
        return linear(self.out_proj, out.transpose(1, 2).flatten(2), plain=plain)


def _few_keys_applies(q: torch.Tensor, k: torch.Tensor, config: AttentionConfig) -> bool:
    # The image → token attention on the CPU: 512 queries, a few dozen keys.
    return config.backend == "exact" and q.device.type == "cpu" and 4 * k.shape[-2] <= q.shape[-2]


def _attend_few_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention (scale 1/√c) with the logits laid out (keys, queries).

    The same function as :func:`fastsam3d_core.attention.attend`; for many queries and few keys
    (the image tokens attending to the prompt tokens) the CPU's softmax over the long axis of
    ``(B, heads, Nk, Nq)`` runs along contiguous rows of queries, where the fused kernel and a
    softmax over a last axis of Nk ≈ 10 both spend their time per query: 0.24 against 1.07 ms
    for 512 queries and 15 keys on one core here.

    Args: q ``(B, heads, Nq, C)``, k ``(B, heads, Nk, C)``, v ``(B, heads, Nk, Cv)``.
    Returns: ``(B, heads, Nq, Cv)``.
    """
    logits = (k * k.shape[-1] ** -0.5) @ q.transpose(-2, -1)
    return logits.softmax(dim=-2).transpose(-2, -1) @ v


class TwoWayAttentionBlock3D(nn.Module):
    """Token self-attention, token→image, MLP, image→token; each followed by a LayerNorm.

    With ``skip_first_layer_pe`` the self-attention *replaces* the queries, without positional
    encoding and without residual (layer 0 of the released decoder).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        mlp_dim: int,
        attention_downsample_rate: int,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = DecoderAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = DecoderAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = DecoderAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe
        # Med-SA's adapters, when attached: one beside the token MLP, a hyper-prompting one on
        # the image tokens (:mod:`fastsam3d_core.models.adapter`).
        self.mlp_adapter: nn.Module | None = None
        self.mlp_adapter_scale = 0.0
        self.hyper_adapter: nn.Module | None = None

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        prompt: torch.Tensor | None = None,
        image_projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: queries/query_pe ``(B, T, dim)``, keys/key_pe ``(B, N, dim)``; prompt
        ``(B, P, dim)``, the prompt tokens, for the hyper-prompting adapter;
        ``image_projections``: this block's products of the image tokens, already computed."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        # keys change only at the end of the block: keys + key_pe serves both cross-attentions.
        k = keys + key_pe if image_projections is None else None
        token_to_image, image_to_token = (
            ({}, {})
            if image_projections is None
            else (
                {"k": image_projections.token_to_image_keys, "v": image_projections.values},
                {"q": image_projections.image_to_token_queries},
            )
        )
        queries = self.norm2(
            queries + self.cross_attn_token_to_image(queries + query_pe, k, keys, token_to_image)
        )
        mlp_out = self.mlp(queries)
        if self.mlp_adapter is not None:
            mlp_out = mlp_out + self.mlp_adapter_scale * self.mlp_adapter(queries)
        queries = self.norm3(queries + mlp_out)

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, image_to_token))
        if self.hyper_adapter is not None and prompt is not None and prompt.shape[1]:
            keys = self.hyper_adapter(keys, prompt)
        return queries, keys


class TwoWayTransformer3D(nn.Module):
    """``depth`` two-way blocks and a final token→image attention.

    LayerNorms use PyTorch's default eps 1e-5 (unlike the encoder's 1e-6; model.md §3.3).
    """

    def __init__(
        self,
        *,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock3D(
                embedding_dim,
                num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=index == 0,
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = DecoderAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image: torch.Tensor,
        image_pe: torch.Tensor,
        tokens: torch.Tensor,
        prompt: torch.Tensor | None = None,
        first_projections: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            image: ``(B, dim, G0, G1, G2)`` embedding plus dense prompt.
            image_pe: ``(B, dim, G0, G1, G2)``.
            tokens: ``(B, T, dim)`` output tokens followed by prompt tokens.
            prompt: ``(B, P, dim)`` the prompt tokens alone, for hyper-prompting adapters.
            first_projections: the first block's products of ``image`` (and ``image_pe``),
                computed by the caller (:meth:`MaskDecoder3D.forward`), or None.

        Returns:
            tokens ``(B, T, dim)`` and image ``(B, G0·G1·G2, dim)``, both processed.
        """
        # Contiguous (B, N, dim) once here: every later add, norm and projection reads them.
        keys = image.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = tokens
        for index, layer in enumerate(self.layers):
            projections = first_projections if index == 0 else None
            queries, keys = layer(queries, keys, tokens, key_pe, prompt, projections)
        attended = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attended), keys
