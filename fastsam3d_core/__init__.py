"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their interactive engine.

The names below are imported on first use (PEP 562), so that ``import fastsam3d_core`` and the
torch-free parts (the encoder service's client, the weights downloader) do not import torch.

Every ``import fastsam3d_core.<module>`` runs this file first, so when imported it imports none of
its modules, not even for type checkers (``Testing/test_layers.py`` checks that importing it loads
none): an import here would put ``serving`` under ``geometry``. Its names are for users and the
front ends, the only importers the import contract in pyproject.toml allows; each is imported
from its home module on first use, by a plain import the contract sees. Code in the package
imports a name from its home module (``fastsam3d_core.session.Session``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

# Each public name and the module that defines it.
_HOMES = {
    "MODEL_REGISTRY": "models",
    "CheckpointError": "weights",
    "ModelRecipe": "weights",
    "RemotePredictor": "serving",
    "Sam3D": "models",
    "Session": "session",
    "Volume": "geometry",
    "build_model": "models",
    "load_checkpoint": "weights",
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
    value = getattr(_home_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def _home_module(home: str) -> ModuleType:
    # Plain imports, one per home, so that the import contract sees them (pyproject.toml).
    if home == "geometry":
        from . import geometry as module
    elif home == "models":
        from . import models as module
    elif home == "weights":
        from . import weights as module
    elif home == "session":
        from . import session as module
    elif home == "serving":
        from . import serving as module
    else:
        raise ValueError(f"no home module {home!r} in fastsam3d_core")
    return module
