"""A perfect "model" that segments by name: a labelmap and its structures' names.

Like :class:`~.predictor.OraclePredictor` it tests the geometry end to end without a model: here
that of a text prompt (crops tiled over the volume, composed into one segment) and of the clicks
that refine it. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..geometry import Crop, Volume, resample


class OracleTextPredictor:
    """Answers a text with the labelmap's voxels of the structure of that name, and a click
    with the voxels of the structure under its positive points.

    Args:
        labels: an integer labelmap on any grid (resampled by RAS position, nearest).
        names: each name it knows (compared without case) and its label value.
        confidence: magnitude of the returned logits (positive inside, negative outside).
    """

    def __init__(self, labels: Volume, names: Mapping[str, int], confidence: float = 10.0) -> None:
        self.labels = labels.with_array(np.asarray(labels.array, dtype=np.float32))
        self.names = {name.lower(): int(value) for name, value in names.items()}
        self.confidence = confidence

    @property
    def text_names(self) -> tuple[str, ...]:
        return tuple(self.names)

    def text_embedding(self, text: str) -> int:
        """The label value of the name (its "embedding").

        Raises:
            ValueError: a name it does not know (one line, listing those it does).
        """
        value = self.names.get(text.lower())
        if value is None:
            raise ValueError(
                f"{text!r} is not among the names this model knows ({', '.join(self.names)})"
            )
        return value

    def encode(self, crop: Crop) -> np.ndarray:
        """The labelmap in the crop's voxels, int ``(128, 128, 128)``."""
        values, _ = resample(
            self.labels.array, self.labels.ijk_to_ras, crop.affine, crop.grid.shape,
            mode="nearest",
        )  # fmt: skip
        return np.rint(values).astype(np.int32)

    def decode_text(self, embedding: np.ndarray, value: int, mask_input: Any) -> np.ndarray:
        return self._logits(embedding == value)

    def decode(
        self, embedding: np.ndarray, points: np.ndarray, labels: np.ndarray, mask_input: Any
    ) -> np.ndarray:
        """The structures under the positive points, less those under the negative ones; the
        mask prompt's own voxels where no point falls on a structure."""
        index = np.clip(np.rint(np.asarray(points)).astype(int), 0, embedding.shape[0] - 1)
        under = embedding[tuple(index.T)] if len(index) else np.zeros(0, int)
        positive = {int(v) for v, label in zip(under, labels) if label == 1 and v != 0}
        negative = {int(v) for v, label in zip(under, labels) if label == 0}
        chosen = sorted(positive - negative)
        return self._logits(np.isin(embedding, chosen))

    def _logits(self, inside: np.ndarray) -> np.ndarray:
        return np.where(inside, self.confidence, -self.confidence).astype(np.float32)
