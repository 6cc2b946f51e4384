"""RefSAM3D's cross-modal reference: text prompts for a 3-D SAM (Gao & Lu, "Adapting SAM with
Cross-modal Reference for 3D Medical Image Segmentation").

A text embedding (CLIP's, 512 values) becomes prompts for the frozen mask decoder:

1. a **projector** maps the embedding (centred on the training vocabulary's mean embedding,
   :attr:`TextReference.text_centre`, then L2-normalised: CLIP's text embeddings share a large
   common component, and are compared by angle) to ``tokens`` query vectors of width ``width``
   (Linear 512→256, GELU, Linear 256→tokens·width);
2. **hierarchical cross-attention**: at each of the image encoder's block outputs named by
   ``depths`` (shallow to deep, channels-last ``(B, 8, 8, 8, 768)``, position embedding
   included), the queries attend over the 512 image tokens (pre-norm, ``heads`` heads, keys and
   values projected 768→width) and pass an MLP, each with a residual: the text is refined by the
   image at several depths in turn;
3. the refined queries become **sparse prompt tokens** (LayerNorm, Linear width→384), appended
   to the decoder's tokens as point embeddings are;
4. a **dense prior** ``(B, 384, 8, 8, 8)``: per voxel a score (at every level, the image token
   projected to ``width`` against the text's score vector: the mean refined query projected,
   plus the centred text projected directly; their scaled dot product summed over the levels,
   plus a bias), whose sigmoid mixes two learned 384-vectors, "inside" and
   "outside" (zero at start: an untrained path adds no prior). It is added to the mask
   prompt's dense embedding;
5. the same score, times a learned gain (0 at start), plus a learned offset (-4 at start: an
   untrained path finds nothing), upsampled trilinearly to 32³, is added to the decoder's
   low-resolution logits: a direct say in where the structure is, which a decoder
   that never saw text cannot learn quickly from prompts alone (docs/text-prompts.md).

The paper leaves widths, token count and depths open; these are chosen small (docs/text-prompts.md)
so that the path trains on one GPU, and on a CPU in the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TEXT_EMBED_DIM = 512  # CLIP ViT-B's projected text feature
# The logit prior's offset before training: below the seeded and released decoders' logits
# (|logit| about 1 on a first prompt), so an untrained path gives an empty mask.
UNTRAINED_LOGIT_BIAS = -4.0
# The logit prior's gain and offset are learned in units of this many logits: Adam moves a
# parameter by about the learning rate per step, which, unscaled, would take a thousand steps
# to move the offset from -4 to where a structure shows.
LOGIT_PRIOR_SCALE = 10.0


class NoTextPath(ValueError):
    """Text asked of a model (or adapter file) without a text path."""


NO_TEXT_PATH = (
    "this model has no text path: load an adapter file trained with 'fastsam3d finetune --text' "
    "(--adapter FILE)"
)


@dataclass(frozen=True)
class TextReferenceConfig:
    """The text path's shape (recorded in the adapter file).

    Attributes:
        depths: 1-based image-encoder blocks whose outputs the text attends over, shallow to deep
            (empty: a third, two thirds and all of the encoder's depth).
        width: width of the text queries and of the attention.
        heads: attention heads.
        tokens: sparse prompt tokens produced.
    """

    depths: tuple[int, ...] = ()
    width: int = 128
    heads: int = 4
    tokens: int = 4

    def for_depth(self, encoder_depth: int) -> TextReferenceConfig:
        """This configuration with its depths filled in for an encoder of ``encoder_depth``."""
        if self.depths:
            return self
        thirds = tuple(sorted({max(1, round(encoder_depth * n / 3)) for n in (1, 2, 3)}))
        return TextReferenceConfig(thirds, self.width, self.heads, self.tokens)

    def to_dict(self) -> dict:
        content = asdict(self)
        content["depths"] = list(self.depths)
        return content

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> TextReferenceConfig:
        return cls(**{**content, "depths": tuple(int(d) for d in content.get("depths", ()))})


@dataclass(frozen=True, eq=False)
class CropFeatures:
    """What the text path needs of one crop: the embedding (``(1, 384, 8, 8, 8)``, exactly what
    ``encode`` gives, for the clicks that follow) and the encoder's block outputs at the text
    path's depths (each ``(1, 8, 8, 8, 768)``)."""

    embedding: torch.Tensor
    levels: tuple[torch.Tensor, ...]


class ReferenceLevel(nn.Module):
    """The text queries attend over one level's image tokens, then pass an MLP (both
    pre-norm with residuals)."""

    def __init__(self, width: int, image_width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_query = nn.LayerNorm(width)
        self.norm_image = nn.LayerNorm(image_width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(image_width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )
        # Both residual branches start at zero: the queries leave a level as the text made
        # them, and the image refines them as training finds it useful. With the default
        # initialisation the attended image (the same for every text) outweighed what told
        # the names apart about 125 to 1 after three levels, and the names separated only
        # after 100+ steps (docs/text-prompts.md).
        for last in (self.out, self.mlp[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Args: queries ``(B, T, width)``; image ``(B or 1, N, image_width)`` tokens (one
        image's keys and values serve every text). Returns the queries ``(B, T, width)``."""
        batch, count, width = queries.shape
        q = self.query(self.norm_query(queries))
        k, v = self.key_value(self.norm_image(image)).expand(batch, -1, -1).chunk(2, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, L, width) -> (B, heads, L, width/heads)
            return x.reshape(batch, x.shape[1], self.heads, -1).transpose(1, 2)

        attended = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        queries = queries + self.out(attended.transpose(1, 2).reshape(batch, count, width))
        return queries + self.mlp(self.norm_mlp(queries))


class TextReference(nn.Module):
    """Text embedding + the encoder's block outputs -> sparse prompt tokens and a dense prior.

    Args:
        config: its shape, depths filled in (:meth:`TextReferenceConfig.for_depth`).
        image_width: the encoder's token width (768).
        prompt_width: the decoder's token width (384).
    """

    def __init__(self, config: TextReferenceConfig, image_width: int, prompt_width: int) -> None:
        super().__init__()
        if not config.depths:
            raise ValueError("TextReference needs its depths (TextReferenceConfig.for_depth)")
        self.config = config
        width = config.width
        # The training vocabulary's mean text embedding, subtracted before the projector (set by
        # training, saved in the adapter file; zero: no centring). CLIP's text embeddings of
        # organ names share a large common component (cosines 0.8-0.9 between them, seeded or
        # trained), so normalised but uncentred they reach the projector nearly alike and the
        # path learns one mask for every name; centred, their cosines are -0.5 to 0.
        self.register_buffer("text_centre", torch.zeros(TEXT_EMBED_DIM))
        self.projector = nn.Sequential(
            nn.Linear(TEXT_EMBED_DIM, 256), nn.GELU(), nn.Linear(256, config.tokens * width)
        )
        self.levels = nn.ModuleList(
            ReferenceLevel(width, image_width, config.heads) for _ in config.depths
        )
        self.to_sparse = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, prompt_width))
        # The dense prior: a score per voxel (the refined text against the deepest image
        # tokens), mixing two learned embeddings, "inside" and "outside" (both zero at start: an
        # untrained path adds no prior). Bounded, unlike a product of features, which grew
        # without limit against the decoder's LayerNorms when tried.
        self.score_norm = nn.ModuleList(nn.LayerNorm(image_width) for _ in config.depths)
        self.score_image = nn.ModuleList(nn.Linear(image_width, width) for _ in config.depths)
        self.score_text = nn.Linear(width, width)
        # The centred text straight into the score's text vector too: one matrix per name's
        # direction, which learns as fast as a linear probe; through the projector, the
        # queries and score_text alone (a product of four matrices from a small start) the
        # names were told apart only after 150+ steps (docs/text-prompts.md).
        self.score_direct = nn.Linear(TEXT_EMBED_DIM, width, bias=False)
        self.score_bias = nn.Parameter(torch.zeros(()))
        self.inside = nn.Parameter(torch.zeros(prompt_width))
        self.outside = nn.Parameter(torch.zeros(prompt_width))
        # The same score, scaled, also joins the decoder's low-resolution logits (gain 0 at
        # start): a base decoder that never saw text (or a seeded random one) learns slowly to
        # place a mask from prompts alone, so the path gets a direct say in where.
        self.logit_gain = nn.Parameter(torch.zeros(()))
        # And a learned offset, starting low: an untrained path finds nothing (an empty mask)
        # rather than whatever the decoder makes of prompts it never saw.
        self.logit_bias = nn.Parameter(torch.tensor(UNTRAINED_LOGIT_BIAS / LOGIT_PRIOR_SCALE))

    def forward(
        self, levels: tuple[torch.Tensor, ...], text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            levels: one ``(B or 1, G, G, G, image_width)`` block output per configured depth.
            text: ``(B, 512)`` text embeddings (any norm; centred on :attr:`text_centre` here).

        Returns:
            sparse ``(B, tokens, prompt_width)``, dense ``(B, prompt_width, G, G, G)``, and the
            logit prior ``(B, 1, G, G, G)`` (the score times :attr:`logit_gain` plus
            :attr:`logit_bias`, in units of :data:`LOGIT_PRIOR_SCALE` logits; the caller
            upsamples it onto the decoder's logits).
        """
        if len(levels) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} block outputs, got {len(levels)}")
        if text.ndim != 2 or text.shape[1] != TEXT_EMBED_DIM:
            raise ValueError(f"text must be (B, {TEXT_EMBED_DIM}), got {tuple(text.shape)}")
        dtype = self.inside.dtype
        batch = text.shape[0]
        # On the unit sphere first (the norm of a CLIP embedding carries no meaning), then
        # centred and back on the sphere.
        text = F.normalize(text.to(dtype), dim=-1) - self.text_centre.to(dtype)
        text = F.normalize(text, dim=-1)
        # Minus the centre's queries: what the names share (the projector's biases) would
        # otherwise outweigh what tells them apart, as the common component of the embeddings did.
        queries = self.projector(text) - self.projector(torch.zeros_like(text[:1]))
        queries = queries.reshape(batch, self.config.tokens, -1)
        grid = levels[-1].shape[1:4]
        for level, image in zip(self.levels, levels):
            queries = level(queries, image.to(dtype).flatten(1, 3))
        sparse = self.to_sparse(queries)
        score = self.score(levels, queries, text)  # (B, N)
        weight = torch.sigmoid(score)[..., None]
        dense = self.outside + weight * (self.inside - self.outside)  # (B, N, prompt_width)
        prior = LOGIT_PRIOR_SCALE * (self.logit_gain * score + self.logit_bias)
        prior = prior.reshape(batch, 1, *grid)
        return sparse, dense.transpose(1, 2).reshape(batch, -1, *grid), prior

    def image_as_seen(self, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The shallowest level's tokens as the score projects them, ``(B or 1, G, G, G,
        width)``: the local image as this path learned to tell structures apart by it (what
        :func:`.text_clicks.honour_clicks` compares a click's place with)."""
        level = levels[0].to(self.inside.dtype)
        return self.score_image[0](self.score_norm[0](level))

    def set_text_centre(self, embeddings: torch.Tensor) -> None:
        """Centre texts on the mean of ``embeddings`` ``(N, 512)`` (the training names'), each
        L2-normalised first as :meth:`forward` normalises a text."""
        with torch.no_grad():
            unit = F.normalize(embeddings.to(self.text_centre), dim=-1)
            self.text_centre.copy_(unit.mean(dim=0))

    def score(
        self, levels: tuple[torch.Tensor, ...], queries: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Per image token, how much it is the text's structure: at every level the scaled dot
        product of the mean refined query and the token (both projected), summed over the
        levels, plus a learned bias. (Shallow levels hold the local intensities that tell
        organs apart; deep ones the context.)

        Args: levels, each ``(B or 1, G, G, G, image_width)``; queries ``(B, T, width)``.
        Returns ``(B, G·G·G)`` (C order of the grid).
        """
        dtype = self.inside.dtype
        text = self.score_text(queries.mean(dim=1)) + self.score_direct(text.to(dtype))
        text = text[:, None]  # (B, 1, width)
        total = None
        for norm, project, level in zip(self.score_norm, self.score_image, levels):
            image = project(norm(level.to(dtype).flatten(1, 3)))  # (B or 1, N, width)
            term = (image * text).sum(-1)
            total = term if total is None else total + term
        assert total is not None
        scale = (text.shape[-1] * len(levels)) ** 0.5
        return total / scale + self.score_bias


def attach_text_reference(
    model: nn.Module, config: TextReferenceConfig | None = None
) -> list[nn.Parameter]:
    """Give ``model`` (a :class:`~.sam3d.Sam3D`) a new text path, sized to its encoder, on its
    device; returns the path's parameters (trainable).

    Raises:
        ValueError: the model has a text path already.
    """
    if getattr(model, "text_reference", None) is not None:
        raise ValueError("the model has a text path already")
    encoder = model.image_encoder
    config = (config or TextReferenceConfig()).for_depth(len(encoder.blocks))
    image_width = encoder.pos_embed.shape[-1]
    reference = TextReference(config, image_width, model.prompt_encoder.embed_dim)
    model.text_reference = reference.to(model.device)
    return list(reference.parameters())
