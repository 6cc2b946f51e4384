"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their interactive engine.

The names below are imported on first use (PEP 562), so that ``import fastsam3d_core`` and the
torch-free parts (the encoder service's client, the weights downloader) do not import torch.

Every ``import fastsam3d_core.<module>`` runs this file first, so it sits below every layer and
imports none of them, not even for type checkers (the import contract in pyproject.toml checks
it): a static import here would put ``serving`` under ``geometry``. Code in the package imports a
name from its home module (``fastsam3d_core.session.Session``); these names are for users and
the front ends.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it.
_HOMES = {
    "MODEL_REGISTRY": ".models",
    "CheckpointError": ".weights",
    "ModelRecipe": ".weights",
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
    "ModelRecipe",
    "RemotePredictor",
    "Sam3D",
    "Session",
    "Volume",
    "build_model",
    "load_checkpoint",
]
# The one place the version is written: pyproject.toml, the client's and the Slicer module's
# installer read it from here.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value
