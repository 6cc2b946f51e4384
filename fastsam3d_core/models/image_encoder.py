"""3-D ViT image encoder of FastSAM3D and SAM-Med3D (model.md §1.2, §3.1).

Axis convention: the input is ``(B, 1, D0, D1, D2)`` with spatial axes in the order of the training
tensors (torchio canonical (i, j, k), model.md §4.1); tokens are kept channels-last as
``(B, G0, G1, G2, C)`` and flattened in C order.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionConfig, attend
from ..attention.relative_position import relative_position_bias
from ..attention.windowed import padded_window_attention
from .common import LayerNorm3d, MLPBlock, fused_linear, linear


class EncoderAttention(nn.Module):
    """Multi-head self-attention over a cubic token grid with the checkpoints' rel-pos bias."""

    def __init__(self, dim: int, num_heads: int, grid_side: int) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.grid_side = grid_side
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * grid_side - 1, head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_side - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_side - 1, head_dim))
        self.config = AttentionConfig()
        # True: call the projections as modules (the plain path, for the reference).
        self.plain = False

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, dim)`` tokens -> q, k, v, each ``(B, heads, N, head_dim)``."""
        batch, tokens, _ = x.shape
        # (B, N, 3·dim) -> (3, B, heads, N, head_dim); channels are [q|k|v] × head × head_dim.
        qkv = linear(self.qkv, x, plain=self.plain)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def _merge_heads(self, out: torch.Tensor, grid: list[int]) -> torch.Tensor:
        # Heads are concatenated head-major: (B, heads, N, c) -> (B, *grid, heads·c).
        return linear(
            self.proj, out.transpose(1, 2).reshape(out.shape[0], *grid, -1), plain=self.plain
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, S, S, S, dim)``. Returns ``(B, S, S, S, dim)``."""
        batch, *grid, dim = x.shape
        if grid != [self.grid_side] * 3:
            raise ValueError(f"attention expects a {self.grid_side}³ token grid, got {grid}")
        tokens = self.grid_side**3
        q, k, v = self._heads(x.reshape(batch, tokens, dim))
        # Every backend builds the bias the way the released code does (broadcasting; model.md §3.1
        # step 5c); the formula-by-formula version is the tests' independent check of it.
        bias = relative_position_bias(
            q.reshape(batch * self.num_heads, tokens, -1),
            self.rel_pos_d,
            self.rel_pos_h,
            self.rel_pos_w,
            self.grid_side,
        ).reshape(batch, self.num_heads, tokens, tokens)
        return self._merge_heads(attend(q, k, v, bias, self.config), grid)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The real tokens' result of :meth:`forward` on ``x`` zero-padded to the window.

        Computes qkv, attention and projection for the s³ real tokens only; the padded keys
        enter as one extra key (:func:`~fastsam3d_core.attention.windowed.padded_window_attention`).

        Args:
            x: ``(B, s, s, s, dim)`` with s < the window side.

        Returns:
            ``(B, s, s, s, dim)``, equal to ``forward(pad(x))[:, :s, :s, :s]``.
        """
        batch, *grid, dim = x.shape
        side = grid[0]
        if grid != [side] * 3 or side >= self.grid_side:
            raise ValueError(f"expected a cubic grid smaller than {self.grid_side}³, got {grid}")
        q, k, v = self._heads(x.reshape(batch, side**3, dim))
        # A zero (padded) input projects to the qkv bias. (Dynamically quantised Linear layers
        # expose their bias through a method.)
        qkv_bias = self.qkv.bias() if callable(self.qkv.bias) else self.qkv.bias
        q_pad, k_pad, v_pad = qkv_bias.reshape(3, self.num_heads, -1).unbind(0)
        tables = (self.rel_pos_d, self.rel_pos_h, self.rel_pos_w)
        out = padded_window_attention(
            q, k, v, (q_pad, k_pad, v_pad), tables, side, self.grid_side, self.config
        )
        return self._merge_heads(out, grid)


class EncoderBlock(nn.Module):
    """Attention block, optionally over one zero-padded window.

    With ``normalise_stream=False`` this is the standard pre-norm block of SAM-Med3D:
    ``x += Attn(LN1 x); x += MLP(LN2 x)``. With ``True`` it is FastSAM3D's block (model.md §0
    item 2), in which the normalised tensor replaces the stream:
    ``x = LN2(x + Attn(LN1 x)); x += MLP(x)``.

    ``window_size > 0`` zero-pads the LN1 output on the high side of each axis to a multiple of the
    window and attends within each window, padded tokens included (model.md §3.1,
    teacher differences).
    When the whole grid fits in one window (SAM-Med3D-turbo: 8³ in 14³) the default backend
    computes the same result from the real tokens alone, the padded keys folded into one extra
    key (:mod:`fastsam3d_core.attention.windowed`); ``reference`` keeps the padded computation.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        grid_side: int,
        window_size: int,
        normalise_stream: bool,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.normalise_stream = normalise_stream
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EncoderAttention(dim, num_heads, window_size if window_size else grid_side)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        # Med-SA adapters, when attached (:mod:`fastsam3d_core.models.adapter`).
        self.attn_adapter: nn.Module | None = None
        self.mlp_adapter: nn.Module | None = None
        self.mlp_adapter_scale = 0.0

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, d, h, w, dim = x.shape
        size = self.window_size
        pads = [(-n) % size for n in (d, h, w)]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        nd, nh, nw = ((n + p) // size for n, p in zip((d, h, w), pads))
        # (B, nd·S, nh·S, nw·S, C) -> (B·windows, S, S, S, C)
        windows = x.reshape(batch, nd, size, nh, size, nw, size, dim)
        windows = windows.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, size, size, size, dim)
        out = self.attn(windows).reshape(batch, nd, nh, nw, size, size, size, dim)
        out = out.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(
            batch, nd * size, nh * size, nw * size, dim
        )
        return out[:, :d, :h, :w]

    def _one_padded_window(self, x: torch.Tensor) -> bool:
        """Whether the fast path applies: a cubic grid inside one window, dense attention.

        The ``reference`` backend keeps the padded computation, as a plain check of the fast
        one; ``sparse`` needs the padded sequence.
        """
        grid = x.shape[1:4]
        return (
            self.attn.config.backend == "exact"
            and len(set(grid)) == 1
            and grid[0] < self.window_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, G0, G1, G2, dim)``. Returns the same shape."""
        normed = self.norm1(x)
        if not self.window_size:
            attended = self.attn(normed)
        elif self._one_padded_window(normed):
            attended = self.attn.forward_padded(normed)
        else:
            attended = self._windowed_attention(normed)
        if self.attn_adapter is not None:
            attended = self.attn_adapter(attended)
        x = x + attended
        if self.normalise_stream:
            x = self.norm2(x)
            return x + _adapted_mlp(self, x)
        return x + _adapted_mlp(self, self.norm2(x))


class MLPOnlyBlock(nn.Module):
    """FastSAM3D's attention-free block: ``x = LN2(x); x += MLP(x)`` (model.md §3.1 step 4)."""

    def __init__(self, dim: int, *, mlp_ratio: float, norm_eps: float) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.mlp_adapter: nn.Module | None = None
        self.mlp_adapter_scale = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2(x)
        return x + _adapted_mlp(self, x)


