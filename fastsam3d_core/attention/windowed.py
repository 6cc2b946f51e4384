"""Attention over one zero-padded window, computed on the real tokens only.

SAM-Med3D-turbo's windowed blocks (model.md §1.3, §3.1 "teacher differences") zero-pad the LN1
output of the s³ token grid (s = 8) on the high side of each axis to one S³ window (S = 14) and
run qkv, attention with the relative-position bias, and the output projection over all
S³ = 2744 tokens; the result is cropped back to s³ before the residual. Only the s³ = 512 real
queries are kept, so padded queries never need computing. Padded *keys* do matter, but they
are cheap:

* a padded token's input is zero, so its query, key and value are the qkv bias's parts:
  ``q_pad``, ``k_pad``, ``v_pad`` ``(heads, C)``, the same for every padded position;
* a real query's logit to a padded key is therefore ``scale·(q·k_pad) + bias(q, key)``, where only
  the relative-position bias depends on the key's position.

With the checkpoints' bias (model.md §0 item 8, §3.1 step 5c; :mod:`.relative_position`), for a real
query ``(qd, qh, qw)`` and a key ``(kd, kh, kw)`` of the window,

    bias = A[kw] + B[kd, kw] + C[kh, kw],
    A[kw]     = Q[qd, qh, qw]·R_d[qd − kw]
    B[kd, kw] = Q[qd, qh, kd]·R_h[qh − kw]     (Q = q_pad when kd ≥ s)
    C[kh, kw] = Q[qd, qh, kh]·R_w[kh − kw]     (Q = q_pad when kh ≥ s)

with ``Q`` the unscaled query vectors of the *padded* grid. The bias is not a sum of three
independent one-axis terms (``kw`` appears in all three), but it is a sum over ``kw`` of products,
so the sum of ``exp(bias)`` over any box of keys costs O(S²) per query instead of O(S³):

    Σ_{kd,kh,kw} exp(bias) = Σ_kw exp(A[kw]) · Σ_kd exp(B[kd, kw]) · Σ_kh exp(C[kh, kw]).

The padded keys are those with kw ≥ s, or kw < s and kd ≥ s, or kw, kd < s and kh ≥ s, so

    P = Σ_{kw≥s} e^A·D_all·H_all + Σ_{kw<s} e^A·D_pad·H_all + Σ_{kw<s} e^A·D_real·H_pad

where ``D_x[kw] = Σ_{kd∈x} exp(B[kd, kw])`` and ``H_x[kw] = Σ_{kh∈x} exp(C[kh, kw])``. Every term
is positive (no cancellation), and everything is evaluated as log-sum-exp. Because all padded keys
share ``v_pad``, their whole contribution to a query's softmax is that of *one* extra key with key
vector ``k_pad``, value ``v_pad`` and additive bias ``log P``. Attention thus runs over s³ + 1 keys
instead of S³, and the result equals the padded computation up to floating-point rounding.
"""

from __future__ import annotations

import math

import torch

from .backends import AttentionConfig, attend
from .relative_position import offset_rows, relative_position_bias


