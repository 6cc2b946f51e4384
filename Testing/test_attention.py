"""Attention backends against each other and against plain loops."""

from __future__ import annotations

import itertools

import pytest
import torch

from fastsam3d_core.attention import (
    AttentionConfig,
    attend,
    dilated_positions,
    reference_attention,
    relative_position_bias,
    relative_position_bias_reference,
    sparse_attention,
)
from fastsam3d_core.attention.windowed import padded_key_logit, padded_window_attention


def random_qkv(batch=2, heads=4, tokens=64, channels=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, tokens, channels, generator=generator, dtype=torch.float64)
        for _ in range(3)
    ]


def random_tables(side, channels, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2 * side - 1, channels, generator=generator, dtype=torch.float64)
        for _ in range(3)
    ]


def bias_by_loops(q, rel_d, rel_h, rel_w, side):
    """The bias of model.md §3.1 step 5c, one (query, key) pair at a time."""
    grid = q.reshape(q.shape[0], side, side, side, q.shape[-1])
    bias = torch.zeros(q.shape[0], side, side, side, side, side, side, dtype=q.dtype)
    shift = side - 1
    for qd, qh, qw, kd, kh, kw in itertools.product(range(side), repeat=6):
        bias[:, qd, qh, qw, kd, kh, kw] = (
            grid[:, qd, qh, qw] @ rel_d[qd - kw + shift]
            + grid[:, qd, qh, kd] @ rel_h[qh - kw + shift]
            + grid[:, qd, qh, kh] @ rel_w[kh - kw + shift]
        )
    return bias.reshape(q.shape[0], side**3, side**3)


@pytest.mark.parametrize("side", [2, 3])
def test_relative_position_bias_matches_loops(side):
    q = torch.randn(3, side**3, 5, dtype=torch.float64)
    tables = random_tables(side, 5)
    expected = bias_by_loops(q, *tables, side)
    torch.testing.assert_close(relative_position_bias(q, *tables, side), expected)
    torch.testing.assert_close(relative_position_bias_reference(q, *tables, side), expected)


@pytest.mark.parametrize("side", [8, 14])
def test_fast_bias_matches_reference_at_model_sizes(side):
    q = torch.randn(2, side**3, 4, dtype=torch.float64)
    tables = random_tables(side, 4)
    torch.testing.assert_close(
        relative_position_bias(q, *tables, side), relative_position_bias_reference(q, *tables, side)
    )


def test_bias_is_not_the_textbook_decomposition():
    """The checkpoints' bias differs from q·R_d[qd-kd] + q·R_h[qh-kh] + q·R_w[qw-kw]."""
    side = 3
    q = torch.randn(1, side**3, 4, dtype=torch.float64)
    tables = random_tables(side, 4)
    grid = q.reshape(side, side, side, 4)
    textbook = torch.zeros(side, side, side, side, side, side, dtype=q.dtype)
    for qd, qh, qw, kd, kh, kw in itertools.product(range(side), repeat=6):
        textbook[qd, qh, qw, kd, kh, kw] = grid[qd, qh, qw] @ (
            tables[0][qd - kd + 2] + tables[1][qh - kh + 2] + tables[2][qw - kw + 2]
        )
    ours = relative_position_bias(q, *tables, side)
    assert (ours - textbook.reshape(1, side**3, side**3)).abs().max() > 0.1


def test_bias_rejects_wrong_table_length():
    q = torch.randn(1, 8, 4)
    with pytest.raises(ValueError, match="expected 3"):
        relative_position_bias(q, *random_tables(3, 4), 2)


@pytest.mark.parametrize("with_bias", [False, True])
def test_exact_matches_reference(with_bias):
    q, k, v = random_qkv()
    bias = torch.randn(2, 4, 64, 64, dtype=torch.float64) if with_bias else None
    torch.testing.assert_close(
        attend(q, k, v, bias, AttentionConfig("exact")),
        attend(q, k, v, bias, AttentionConfig("reference")),
    )


def test_reference_attention_is_softmax_formula():
    q, k, v = (t[:1, :1, :5, :3] for t in random_qkv())
    out = reference_attention(q, k, v)
    for i in range(5):
        weights = torch.softmax(
            torch.stack([q[0, 0, i] @ k[0, 0, j] / 3**0.5 for j in range(5)]), 0
        )
        torch.testing.assert_close(out[0, 0, i], (weights[:, None] * v[0, 0]).sum(0))


