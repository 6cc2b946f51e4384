"""Predictors: what a session calls to turn a crop and clicks into logits.

A session talks to a model only through :class:`Predictor`. :class:`ModelPredictor` adapts a built
:class:`~fastsam3d_core.models.Sam3D`; :class:`OraclePredictor` answers with the ground truth and is
used to test geometry and evaluation end to end without a model.
"""

from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch

from ..geometry import Crop, Volume, resample
from ..models.sam3d import Sam3D

ArrayLike = Union[np.ndarray, torch.Tensor]


@runtime_checkable
class Predictor(Protocol):
    """The interface between a session and a model.

    ``encode`` runs once per crop; ``decode`` runs on every click with the cached embedding.
    """

    def encode(self, crop: Crop) -> Any:
        """Embed ``crop.image`` ``(128, 128, 128)`` float32 (axes d0, d1, d2)."""

    def decode(
        self,
        embedding: Any,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: ArrayLike | None,
    ) -> ArrayLike:
        """Logits ``(n, n, n)`` (n = 32 or 128; a leading 1 is allowed) for the crop.

        Args:
            embedding: what :meth:`encode` returned for this crop.
            points: ``(N, 3)`` float crop voxel indices (d0, d1, d2).
            labels: ``(N,)`` int, 1 positive, 0 negative.
            mask_input: the mask prompt: the previous logits this predictor returned for the
                crop, or, for the first click of a crop of a segment made before the session,
                that segment as ``(32, 32, 32)`` logits (positive inside); None for none.
        """


class ModelPredictor:
    """Runs a :class:`Sam3D` under ``torch.inference_mode`` on the model's device.

    Raises:
        ValueError: a model with random weights in any part (see
            :meth:`Sam3D.check_weights_loaded`).
    """

    def __init__(self, model: Sam3D) -> None:
        model.check_weights_loaded()
        self.model = model

    def encode(self, crop: Crop) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(crop.image))[None, None]
        with torch.inference_mode():
            return self.model.encode(image)

    def decode(
        self,
        embedding: torch.Tensor,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: ArrayLike | None,
    ) -> torch.Tensor:
        device = self.model.device
        with torch.inference_mode():
            mask = None
            if mask_input is not None:
                mask = torch.as_tensor(mask_input, device=device).reshape(1, 1, 32, 32, 32)
            logits, _ = self.model.decode(
                # An embedding cached before the model moved (e.g. to the CPU) follows it.
                embedding.to(device),
                torch.as_tensor(points, dtype=torch.float32, device=device)[None],
                torch.as_tensor(labels, dtype=torch.long, device=device)[None],
                mask,
            )
        return logits[0, 0]


class OraclePredictor:
    """A perfect "model": the ground-truth mask, resampled into each crop.

    Args:
        labels: the ground truth on any grid (it is resampled by RAS position).
        label_value: which value is the object; None means any non-zero value.
        confidence: magnitude of the returned logits (positive inside, negative outside).
    """

    def __init__(
        self, labels: Volume, label_value: int | None = None, confidence: float = 10.0
    ) -> None:
        truth = labels.array != 0 if label_value is None else labels.array == label_value
        self.truth = labels.with_array(truth.astype(np.float32))
        self.confidence = confidence

    def encode(self, crop: Crop) -> torch.Tensor:
        fraction, _ = resample(
            self.truth.array, self.truth.ijk_to_ras, crop.affine, crop.grid.shape, mode="bilinear"
        )
        return fraction >= 0.5

    def decode(
        self,
        embedding: torch.Tensor,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: ArrayLike | None,
    ) -> torch.Tensor:
        return torch.where(embedding, self.confidence, -self.confidence)


def as_predictor(model_or_predictor: Sam3D | Predictor) -> Predictor:
    """Wrap a built model; pass any other predictor through."""
    if isinstance(model_or_predictor, Sam3D):
        return ModelPredictor(model_or_predictor)
    if not isinstance(model_or_predictor, Predictor):
        raise TypeError(
            f"{type(model_or_predictor).__name__} is neither a Sam3D model nor a predictor "
            "with encode(crop) and decode(embedding, points, labels, mask_input)"
        )
    return model_or_predictor
