"""The local model as a :class:`~fastsam3d_core.session.Predictor`: torch, on the model's device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..geometry import Crop
from ..models.mask_decoder import DecoderImageCache
from ..models.sam3d import Sam3D
from ..models.text_reference import TEXT_EMBED_DIM, CropFeatures


class ModelPredictor:
    """Runs a :class:`Sam3D` under ``torch.inference_mode`` on the model's device.

    Raises:
        ValueError: a model with random weights in any part (see
            :meth:`Sam3D.check_weights_loaded`).
    """

    def __init__(self, model: Sam3D) -> None:
        model.check_weights_loaded()
        self.model = model
        self._image_cache: DecoderImageCache | None = None

    @property
    def accepts_box_corners(self) -> bool:
        """Whether :meth:`decode` takes a box as its corners, labels 2 (low) and 3 (high): a
        model fine-tuned with ``fastsam3d finetune --prompts box``, its adapter file loaded."""
        return self.model.accepts_box_corners

    @property
    def accepts_text(self) -> bool:
        """Whether :meth:`decode_text` works: an adapter file with a text path
        (``fastsam3d finetune --text``) is loaded."""
        return self.model.accepts_text

    def encode_features(self, crop: Crop) -> CropFeatures:
        """The embedding ``(1, 384, 8, 8, 8)`` (what :meth:`encode` gives: cache it for the
        clicks) and the encoder block outputs the text path reads, on the model's device."""
        image = torch.from_numpy(np.ascontiguousarray(crop.image))[None, None]
        with torch.inference_mode():
            embedding, levels = self.model.encode_levels(image)
        return CropFeatures(embedding, levels)

    def decode_text(
        self,
        features: CropFeatures,
        text_embedding: Any,
        mask_input: Any = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits ``(32, 32, 32)`` float32 of the text's structure in the crop.

        Args:
            features: from :meth:`encode_features`.
            text_embedding: ``(512,)`` (a text encoder's or an adapter file's bank entry).
            mask_input: ``(32, 32, 32)`` logits of a previous prediction, or None.
            points, labels: clicks after the text, as for :meth:`decode` (``(N, 3)`` crop voxel
                coordinates, ``(N,)`` labels), decoded with the text's prompts; or None.

        Raises:
            NoTextPath: the model has no text path (one line).
        """
        device = self.model.device
        text = torch.as_tensor(text_embedding, dtype=torch.float32, device=device)
        if tuple(text.shape) != (TEXT_EMBED_DIM,):
            raise ValueError(f"a text embedding is ({TEXT_EMBED_DIM},), got {tuple(text.shape)}")
        with torch.inference_mode():
            mask = None
            if mask_input is not None:
                mask = torch.as_tensor(mask_input, device=device).reshape(1, 1, 32, 32, 32)
            levels = tuple(level.to(device) for level in features.levels)
            clicks = click_labels = None
            if points is not None:
                clicks = torch.as_tensor(points, dtype=torch.float32, device=device)[None]
                click_labels = torch.as_tensor(labels, dtype=torch.long, device=device)[None]
            logits, _ = self.model.decode_text(
                features.embedding.to(device), levels, text[None], mask, clicks, click_labels
            )
        return logits[0, 0].float().cpu().numpy()

    def encode(self, crop: Crop) -> torch.Tensor:
        """The embedding ``(1, 384, 8, 8, 8)`` on the model's device."""
        image = torch.from_numpy(np.ascontiguousarray(crop.image))[None, None]
        with torch.inference_mode():
            return self.model.encode(image)

    def decode(
        self,
        embedding: torch.Tensor,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: Any,
    ) -> np.ndarray:
        """Logits ``(32, 32, 32)`` float32 (see :meth:`Predictor.decode`).

        The decoder's products of the last embedding decoded are kept for the next click on it
        (:meth:`Sam3D.decoder_image_cache`): ``embedding`` is read as :meth:`encode` returned
        it, never changed in place.
        """
        device = self.model.device
        with torch.inference_mode():
            mask = None
            if mask_input is not None:
                mask = torch.as_tensor(mask_input, device=device).reshape(1, 1, 32, 32, 32)
            # An embedding cached before the model moved (e.g. to the CPU) follows it.
            embedding = embedding.to(device=device, dtype=self.model.dtype)
            logits, _ = self.model.decode(
                embedding,
                torch.as_tensor(points, dtype=torch.float32, device=device)[None],
                torch.as_tensor(labels, dtype=torch.long, device=device)[None],
                mask,
                image_cache=self._image_cache_for(embedding),
            )
        return logits[0, 0].float().cpu().numpy()

    def _image_cache_for(self, embedding: torch.Tensor) -> DecoderImageCache | None:
        """The decoder's cache for ``embedding``: the last one if it still serves (same
        embedding and weights), else a new one; one embedding at a time (a crop's clicks)."""
        cache = self._image_cache
        decoder, encoder = self.model.mask_decoder, self.model.prompt_encoder
        if cache is None or not decoder.cache_serves(
            cache, embedding, encoder.get_dense_pe(), encoder.mask_projection
        ):
            cache = self._image_cache = self.model.decoder_image_cache(embedding)
        return cache
