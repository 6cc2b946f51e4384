"""Softmax attention with selectable backends: the one place where attention is computed.

Backends:
    ``exact`` (default): dense softmax attention through
        :func:`torch.nn.functional.scaled_dot_product_attention`, the bias passed as the additive
        mask, so PyTorch picks a fused kernel where one exists. Where there is no bias and the
        inputs are fp16/bf16 on CUDA, the optional ``flash-attn`` package is used if installed.
    ``reference``: the textbook formula, written out; used by tests to check the others.
    ``sparse``: the FastSAM3D paper's dilated attention (Eq. 3), see :mod:`.sparse`. The released
        checkpoints were trained with dense attention, so this backend changes the model's outputs.
        It applies to the image encoder's self-attention only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .sparse import sparse_attention

Backend = Literal["exact", "reference", "sparse"]
BACKENDS: tuple[str, ...] = ("exact", "reference", "sparse")


@dataclass(frozen=True)
class AttentionConfig:
    """How an attention layer computes softmax(q·kᵀ/√c + bias)·v.

    Attributes:
        backend: one of :data:`BACKENDS`.
        segment_length: ``sparse`` only: tokens per segment (w in the paper's Eq. 3).
        dilation: ``sparse`` only: keep every r-th token of a segment (r in Eq. 3).
    """

    backend: Backend = "exact"
    segment_length: int = 64
    dilation: int = 2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {self.backend!r}; choose from {BACKENDS}")
        if self.segment_length < 1 or self.dilation < 1:
            raise ValueError("segment_length and dilation must be positive integers")
        if self.segment_length % self.dilation:
            raise ValueError(
                f"segment_length {self.segment_length} is not a multiple of "
                f"dilation {self.dilation}"
            )


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q·kᵀ/√c + bias)·v, written out.

    Args:
        q: ``(..., Nq, C)``; k: ``(..., Nk, C)``; v: ``(..., Nk, Cv)``.
        bias: additive logits broadcastable to ``(..., Nq, Nk)``, or ``None``.

    Returns:
        ``(..., Nq, Cv)``.
    """
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
    return logits.softmax(dim=-1) @ v


FLASH_ATTN_INSTALLED = importlib.util.find_spec("flash_attn") is not None


def _flash_attn_applies(q: torch.Tensor, bias: torch.Tensor | None) -> bool:
    # flash-attn has no arbitrary additive bias and computes only in half precision on CUDA:
    # anywhere else it would not compute the same function.
    return (
        FLASH_ATTN_INSTALLED
        and bias is None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
    )


def _flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_func

    # flash-attn wants (B, N, heads, C); our layout is (B, heads, N, C).
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: AttentionConfig = AttentionConfig(),
) -> torch.Tensor:
    """Multi-head softmax attention with scale 1/√c.

    Args:
        q: queries ``(B, heads, Nq, C)``.
        k: keys ``(B, heads, Nk, C)``.
        v: values ``(B, heads, Nk, Cv)``.
        bias: additive logits ``(B, heads, Nq, Nk)`` (or broadcastable), or ``None``.
        config: backend selection; ``sparse`` requires Nq == Nk (self-attention).

    Returns:
        ``(B, heads, Nq, Cv)``.
    """
    if config.backend == "reference":
        return reference_attention(q, k, v, bias)
    if config.backend == "sparse":
        return sparse_attention(q, k, v, config.segment_length, config.dilation, bias)
    if _flash_attn_applies(q, bias):
        return _flash_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
