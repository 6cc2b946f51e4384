"""Model parts of FastSAM3D and SAM-Med3D, one per file, and their builders."""

from .build import MODEL_REGISTRY, build_fastsam3d, build_model, build_sam_med3d_turbo
from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D
from .sam3d import Sam3D
from .transformer import TwoWayTransformer3D

__all__ = [
    "MODEL_REGISTRY",
    "ImageEncoderViT3D",
    "MaskDecoder3D",
    "PromptEncoder3D",
    "Sam3D",
    "TwoWayTransformer3D",
    "build_fastsam3d",
    "build_model",
    "build_sam_med3d_turbo",
]
