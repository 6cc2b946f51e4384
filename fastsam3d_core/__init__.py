"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their interactive engine.

The names below are imported on first use (PEP 562), so that ``import fastsam3d_core`` and the
torch-free parts (the encoder service's client, the weights downloader) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .geometry import Volume
    from .models import MODEL_REGISTRY, Sam3D, build_model
    from .serving import RemotePredictor
    from .session import Session
    from .weights import CheckpointError, load_checkpoint

_HOMES = {
    "MODEL_REGISTRY": ".models",
    "CheckpointError": ".weights",
    "RemotePredictor": ".serving",
    "Sam3D": ".models",
    "Session": ".session",
    "Volume": ".geometry",
    "build_model": ".models",
    "load_checkpoint": ".weights",
}
__all__ = [
    "MODEL_REGISTRY",
    "CheckpointError",
    "RemotePredictor",
    "Sam3D",
    "Session",
    "Volume",
    "build_model",
    "load_checkpoint",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value
