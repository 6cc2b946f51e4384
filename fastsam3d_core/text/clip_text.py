"""CLIP's text tower (OpenAI CLIP / OpenCLIP ViT-B): text -> a 512-d embedding.

Architecture (Radford et al. 2021; the ViT-B/32 and ViT-B/16 text towers are the same):
token embedding 49408x512 plus a learned positional embedding 77x512; 12 pre-norm residual
blocks of width 512 (LayerNorm, 8-head causal self-attention, LayerNorm, MLP 512-2048-512 with
QuickGELU for OpenAI's weights or GELU for OpenCLIP's LAION weights); a final LayerNorm; the
feature at the end token (the largest id in each row, 49407) times ``text_projection`` (512x512).

Module and parameter names are those of both state dicts (``token_embedding.weight``,
``positional_embedding``, ``transformer.resblocks.N.attn.in_proj_weight``, ``ln_final.*``,
``text_projection``), so a file's text-tower entries load as they are.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .tokenizer import CONTEXT_LENGTH, VOCAB_SIZE, ClipTokenizer

TEXT_EMBED_DIM = 512
ACTIVATIONS = ("gelu", "quick_gelu")


@dataclass(frozen=True)
class ClipTextConfig:
    """Sizes of the text tower; the defaults are ViT-B's."""

    vocab_size: int = VOCAB_SIZE
    context_length: int = CONTEXT_LENGTH
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_width: int = 2048
    embed_dim: int = TEXT_EMBED_DIM
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it.

    Parameters as ``nn.MultiheadAttention`` names them: ``in_proj_weight`` (3W, W) stacks the
    query, key and value projections; ``out_proj`` is a W -> W linear layer.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, L, W) -> (N, L, W)."""
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (N, L, 3W) -> three (N, heads, L, W / heads)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        activation = QuickGELU() if config.activation == "quick_gelu" else nn.GELU()
        self.ln_1 = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config.width, config.heads)
        self.ln_2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(config.width, config.mlp_width),
                gelu=activation,
                c_proj=nn.Linear(config.mlp_width, config.width),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """The stack of residual blocks (``transformer.resblocks.N`` in the state dicts)."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(config) for _ in range(config.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ClipTextEncoder(nn.Module):
    """CLIP's text tower with its tokenizer.

    Args:
        config: sizes and MLP activation.
        identity: what the weights are (see :attr:`identity`); set by the loaders.
        tokenizer: default: a :class:`ClipTokenizer` made on first use (which finds or downloads
            CLIP's vocabulary).
    """

    def __init__(
        self,
        config: ClipTextConfig | None = None,
        identity: dict | None = None,
        tokenizer: ClipTokenizer | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ClipTextConfig()
        width = self.config.width
        self.token_embedding = nn.Embedding(self.config.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(self.config.context_length, width))
        self.transformer = TextTransformer(self.config)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, self.config.embed_dim))
        self._identity = dict(identity or {"name": "untrained", "sha256": None})
        self._identity.setdefault("activation", self.config.activation)
        self._tokenizer = tokenizer
        self.reset_parameters()

    @property
    def identity(self) -> dict:
        """What these weights are: ``name`` (registry name, file name or ``"seeded"``),
        ``sha256`` (of the weights file, or ``"seeded:<seed>"``) and ``activation``."""
        return dict(self._identity)

    @property
    def tokenizer(self) -> ClipTokenizer:
        if self._tokenizer is None:
            self._tokenizer = ClipTokenizer()
        return self._tokenizer

    def reset_parameters(self) -> None:
        """CLIP's initialisation (normal, standard deviations from the widths)."""
        width, layers = self.config.width, self.config.layers
        attention_std = width**-0.5
        projection_std = attention_std * (2 * layers) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attention_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=projection_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=projection_std)
        nn.init.normal_(self.text_projection, std=attention_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: int64 (N, context_length) from :meth:`ClipTokenizer.tokenize` -> (N, embed_dim),
        the projected feature at each row's end token (its largest id), not normalised."""
        if tokens.dim() != 2 or tokens.shape[1] > self.config.context_length:
            raise ValueError(
                f"tokens must be (N, <= {self.config.context_length}), got {tuple(tokens.shape)}"
            )
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x))
        end_features = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return end_features @ self.text_projection

    @torch.no_grad()
    def embed(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Text embeddings: float32 (N, 512) on this module's device, not normalised.

        Raises:
            ValueError: an empty (or whitespace-only) text, or one that is not a string.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"text must be a string, got {type(text).__name__}")
            if not text.strip():
                raise ValueError("empty text: give the name of a structure, e.g. 'liver'")
        device = self.text_projection.device
        tokens = self.tokenizer.tokenize(texts, self.config.context_length).to(device)
        return self(tokens).float()


def seeded_text_encoder(
    seed: int = 0,
    activation: str = "gelu",
    vocabulary: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> ClipTextEncoder:
    """A ViT-B text tower with CLIP's initialisation drawn from ``seed`` (the global random state
    is left as it was): for tests and seeded runs. ``vocabulary`` as for :class:`ClipTokenizer`
    (read on first :meth:`~ClipTextEncoder.embed`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ClipTextEncoder(
            ClipTextConfig(activation=activation),
            identity={"name": "seeded", "sha256": f"seeded:{seed}"},
        )
    if vocabulary is not None:
        encoder._tokenizer = ClipTokenizer(vocabulary)
    return encoder.to(device).eval()


def parameter_count(module: nn.Module) -> int:
    """Number of parameters (the ViT-B text tower: 63,428,096 with its 49408x512 embedding)."""
    return sum(math.prod(parameter.shape) for parameter in module.parameters())
