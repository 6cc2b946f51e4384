"""Sam3D: holds the three parts and offers the public encode / decode API."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionConfig
from ..attention.backends import Backend
from . import text_clicks
from .image_encoder import EncoderAttention, ImageEncoderViT3D
from .mask_decoder import DecoderImageCache, MaskDecoder3D
from .precision import PrecisionChoice, PrecisionError, check_precision, convert_encoder
from .prompt_encoder import BOX_HIGH_CORNER, BOX_LOW_CORNER, PromptEncoder3D
from .text_reference import NO_TEXT_PATH, NoTextPath, TextReference, TextReferenceConfig
from .transformer import DecoderAttention

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


class Sam3D(nn.Module):
    """A 3-D Segment Anything model: image encoder, prompt encoder and mask decoder.

    Its ``state_dict`` keys equal the official ones (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``). Gradient policy is the caller's: wrap calls in ``torch.inference_mode()``
    for inference.

    A new model's weights are random. The model remembers which parts have been given all their
    weights (by ``load_state_dict`` of the model or of the part, or by
    :func:`~fastsam3d_core.load_checkpoint`), so that a model
    that is not fully loaded, e.g. from an encoder-only file, is refused by the session instead
    of segmenting with a random decoder (see :meth:`check_weights_loaded`).
    """

    def __init__(
        self,
        image_encoder: ImageEncoderViT3D,
        prompt_encoder: PromptEncoder3D,
        mask_decoder: MaskDecoder3D,
        name: str = "",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.name = name
        # RefSAM3D's text path (:mod:`.text_reference`): None in the released models; an adapter
        # file trained with ``finetune --text`` brings one. Not part of the base weights.
        self.text_reference: TextReference | None = None
        self.random_parts: set[str] = set(PARTS)
        # The image encoder's precision (:mod:`.precision`); set once, when the model is loaded.
        self.precision = "float32"
        for part in PARTS:
            # A pre-hook runs however the part is loaded: through this model or on its own.
            getattr(self, part)._register_load_state_dict_pre_hook(
                functools.partial(self._note_loaded, part), with_module=True
            )

    def _note_loaded(
        self, part: str, module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *_: Any
    ) -> None:
        if all(prefix + key in state_dict for key in module.state_dict()):
            self.random_parts.discard(part)

    def allow_random_weights(self) -> Sam3D:
        """Let this model run with random weights (benchmarks, plumbing tests); returns it."""
        self.random_parts.clear()
        return self

    def check_weights_loaded(self) -> None:
        """Raise unless every part has been given weights.

        Raises:
            ValueError: names the parts that still hold random weights and what to load.
        """
        if not self.random_parts:
            return
        names = [part.replace("_", " ") for part in PARTS if part in self.random_parts]
        missing = " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
        hint = (
            "an encoder-only checkpoint needs the prompt encoder's and mask decoder's weights "
            "too: load the model's full checkpoint (e.g. FastSAM3D.pth), or those parts' "
            "weights with model.prompt_encoder / model.mask_decoder .load_state_dict"
            if self.random_parts == {"prompt_encoder", "mask_decoder"}
            else "load the weights with load_checkpoint(model, path)"
        )
        verb = "has" if len(names) == 1 else "have"
        raise ValueError(
            f"the {self.name or 'model'} model's {missing} {verb} no trained weights: {hint}"
        )

    @property
    def accepts_box_corners(self) -> bool:
        """Whether a box can be given as its corners, labels 2 and 3: only a model fine-tuned
        with ``fastsam3d finetune --prompts box`` (its adapter file loaded) has learned them."""
        return self.prompt_encoder.accepts_box_corners

    @property
    def accepts_text(self) -> bool:
        """Whether :meth:`decode_text` works: a text path is attached (an adapter file trained
        with ``fastsam3d finetune --text`` loaded)."""
        return self.text_reference is not None

    @property
    def text_depths(self) -> tuple[int, ...]:
        """The encoder blocks (1-based) whose outputs the text path reads."""
        if self.text_reference is not None:
            return self.text_reference.config.depths
        return TextReferenceConfig().for_depth(len(self.image_encoder.blocks)).depths

    def encode_levels(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`encode`, also returning the block outputs the text path reads.

        Returns:
            The embedding ``(B, 384, 8, 8, 8)`` (equal to :meth:`encode`'s) and one
            ``(B, 8, 8, 8, 768)`` block output per :attr:`text_depths`.
        """
        image = image.to(device=self.device, dtype=self.dtype)
        return self.image_encoder.forward_levels(image, self.text_depths)

    def decode_text(
        self,
        embedding: torch.Tensor,
        levels: tuple[torch.Tensor, ...],
        text: torch.Tensor,
        mask_input: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        honour_clicks: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks from text: the text path's prompt tokens (sparse) and dense prior, the dense
        prior added to the mask prompt's embedding, through the mask decoder; the path's logit
        prior (upsampled) added to the decoder's logits. Clicks after the text come as
        ``points``: their tokens go before the text's, so the text keeps its say in the mask
        (the click path alone, from the text's logits as mask prompt, lost it), and each is
        honoured where it landed (:func:`.text_clicks.honour_clicks`; ``honour_clicks=False``:
        the decoder's answer alone, as training reads it).

        Args:
            embedding, levels: from :meth:`encode_levels` (batch 1 or B).
            text: ``(B, 512)`` text embeddings.
            mask_input: ``(B, 1, 32, 32, 32)`` logits, or None (a zero mask, as a first click).
            points, labels: clicks as for :meth:`decode` (``(B, N, 3)``, ``(B, N)``), or None.

        Returns:
            logits ``(B, 1, 32, 32, 32)`` and predicted IoU ``(B, 1)``.

        Raises:
            NoTextPath: the model has no text path.
        """
        if self.text_reference is None:
            raise NoTextPath(NO_TEXT_PATH)
        points, labels = self._check_points(points, labels)
        batch = text.shape[0]
        if mask_input is None:
            mask_input = embedding.new_zeros(batch, 1, *self.prompt_encoder.mask_input_size)
        mask_input = mask_input.to(device=self.device, dtype=self.dtype)
        clicks, dense = self.prompt_encoder(points, labels, mask_input)
        sparse, prior, logit_prior = self.text_reference(levels, text.to(self.device))
        if points is not None:
            sparse = torch.cat([clicks.to(sparse.dtype), sparse], dim=1)
        logits, iou = self.mask_decoder(
            embedding.to(device=self.device, dtype=self.dtype),
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense + prior,
            False,
        )
        size = logits.shape[2:]
        upsampled = F.interpolate(logit_prior, size=size, mode="trilinear", align_corners=False)
        logits = logits + upsampled.to(logits.dtype)
        if points is not None and honour_clicks:
            seen = self.text_reference.image_as_seen(levels)
            logits = text_clicks.honour_clicks(logits, seen, points, labels)
        return logits, iou

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype

    def set_attention_backend(self, backend: Backend, **sparse_options: int) -> None:
        """Select how attention is computed (see :mod:`fastsam3d_core.attention`).

        ``exact`` and ``reference`` apply everywhere; ``sparse`` applies to the image encoder's
        self-attention, while the decoder keeps ``exact``. ``reference`` also computes every
        other layer the plain way (padded windows, module-by-module convolutions): it is the
        baseline that ``fastsam3d bench`` compares the default path with. ``sparse_options`` are
        ``segment_length`` and ``dilation``.
        """
        config = AttentionConfig(backend, **sparse_options)
        decoder_config = AttentionConfig("exact") if backend == "sparse" else config
        for module in self.modules():
            if isinstance(module, EncoderAttention):
                module.config = config
            elif isinstance(module, DecoderAttention):
                module.config = decoder_config
        # ``reference`` is the plain path throughout: no fused or re-associated layers either.
        for module in self.modules():
            if hasattr(module, "plain"):
                module.plain = backend == "reference"  # type: ignore[assignment]

    def set_precision(self, precision: str) -> PrecisionChoice:
        """Compute the image encoder in ``precision`` from now on (see :mod:`.precision`).

        Call it once the weights are loaded, on a float32 model. ``auto`` is not a precision
        but a choice, made when a model is loaded (``ModelRecipe(..., precision="auto")``, or
        :func:`.precision_choice.choose_precision` on a loaded model).

        Raises:
            PrecisionError: ``auto``, an unknown precision, one the device cannot run, or an
                encoder that was already converted.
        """
        check_precision(precision, self.device)
        if precision == "auto":
            raise PrecisionError(
                "auto is chosen when the model is loaded: ModelRecipe(..., precision='auto')"
                ".load(), or choose_precision(model, 'auto') then set_precision"
            )
        if self.precision != "float32":
            raise PrecisionError(
                f"the encoder already computes in {self.precision}: build a new model for another"
            )
        # Parameters must not become inference tensors, even when called in inference mode.
        with torch.inference_mode(False):
            convert_encoder(self.image_encoder, precision)
        self.precision = precision
        return PrecisionChoice(precision, "asked for")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image embedding of a batch of crops.

        Args:
            image: ``(B, 1, 128, 128, 128)`` float, z-normalised, spatial axes (d0, d1, d2) in the
                order of the training tensors (torchio canonical i, j, k).

        Returns:
            ``(B, 384, 8, 8, 8)`` float32, whatever the encoder's precision.
        """
        return self.image_encoder(image.to(device=self.device, dtype=self.dtype))

    def decode(
        self,
        embedding: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool = False,
        image_cache: DecoderImageCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder and mask decoder on a cached embedding.

        Args:
            embedding: ``(B or 1, 384, 8, 8, 8)`` from :meth:`encode`.
            points: ``(B, N, 3)`` float voxel coordinates (d0, d1, d2) of the 128³ input, or None.
            labels: ``(B, N)`` int, 1 positive, 0 negative (2 and 3: a box's low and high
                corners, where :attr:`accepts_box_corners`); None exactly when ``points`` is
                None.
            mask_input: ``(B, 1, 32, 32, 32)`` low-resolution logits of the previous prediction, or
                None for an all-zero mask, which is what the released models were evaluated with
                on a first click (model.md §8 item 6).
            multimask: return the three multimask outputs instead of the single mask.
            image_cache: from :meth:`decoder_image_cache` for this embedding, or None; used
                where it still applies (same embedding and weights, no gradient), else ignored.

        Returns:
            logits ``(B, 1 or 3, 32, 32, 32)`` and predicted IoU ``(B, 1 or 3)``.
        """
        points, labels = self._check_points(points, labels)
        batch = points.shape[0] if points is not None else embedding.shape[0]
        if mask_input is None:
            mask_input = embedding.new_zeros(batch, 1, *self.prompt_encoder.mask_input_size)
        expected_mask = (1, *self.prompt_encoder.mask_input_size)
        if mask_input.ndim != 5 or tuple(mask_input.shape[1:]) != expected_mask:
            raise ValueError(
                f"mask_input must be (B, {expected_mask}), got {tuple(mask_input.shape)}"
            )
        mask_input = mask_input.to(device=self.device, dtype=self.dtype)
        embedding = embedding.to(device=self.device, dtype=self.dtype)
        image_pe, encoder = self.prompt_encoder.get_dense_pe(), self.prompt_encoder
        projection, first = encoder.mask_projection, None
        if image_cache is not None and self.mask_decoder.cache_serves(
            image_cache, embedding, image_pe, projection
        ):
            sparse = encoder.sparse_embeddings(points, labels, mask_input.shape[0])
            features = encoder.mask_features(mask_input)
            dense = projection(features)
            first = self.mask_decoder.first_projections(image_cache, features, projection)
        else:
            sparse, dense = encoder(points, labels, mask_input)
        return self.mask_decoder(embedding, image_pe, sparse, dense, multimask, first)

    def decoder_image_cache(self, embedding: torch.Tensor) -> DecoderImageCache | None:
        """What :meth:`decode` can reuse on every click on ``embedding`` ``(1, 384, 8, 8, 8)``
        (:class:`DecoderImageCache`: about a fifth of the transformer's products), or None
        where it does not apply (the reference path, adapted projections). Pass it as
        ``image_cache`` while the embedding and the weights stay as they are."""
        embedding = embedding.to(device=self.device, dtype=self.dtype)
        encoder = self.prompt_encoder
        return self.mask_decoder.image_cache(
            embedding, encoder.get_dense_pe(), encoder.mask_projection
        )

    def _check_points(
        self, points: torch.Tensor | None, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be given together")
        if points is None or labels is None:
            return None, None
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        if tuple(labels.shape) != tuple(points.shape[:2]):
            raise ValueError(
                f"labels must be (B, N) = {tuple(points.shape[:2])}, got {tuple(labels.shape)}"
            )
        if not bool(((labels == 0) | (labels == 1)).all()):
            self._check_box_labels(labels)
        return points.to(device=self.device, dtype=self.dtype), labels.to(self.device)

    def _check_box_labels(self, labels: torch.Tensor) -> None:
        """Labels other than 0 and 1 must be box corners (2, 3) of a model that learned them."""
        corners = (labels == BOX_LOW_CORNER) | (labels == BOX_HIGH_CORNER)
        valid = (labels == 0) | (labels == 1)
        if self.accepts_box_corners:
            if not bool((valid | corners).all()):
                raise ValueError(
                    "labels must be 1 (positive), 0 (negative), or 2 and 3 (a box's corners)"
                )
            return
        hint = (
            ": labels 2 and 3 (a box's corners) need a model fine-tuned with 'fastsam3d "
            "finetune --prompts box' and its adapter file"
            if bool(corners.any())
            else ""
        )
        raise ValueError(f"labels must be 1 (positive) or 0 (negative){hint}")
