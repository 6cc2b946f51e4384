"""Two-way transformer of the mask decoder: tokens and image attend to each other (model.md
§3.3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..attention import AttentionConfig, attend
from .common import MLPBlock, linear, traced


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
        if not plain and not projected.keys() & {"k", "v"}:
            if self._folds(q, k):
                return self._token_to_image_folded(q, k, v)  # type: ignore[arg-type]
            if self._folds(k, q if q is not None else projected.get("q")):
                return self._image_to_token_folded(q, k, v, projected.get("q"))  # type: ignore[arg-type]
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

    def _folds(self, few: torch.Tensor | None, many: torch.Tensor | None) -> bool:
        """Whether to fold the projections of the ``many`` side into the ``few`` side's
        (:meth:`_token_to_image_folded`, :meth:`_image_to_token_folded`): float32 inference on
        the CPU with the exact backend and plain linear layers, and few enough tokens that
        heads × tokens is at most :data:`_FOLD_SHARE` of the internal width (the folded
        products then cost less than projecting the image tokens)."""
        if few is None or many is None or few.ndim != 3 or many.ndim != 3:
            return False
        layers = (self.q_proj, self.k_proj, self.v_proj, self.out_proj)
        return (
            self.config.backend == "exact"
            # A graph traced (exported, compiled) at one token count would fold at every count.
            and not traced()
            and few.device.type == "cpu"
            and few.dtype == many.dtype == torch.float32
            and not torch.is_grad_enabled()
            and all(type(x) is nn.Linear and x.bias is not None for x in layers)
            and few.shape[0] == many.shape[0]
            and 4 * few.shape[1] <= many.shape[1]
            and self.num_heads * few.shape[1] <= _FOLD_SHARE * self.q_proj.out_features
        )

    def _head_weights(self, layer: nn.Linear) -> torch.Tensor:
        """An input projection's weight by head: ``(heads, c, dim)``."""
        return layer.weight.view(self.num_heads, -1, layer.in_features)

    def _token_to_image_folded(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`forward` for a few query tokens ``q`` ``(B, T, dim)`` over many image tokens
        ``k``, ``v`` ``(B, N, dim)``, without projecting the image tokens.

        Per head h, ``q_h·(k Wk_hᵀ + bk_h)ᵀ = (q_h Wk_h) kᵀ + q_h·bk_h``: the last term is the
        same for every key, which softmax ignores; and the attention weights P_h (rows summing to
        1) give ``P_h (v Wv_hᵀ + bv_h) = (P_h v) Wv_hᵀ + bv_h``. Two products of (heads·T) rows
        with the image tokens replace two of 512 rows with the projection weights: the same
        function up to float32 rounding (the sums run in another order).
        """
        batch, tokens, _ = q.shape
        heads_q = self._split_heads(linear(self.q_proj, q))  # (B, h, T, c)
        scaled = heads_q * heads_q.shape[-1] ** -0.5
        folded_keys = (scaled @ self._head_weights(self.k_proj)).flatten(1, 2)  # (B, h·T, dim)
        weights = (folded_keys @ k.transpose(1, 2)).softmax(dim=-1)  # (B, h·T, N)
        attended = (weights @ v).view(batch, self.num_heads, tokens, -1)  # (B, h, T, dim)
        bias = self.v_proj.bias.view(self.num_heads, 1, -1)  # type: ignore[union-attr]
        out = attended @ self._head_weights(self.v_proj).transpose(1, 2) + bias  # (B, h, T, c)
        return linear(self.out_proj, out.transpose(1, 2).flatten(2))

    def _image_to_token_folded(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor,
        v: torch.Tensor,
        projected_q: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`forward` for many image queries ``q`` ``(B, N, dim)`` (or ``projected_q``
        ``(B, N, internal)``) over a few tokens ``k``, ``v`` ``(B, T, dim)``.

        Per head h, ``(q Wq_hᵀ + bq_h)·k_hᵀ = q (k_h Wq_h)ᵀ + bq_h·k_hᵀ``, and the output
        projection of the heads' results ``Σ_h P_h v_h Wo_hᵀ + bo`` is one product of P
        ``(N, heads·T)`` with the stacked ``v_h Wo_hᵀ``: products of heads·T columns replace
        the projections of the image tokens. Same function up to float32 rounding.
        """
        batch, tokens, _ = k.shape
        heads_k = self._split_heads(linear(self.k_proj, k))  # (B, h, T, c)
        heads_k = heads_k * heads_k.shape[-1] ** -0.5
        heads_v = self._split_heads(linear(self.v_proj, v))  # (B, h, T, c)
        if projected_q is not None:
            logits = (heads_k @ self._split_heads(projected_q).transpose(-2, -1)).flatten(1, 2)
        else:
            assert q is not None
            folded = (heads_k @ self._head_weights(self.q_proj)).flatten(1, 2)  # (B, h·T, dim)
            bias = heads_k @ self.q_proj.bias.view(self.num_heads, -1, 1)  # type: ignore[union-attr]
            logits = torch.baddbmm(bias.flatten(1, 2), folded, q.transpose(1, 2))  # (B, h·T, N)
        queries = logits.shape[-1]
        # Softmax over each head's T tokens, along rows of N queries (see _attend_few_keys).
        weights = logits.view(batch, self.num_heads, tokens, queries).softmax(dim=-2)
        out_by_head = self.out_proj.weight.view(self.out_proj.out_features, self.num_heads, -1)
        values_out = (heads_v @ out_by_head.permute(1, 2, 0)).flatten(1, 2)  # (B, h·T, dim)
        bias_out = self.out_proj.bias.expand(batch, queries, -1)  # type: ignore[union-attr]
        return torch.baddbmm(bias_out, weights.flatten(1, 2).transpose(1, 2), values_out)


# Fold a cross-attention's image-side projections (DecoderAttention._folds) where heads × tokens
# is at most this share of the internal width: 8 heads, 192 wide, so up to 16 tokens (5 output
# tokens, a padding point and up to 10 points). At 8 tokens the image → token attention took
# 0.76 against 1.41 ms and the token → image one 0.88 against 1.43 ms; at 24 both about break
# even (AVX2 EPYC, 2 threads).
_FOLD_SHARE = 2 / 3


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
