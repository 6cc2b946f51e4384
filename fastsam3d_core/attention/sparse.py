"""The FastSAM3D paper's 3-D sparse (dilated) attention, Eq. 3 of arXiv 2403.09827.

The token sequence (flattened in C order over (d, h, w)) is split into segments of ``w`` tokens;
in each segment every ``r``-th token is kept, attention runs among the kept tokens of a segment,
and the results are scattered back to the tokens' original positions. As in LongNet, on which the
paper builds, head ``h`` starts its selection at offset ``h mod r``, so with at least ``r`` heads
every token is attended to by some head; a token that a head skips gets a zero output from it.

This is opt-in and not what the released checkpoints compute (model.md §0 item 4,
§3.4): the released models use dense attention, and the repository's own sparse encoder
reassembles tokens in the wrong order. Use it only for experiments or with weights trained for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dilated_positions(
    num_tokens: int, num_heads: int, segment_length: int, dilation: int, device: torch.device
) -> torch.Tensor:
    """Token positions that each head keeps, grouped by segment.

    Returns:
        Long tensor ``(heads, segments, segment_length // dilation)`` of positions in
        ``[0, num_tokens)``.
    """
    if num_tokens % segment_length:
        raise ValueError(f"{num_tokens} tokens cannot be split into segments of {segment_length}")
    starts = torch.arange(0, num_tokens, segment_length, device=device)
    offsets = torch.arange(num_heads, device=device) % dilation
    steps = torch.arange(0, segment_length, dilation, device=device)
    return starts[None, :, None] + offsets[:, None, None] + steps[None, None, :]


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_length: int,
    dilation: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dilated self-attention over segments.

    Args:
        q, k: ``(B, heads, N, C)``; v: ``(B, heads, N, Cv)``; N must be a multiple of
            ``segment_length``, which must be a multiple of ``dilation``.
        segment_length: w, tokens per segment.
        dilation: r, keep every r-th token of a segment.
        bias: optional additive logits ``(B or 1, heads, N, N)``; only the entries between kept
            tokens of one segment are used.

    Returns:
        ``(B, heads, N, Cv)``; zero where a head skipped the token.
    """
    if q.shape[-2] != k.shape[-2]:
        raise ValueError("sparse attention is self-attention: queries and keys must match")
    batch, heads, tokens, _ = q.shape
    positions = dilated_positions(tokens, heads, segment_length, dilation, q.device)
    segments, kept = positions.shape[1:]
    flat = positions.reshape(1, heads, segments * kept, 1)

    def gather(x: torch.Tensor) -> torch.Tensor:
        index = flat.expand(batch, -1, -1, x.shape[-1])
        return x.gather(2, index).reshape(batch, heads, segments, kept, x.shape[-1])

    segment_bias = None
    if bias is not None:
        head_index = torch.arange(heads, device=q.device)[:, None, None, None]
        segment_bias = bias[:, head_index, positions[..., :, None], positions[..., None, :]]
    out = F.scaled_dot_product_attention(gather(q), gather(k), gather(v), attn_mask=segment_bias)
    result = v.new_zeros(batch, heads, tokens, v.shape[-1])
    index = flat.expand(batch, -1, -1, v.shape[-1])
    return result.scatter(2, index, out.reshape(batch, heads, segments * kept, -1))
