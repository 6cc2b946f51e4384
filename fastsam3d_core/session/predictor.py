"""Predictors: what a session calls to turn a crop and clicks into logits.

A session talks to a model only through :class:`Predictor`. :class:`ModelPredictor` (in
``model_predictor``, which imports torch) adapts a built :class:`~fastsam3d_core.models.Sam3D`;
:class:`OraclePredictor` answers with the ground truth and is used to test geometry and evaluation
end to end without a model. Nothing here imports torch: a client of the encoder service has none.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..geometry import Crop, Volume, resample

if TYPE_CHECKING:
    from ..models.sam3d import Sam3D

_SAM3D_MODULE = __name__.rsplit(".", 2)[0] + ".models.sam3d"


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
        mask_input: np.ndarray | None,
    ) -> np.ndarray:
        """Logits ``(n, n, n)`` (n = 32 or 128; a leading 1 is allowed) for the crop, as a NumPy
        array (or anything ``np.asarray`` reads, e.g. a CPU tensor).

        Args:
            embedding: what :meth:`encode` returned for this crop.
            points: ``(N, 3)`` float crop voxel indices (d0, d1, d2).
            labels: ``(N,)`` int, 1 positive, 0 negative.
            mask_input: the mask prompt: the previous logits this predictor returned for the
                crop, or, for the first click of a new crop, the segment's voxels already
                inside it as ``(32, 32, 32)`` logits (positive inside); None for none.
        """


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

    def encode(self, crop: Crop) -> np.ndarray:
        fraction, _ = resample(
            self.truth.array, self.truth.ijk_to_ras, crop.affine, crop.grid.shape
        )
        return fraction >= 0.5

    def decode(
        self,
        embedding: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray | None,
    ) -> np.ndarray:
        return np.where(embedding, self.confidence, -self.confidence).astype(np.float32)


def as_predictor(model_or_predictor: Sam3D | Predictor) -> Predictor:
    """Wrap a built model; pass any other predictor through."""
    # A Sam3D exists only once its module (and torch) is imported, so while it is not, this is no
    # Sam3D: a torch-free client never imports it. Once it is, importing it again costs nothing.
    if _SAM3D_MODULE in sys.modules:
        from ..models.sam3d import Sam3D
        from .model_predictor import ModelPredictor

        if isinstance(model_or_predictor, Sam3D):
            return ModelPredictor(model_or_predictor)
    if not isinstance(model_or_predictor, Predictor):
        raise TypeError(
            f"{type(model_or_predictor).__name__} is neither a Sam3D model nor a predictor "
            "with encode(crop) and decode(embedding, points, labels, mask_input)"
        )
    return model_or_predictor