def _adapted_mlp(block: EncoderBlock | MLPOnlyBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP on ``x``, plus its scaled MLP adapter's output when it has one."""
    out = block.mlp(x)
    if block.mlp_adapter is not None:
        out = out + block.mlp_adapter_scale * block.mlp_adapter(x)
    return out


class PatchEmbed3D(nn.Module):
    """Non-overlapping cubic patches to channels-last tokens."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        # True: the convolution module (the plain path, for the reference).
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, D0, D1, D2)``. Returns ``(B, D0/p, D1/p, D2/p, embed_dim)``."""
        if self.plain:
            return self.proj(x).permute(0, 2, 3, 4, 1)
        # A stride-p convolution with a p³ kernel is one matrix product over the patches; as a
        # product it runs on the matrix kernels of every precision (a bfloat16 Conv3d of this
        # shape is a slow fallback on CPUs).
        batch, channels, *sides = x.shape
        p = self.patch_size
        grid = [side // p for side in sides]
        patches = x.reshape(batch, channels, grid[0], p, grid[1], p, grid[2], p)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(batch, *grid, -1)
        return fused_linear(patches, self.proj.weight.flatten(1), self.proj.bias)


class ImageEncoderViT3D(nn.Module):
    """Patch embedding, absolute position embedding, blocks, and a convolutional neck.

    Args:
        img_size: side of the cubic input (128 for both released models).
        patch_size: side of a cubic patch.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / embed_dim.
        out_chans: channels of the output embedding.
        skip_layer: number of leading attention-free blocks (FastSAM3D: 2).
        window_size: window side for the windowed blocks (0: all global).
        global_attn_indexes: blocks that attend globally when ``window_size > 0``.
        normalise_stream: use FastSAM3D's block instead of the standard one.
        norm_eps: epsilon of every encoder LayerNorm.
    """

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        out_chans: int,
        skip_layer: int,
        window_size: int,
        global_attn_indexes: tuple[int, ...],
        normalise_stream: bool,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3D(patch_size, 1, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        blocks: list[nn.Module] = [
            MLPOnlyBlock(embed_dim, mlp_ratio=mlp_ratio, norm_eps=norm_eps)
            for _ in range(skip_layer)
        ]
        blocks += [
            EncoderBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                grid_side=grid,
                window_size=0 if index in global_attn_indexes else window_size,
                normalise_stream=normalise_stream,
                norm_eps=norm_eps,
            )
            for index in range(skip_layer, depth)
        ]
        self.blocks = nn.ModuleList(blocks)
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans, eps=norm_eps),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans, eps=norm_eps),
        )
        # True: run the neck module by module (the plain path, for the reference).
        self.plain = False

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Encode a batch of crops.

        Args:
            image: ``(B, 1, img_size, img_size, img_size)`` float, z-normalised, axes (d0, d1, d2).

        Returns:
            Embedding ``(B, out_chans, G, G, G)``, G = img_size / patch_size.
        """
        expected = (1, self.img_size, self.img_size, self.img_size)
        if image.ndim != 5 or tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"image must be (B, {', '.join(map(str, expected))}), got {tuple(image.shape)}"
            )
        # Reduced precision (models.precision) runs from the patch embedding to the neck.
        x = self.patch_embed(image.to(self.pos_embed.dtype)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self._neck(x)

    def forward_levels(
        self, image: torch.Tensor, depths: tuple[int, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`forward`, also returning the outputs of the blocks numbered in ``depths``.

        The same operations in the same order as :meth:`forward`, so the embedding is the one
        :meth:`forward` gives; the text path (:mod:`.text_reference`) reads the block outputs.

        Args:
            image: as :meth:`forward`.
            depths: 1-based block numbers (block ``n``'s output is the stream after ``n``
                blocks), in increasing order.

        Returns:
            The embedding ``(B, out_chans, G, G, G)`` and one ``(B, G, G, G, embed_dim)``
            channels-last block output per depth, in the encoder's compute dtype.
        """
        if any(not 1 <= depth <= len(self.blocks) for depth in depths):
            raise ValueError(f"block depths must be in 1..{len(self.blocks)}, got {depths}")
        x = self.patch_embed(image.to(self.pos_embed.dtype)) + self.pos_embed
        levels = []
        for number, block in enumerate(self.blocks, 1):
            x = block(x)
            if number in depths:
                levels.append(x)
        return self._neck(x), tuple(levels)

    def _neck(self, x: torch.Tensor) -> torch.Tensor:
        """The neck on channels-last tokens ``(B, G, G, G, embed_dim)``; ``(B, out, G, G, G)``.

        The 1×1 convolution is a matrix product over the channels and the first LayerNorm3d a
        LayerNorm over the last axis; the 3×3×3 convolution then gets a contiguous
        ``(B, C, G, G, G)`` input, which its kernel handles much faster than the strided view
        the module-by-module path hands it. That convolution and the last LayerNorm3d compute
        in their own weights' dtype: float32 under every precision.
        """
        conv1, norm1 = cast(nn.Conv3d, self.neck[0]), cast(LayerNorm3d, self.neck[1])
        conv2, norm2 = cast(nn.Conv3d, self.neck[2]), self.neck[3]
        if self.plain:
            return norm2(conv2(norm1(conv1(x.permute(0, 4, 1, 2, 3))).to(conv2.weight.dtype)))
        x = fused_linear(x, conv1.weight.flatten(1), None)
        x = F.layer_norm(x, (x.shape[-1],), norm1.weight, norm1.bias, norm1.eps)
        x = x.permute(0, 4, 1, 2, 3).to(conv2.weight.dtype, memory_format=torch.contiguous_format)
        return norm2(conv2(x))
