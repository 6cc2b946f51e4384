"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their interactive engine."""

from .geometry import Volume
from .models import MODEL_REGISTRY, Sam3D, build_model
from .session import Session
from .weights import CheckpointError, load_checkpoint

__all__ = [
    "MODEL_REGISTRY",
    "CheckpointError",
    "Sam3D",
    "Session",
    "Volume",
    "build_model",
    "load_checkpoint",
]
__version__ = "0.1.0"
