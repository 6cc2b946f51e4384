"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their engine."""

from .models import MODEL_REGISTRY, Sam3D, build_model
from .weights import CheckpointError, load_checkpoint

__all__ = ["MODEL_REGISTRY", "CheckpointError", "Sam3D", "build_model", "load_checkpoint"]
__version__ = "0.1.0"
