"""FastSAM3D core: checkpoint-exact 3-D Segment Anything models and their engine."""

from .models import MODEL_REGISTRY, Sam3D, build_model

__all__ = ["MODEL_REGISTRY", "Sam3D", "build_model"]
__version__ = "0.1.0"