def sparse_by_loops(q, k, v, segment_length, dilation, bias=None):
    """Eq. 3 spelled out: per head and segment, select every r-th token, attend, scatter back."""
    batch, heads, tokens, _ = q.shape
    out = torch.zeros(batch, heads, tokens, v.shape[-1], dtype=v.dtype)
    for b, h in itertools.product(range(batch), range(heads)):
        for start in range(0, tokens, segment_length):
            kept = list(range(start + h % dilation, start + segment_length, dilation))
            logits = q[b, h, kept] @ k[b, h, kept].T / q.shape[-1] ** 0.5
            if bias is not None:
                logits = logits + bias[b, h][kept][:, kept]
            out[b, h, kept] = torch.softmax(logits, -1) @ v[b, h, kept]
    return out


@pytest.mark.parametrize("segment_length,dilation", [(16, 2), (64, 4), (8, 1), (32, 8)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_sparse_matches_loops(segment_length, dilation, with_bias):
    q, k, v = random_qkv()
    bias = torch.randn(2, 4, 64, 64, dtype=torch.float64) if with_bias else None
    torch.testing.assert_close(
        sparse_attention(q, k, v, segment_length, dilation, bias),
        sparse_by_loops(q, k, v, segment_length, dilation, bias),
    )


def test_sparse_with_one_segment_and_no_dilation_is_dense():
    q, k, v = random_qkv()
    bias = torch.randn(2, 4, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(
        attend(q, k, v, bias, AttentionConfig("sparse", segment_length=64, dilation=1)),
        reference_attention(q, k, v, bias),
    )


def test_sparse_covers_every_token_when_heads_reach_the_dilation():
    positions = dilated_positions(512, 6, 64, 4, torch.device("cpu"))
    assert positions.shape == (6, 8, 16)
    assert set(positions.flatten().tolist()) == set(range(512))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"backend": "fast"}, "unknown attention backend"),
        ({"segment_length": 10, "dilation": 4}, "multiple"),
    ],
)
def test_invalid_config(options, message):
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**options)


def test_sparse_rejects_indivisible_sequence():
    q, k, v = random_qkv(tokens=60)
    with pytest.raises(ValueError, match="segments of 64"):
        sparse_attention(q, k, v, 64, 2)


def test_model_backends_agree_on_decoder(fastsam3d_seeded):
    model = fastsam3d_seeded
    generator = torch.Generator().manual_seed(3)
    embedding = torch.randn(1, 384, 8, 8, 8, generator=generator)
    points = torch.tensor([[[30.0, 60.0, 90.0], [64.0, 64.0, 10.0]]])
    labels = torch.tensor([[1, 0]])
    outputs = {}
    for backend in ("exact", "reference", "sparse"):
        model.set_attention_backend(backend)
        with torch.inference_mode():
            outputs[backend] = model.decode(embedding, points, labels, None)
    model.set_attention_backend("exact")
    for backend in ("reference", "sparse"):  # sparse leaves the decoder on exact attention
        torch.testing.assert_close(outputs[backend], outputs["exact"], rtol=1e-4, atol=1e-4)


