"""The local model as a :class:`~fastsam3d_core.session.Predictor`: torch, on the model's device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..geometry import Crop
from ..models.sam3d import Sam3D


class ModelPredictor:
    """Runs a :class:`Sam3D` under ``torch.inference_mode`` on the model's device.

    Raises:
        ValueError: a model with random weights in any part (see
            :meth:`Sam3D.check_weights_loaded`).
    """

    def __init__(self, model: Sam3D) -> None:
        model.check_weights_loaded()
        self.model = model

    @property
    def accepts_box_corners(self) -> bool:
        """Whether :meth:`decode` takes a box as its corners, labels 2 (low) and 3 (high): a
        model fine-tuned with ``fastsam3d finetune --prompts box``, its adapter file loaded."""
        return self.model.accepts_box_corners

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
        """Logits ``(32, 32, 32)`` float32 (see :meth:`Predictor.decode`)."""
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
        return logits[0, 0].float().cpu().numpy()
