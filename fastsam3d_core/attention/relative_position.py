"""Decomposed 3-D relative-position bias, exactly as the released checkpoints were trained.

Both released encoders (FastSAM3D and SAM-Med3D-turbo) add a relative-position term to their
attention logits. The 3-D port of SAM's decomposed bias contains a broadcasting slip (model.md §0
item 8, §3.1 step 5c), so the bias that the weights were trained with is *not* the textbook
``q·R_d[qd-kd] + q·R_h[qh-kh] + q·R_w[qw-kw]`` but

    bias(q=(qd,qh,qw), k=(kd,kh,kw)) = Q[qd,qh,qw]·R_d[qd-kw] + Q[qd,qh,kd]·R_h[qh-kw]
                                       + Q[qd,qh,kh]·R_w[kh-kw]

where ``Q[x,y,z]`` is the *unscaled* query vector of token (x,y,z) and ``R_a[δ] = rel_pos_a[δ+S-1]``
on a cubic token grid of side S. The second and third terms read the query vectors of other tokens.

Tokens are flattened in C order over (d, h, w): index = d·S² + h·S + w.
"""

from __future__ import annotations

import torch


def _check_tables(grid_side: int, *rel_pos: torch.Tensor) -> None:
    expected = 2 * grid_side - 1
    for table in rel_pos:
        if table.shape[0] != expected:
            raise ValueError(
                f"relative-position table has {table.shape[0]} rows, expected {expected} "
                f"for a token grid of side {grid_side}"
            )


def offset_rows(rel_pos: torch.Tensor, side: int, rows: int | None = None) -> torch.Tensor:
    """Table R[i, j] = rel_pos[i − j + S − 1] for i < rows (default S), j < S = ``side``:
    shape (rows, S, C)."""
    i = torch.arange(side if rows is None else rows, device=rel_pos.device)
    j = torch.arange(side, device=rel_pos.device)
    return rel_pos[i[:, None] - j[None, :] + side - 1]


def relative_position_bias(
    q: torch.Tensor,
    rel_pos_d: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    grid_side: int,
) -> torch.Tensor:
    """The checkpoint-exact bias, computed in O(S⁴·C) per head with broadcasting.

    Args:
        q: unscaled queries ``(BH, S³, C)``, tokens in C order over (d, h, w).
        rel_pos_d, rel_pos_h, rel_pos_w: tables ``(2S-1, C)``.
        grid_side: S, the side of the cubic token grid.

    Returns:
        Additive attention bias ``(BH, S³, S³)`` (queries × keys), same dtype as ``q``.
    """
    _check_tables(grid_side, rel_pos_d, rel_pos_h, rel_pos_w)
    side = grid_side
    q_grid = q.reshape(q.shape[0], side, side, side, q.shape[-1])
    # rel_a[b, x, y, z, k] = Q[x, y, z] · R_a[index_a, k], index_a = x, y or z respectively.
    rel_d = torch.einsum("bxyzc,xkc->bxyzk", q_grid, offset_rows(rel_pos_d, side))
    rel_h = torch.einsum("bxyzc,ykc->bxyzk", q_grid, offset_rows(rel_pos_h, side))
    rel_w = torch.einsum("bxyzc,zkc->bxyzk", q_grid, offset_rows(rel_pos_w, side))
    # Index the result as (b, qd, qh, qw, kd, kh, kw). Each term is broadcast the way the released
    # code does it (model.md §3.1 step 5c), which re-labels the 5-D tensors' last two axes:
    #   rel_d[b, qd, qh, qw, kw], rel_h[b, qd, qh, kd, kw], rel_w[b, qd, qh, kh, kw].
    bias = (
        rel_d[:, :, :, :, None, None, :]
        + rel_h[:, :, :, None, :, None, :]
        + rel_w[:, :, :, None, None, :, :]
    )
    tokens = side**3
    return bias.reshape(q.shape[0], tokens, tokens)


def relative_position_bias_reference(
    q: torch.Tensor,
    rel_pos_d: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    grid_side: int,
) -> torch.Tensor:
    """The same bias written straight from the formula in the module docstring.

    Slow and memory-hungry (it gathers S⁶ entries per head); it exists so that tests can check
    :func:`relative_position_bias` against an independent formulation. Same arguments and result.
    """
    _check_tables(grid_side, rel_pos_d, rel_pos_h, rel_pos_w)
    side = grid_side
    q_grid = q.reshape(q.shape[0], side, side, side, q.shape[-1])
    # dots_a[b, x, y, z, r] = Q[x, y, z] · rel_pos_a[r] for every row r of the table.
    dots_d = q_grid @ rel_pos_d.T
    dots_h = q_grid @ rel_pos_h.T
    dots_w = q_grid @ rel_pos_w.T
    qd, qh, qw, kd, kh, kw = torch.meshgrid(
        *(torch.arange(side, device=q.device),) * 6, indexing="ij"
    )
    shift = side - 1
    bias = (
        dots_d[:, qd, qh, qw, qd - kw + shift]
        + dots_h[:, qd, qh, kd, qh - kw + shift]
        + dots_w[:, qd, qh, kh, kh - kw + shift]
    )
    tokens = side**3
    return bias.reshape(q.shape[0], tokens, tokens)