def padded_key_logit(
    q: torch.Tensor,
    q_pad: torch.Tensor,
    rel_pos_d: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    grid_side: int,
    window_side: int,
) -> torch.Tensor:
    """``log P``: log of Σ over the window's padded keys of ``exp(bias(query, key))``.

    Args:
        q: unscaled real queries ``(B, heads, s³, C)``, C order over (d, h, w).
        q_pad: the query of a padded (zero-input) token ``(heads, C)``: the qkv bias's q part.
        rel_pos_d, rel_pos_h, rel_pos_w: the window's tables ``(2S − 1, C)``.
        grid_side: s, the real grid's side; window_side: S > s.

    Returns:
        ``(B, heads, s³)``: the bias of the one extra key that stands for all padded keys.
    """
    s, big = grid_side, window_side
    batch, heads, _, channels = q.shape
    grid = q.reshape(batch, heads, s, s, s, channels)
    table_d = offset_rows(rel_pos_d, big, rows=s)  # (s, S, C), row: qd
    table_h = offset_rows(rel_pos_h, big, rows=s)  # row: qh
    table_w = offset_rows(rel_pos_w, big)  # (S, S, C), row: kh over the whole window
    # A[b, n, qd, qh, qw, kw]
    a = torch.einsum("bnxyzc,xkc->bnxyzk", grid, table_d)
    # B for real kd: Q[qd, qh, kd]·R_h[qh − kw] -> (b, n, qd, qh, kd, kw); log-sum over kd.
    d_real = torch.einsum("bnxyzc,ykc->bnxyzk", grid, table_h).logsumexp(dim=4)
    # B for padded kd is the same for all S − s of them: (n, qh, kw), broadcast over qd.
    d_pad = torch.einsum("nc,ykc->nyk", q_pad, table_h)[:, None] + math.log(big - s)
    # C for real kh: Q[qd, qh, kh]·R_w[kh − kw] -> (b, n, qd, qh, kh, kw); log-sum over kh.
    h_real = torch.einsum("bnxyzc,zkc->bnxyzk", grid, table_w[:s]).logsumexp(dim=4)
    # C for padded kh depends on kh and kw only: (n, kw).
    h_pad = torch.einsum("nc,zkc->nzk", q_pad, table_w[s:]).logsumexp(dim=1)[:, None, None]
    d_all = torch.logaddexp(d_real, d_pad)  # (b, n, qd, qh, kw)
    h_all = torch.logaddexp(h_real, h_pad)
    # The three groups of padded keys; each term is (b, n, qd, qh, qw, kw').
    terms = torch.cat(
        [
            a[..., s:] + (d_all + h_all)[:, :, :, :, None, s:],
            a[..., :s] + (d_pad + h_all)[:, :, :, :, None, :s],
            a[..., :s] + (d_real + h_pad)[:, :, :, :, None, :s],
        ],
        dim=-1,
    )
    return terms.logsumexp(dim=-1).reshape(batch, heads, s**3)


def padded_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qkv_pad: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rel_pos: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grid_side: int,
    window_side: int,
    config: AttentionConfig | None = None,
) -> torch.Tensor:
    """Outputs of the real queries of an s³ grid zero-padded into one S³ window.

    Equals attention over the whole padded window with the checkpoints' relative-position bias
    (module docstring), restricted to the real queries.

    Args:
        q, k, v: the real tokens' ``(B, heads, s³, C)``; q unscaled.
        qkv_pad: ``(q_pad, k_pad, v_pad)``, each ``(heads, C)``: what a zero input projects to.
        rel_pos: the window's tables ``(rel_pos_d, rel_pos_h, rel_pos_w)``, each ``(2S − 1, C)``.
        grid_side: s; window_side: S, with S > s.
        config: attention backend for the s³ × (s³ + 1) attention (``exact`` or ``reference``;
            default ``exact``).

    Returns:
        ``(B, heads, s³, C)``.
    """
    s, big = grid_side, window_side
    if big <= s:
        raise ValueError(f"window side {big} must exceed the grid side {s} for padded keys")
    for table in rel_pos:
        if table.shape[0] != 2 * big - 1:
            raise ValueError(
                f"relative-position table has {table.shape[0]} rows, expected {2 * big - 1}"
            )
    q_pad, k_pad, v_pad = qkv_pad
    batch, heads, tokens, channels = q.shape
    # Real keys: the same bias on the s-grid, whose offsets are the middle 2s − 1 table rows.
    middle = slice(big - s, big + s - 1)
    table_d, table_h, table_w = (table[middle] for table in rel_pos)
    real_bias = relative_position_bias(
        q.reshape(batch * heads, tokens, channels), table_d, table_h, table_w, s
    ).reshape(batch, heads, tokens, tokens)
    pad_bias = padded_key_logit(q, q_pad, *rel_pos, s, big)
    # Under autocast the parts can come in different dtypes: keep each tensor's own.
    bias = torch.cat([real_bias, pad_bias[..., None].to(real_bias.dtype)], dim=-1)
    k = torch.cat([k, k_pad.to(k.dtype)[None, :, None].expand(batch, -1, 1, -1)], dim=2)
    v = torch.cat([v, v_pad.to(v.dtype)[None, :, None].expand(batch, -1, 1, -1)], dim=2)
    return attend(q, k, v, bias, config or AttentionConfig())