def test_sparse_backend_changes_the_encoder(fastsam3d_seeded):
    model = fastsam3d_seeded
    image = torch.randn(1, 1, 128, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        dense = model.encode(image)
        model.set_attention_backend("sparse", segment_length=64, dilation=2)
        try:
            sparse = model.encode(image)
        finally:
            model.set_attention_backend("exact")
    assert sparse.shape == dense.shape
    assert torch.isfinite(sparse).all()
    assert (sparse - dense).abs().max() > 1e-3


# -- one zero-padded window, computed from the real tokens only (attention/windowed.py) --------


def padded_window_by_reference(x, qkv, heads, tables, window_side):
    """The released computation: zero-pad the grid to the window, attend over every token with
    the checkpoints' bias, keep the real queries (model.md §3.1, teacher differences)."""
    batch, side, _, _, dim = x.shape
    padded = x.new_zeros(batch, window_side, window_side, window_side, dim)
    padded[:, :side, :side, :side] = x
    tokens = window_side**3
    q, k, v = qkv(padded).reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    bias = relative_position_bias_reference(
        q.reshape(batch * heads, tokens, -1), *tables, window_side
    ).reshape(batch, heads, tokens, tokens)
    out = reference_attention(q, k, v, bias)
    out = out.reshape(batch, heads, window_side, window_side, window_side, -1)
    return out[:, :, :side, :side, :side].reshape(batch, heads, side**3, -1)


@pytest.mark.parametrize("side,window_side", [(2, 3), (3, 5), (4, 7)])
@pytest.mark.parametrize("bias_scale", [0.1, 3.0])
def test_padded_window_equals_padded_reference(side, window_side, bias_scale):
    generator = torch.Generator().manual_seed(side * 10 + window_side)
    heads, channels = 3, 4
    dim = heads * channels
    qkv = torch.nn.Linear(dim, 3 * dim).double()
    with torch.no_grad():
        qkv.weight.copy_(torch.randn(3 * dim, dim, generator=generator, dtype=torch.float64))
        # A large qkv bias makes the padded tokens' contribution large too.
        qkv.bias.copy_(bias_scale * torch.randn(3 * dim, generator=generator, dtype=torch.float64))
    tables = [
        torch.randn(2 * window_side - 1, channels, generator=generator, dtype=torch.float64)
        for _ in range(3)
    ]
    x = torch.randn(2, side, side, side, dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected = padded_window_by_reference(x, qkv, heads, tables, window_side)
        q, k, v = (
            qkv(x.reshape(2, side**3, dim)).reshape(2, side**3, 3, heads, -1).permute(2, 0, 3, 1, 4)
        )
        pads = tuple(qkv.bias.reshape(3, heads, channels))
        fast = padded_window_attention(q, k, v, pads, tables, side, window_side)
        plain = padded_window_attention(
            q, k, v, pads, tables, side, window_side, AttentionConfig("reference")
        )
    torch.testing.assert_close(fast, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(plain, expected, rtol=1e-10, atol=1e-10)


def test_padded_key_logit_is_the_sum_over_padded_keys():
    """log Σ exp(bias) over the padded keys, against the full bias of the padded grid."""
    side, window_side, channels = 2, 4, 3
    generator = torch.Generator().manual_seed(11)
    tables = [torch.randn(7, channels, generator=generator, dtype=torch.float64) for _ in range(3)]
    q_real = torch.randn(1, 1, side**3, channels, generator=generator, dtype=torch.float64)
    q_pad = torch.randn(1, channels, generator=generator, dtype=torch.float64)
    grid = (
        q_pad.expand(window_side**3, -1).clone().reshape(window_side, window_side, window_side, -1)
    )
    grid[:side, :side, :side] = q_real.reshape(side, side, side, -1)
    bias = bias_by_loops(grid.reshape(1, -1, channels), *tables, window_side)
    bias = bias.reshape(1, *(window_side,) * 6)[:, :side, :side, :side]
    padded = torch.ones((window_side,) * 3, dtype=torch.bool)
    padded[:side, :side, :side] = False
    expected = bias[..., padded].logsumexp(dim=-1).reshape(1, 1, side**3)
    ours = padded_key_logit(q_real, q_pad, *tables, side, window_side)
    torch.testing.assert_close(ours, expected)


def test_padded_window_rejects_a_window_not_larger_than_the_grid():
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(ValueError, match="must exceed"):
        padded_window_attention(q, q, q, (q[0, :, 0],) * 3, random_tables(2, 4), 2, 2)


def test_turbo_block_fast_path_equals_padded_path():
    """A windowed encoder block: real-token fast path against the padded computation."""
    from fastsam3d_core.models.image_encoder import EncoderBlock

    torch.manual_seed(12)
    block = EncoderBlock(
        24, 3, mlp_ratio=2.0, grid_side=3, window_size=5, normalise_stream=False, norm_eps=1e-6
    ).double()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn_like(parameter))
    x = torch.randn(2, 3, 3, 3, 24, dtype=torch.float64)
    with torch.no_grad():
        fast = block(x)
        block.attn.config = AttentionConfig("reference")
        padded = block(x)
    torch.testing.assert_close(fast, padded, rtol=1e-9, atol=1e-9)
