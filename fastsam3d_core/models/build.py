"""Builders for the released models and a registry from name to builder."""

from __future__ import annotations

from typing import Callable

import torch

from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder3D
from .precision import PrecisionError
from .prompt_encoder import PromptEncoder3D
from .sam3d import Sam3D
from .transformer import TwoWayTransformer3D

IMAGE_SIZE = 128
PATCH_SIZE = 16
PROMPT_DIM = 384


def _build_sam3d(
    name: str,
    *,
    encoder_depth: int,
    encoder_num_heads: int,
    skip_layer: int,
    window_size: int,
    global_attn_indexes: tuple[int, ...],
    normalise_stream: bool,
) -> Sam3D:
    grid = IMAGE_SIZE // PATCH_SIZE
    image_encoder = ImageEncoderViT3D(
        img_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        embed_dim=768,
        depth=encoder_depth,
        num_heads=encoder_num_heads,
        mlp_ratio=4.0,
        out_chans=PROMPT_DIM,
        skip_layer=skip_layer,
        window_size=window_size,
        global_attn_indexes=global_attn_indexes,
        normalise_stream=normalise_stream,
        norm_eps=1e-6,
    )
    prompt_encoder = PromptEncoder3D(
        embed_dim=PROMPT_DIM,
        image_embedding_size=(grid, grid, grid),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    transformer = TwoWayTransformer3D(
        depth=2, embedding_dim=PROMPT_DIM, num_heads=8, mlp_dim=2048, attention_downsample_rate=2
    )
    mask_decoder = MaskDecoder3D(
        transformer_dim=PROMPT_DIM,
        transformer=transformer,
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return Sam3D(image_encoder, prompt_encoder, mask_decoder, name=name).eval()


def build_fastsam3d() -> Sam3D:
    """FastSAM3D as released: 6 blocks (2 MLP-only + 4 global attention), 6 heads of 128,
    FastSAM3D's modified block (model.md §1.2)."""
    return _build_sam3d(
        "fastsam3d",
        encoder_depth=6,
        encoder_num_heads=6,
        skip_layer=2,
        window_size=0,
        global_attn_indexes=(),
        normalise_stream=True,
    )


def build_sam_med3d_turbo() -> Sam3D:
    """SAM-Med3D-turbo: 12 standard blocks, 12 heads of 64, 14³ windows except blocks 2, 5, 8, 11
    (model.md §1.3)."""
    return _build_sam3d(
        "sam-med3d-turbo",
        encoder_depth=12,
        encoder_num_heads=12,
        skip_layer=0,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        normalise_stream=False,
    )


MODEL_REGISTRY: dict[str, Callable[[], Sam3D]] = {
    "fastsam3d": build_fastsam3d,
    "sam-med3d-turbo": build_sam_med3d_turbo,
}


class DeviceError(ValueError):
    """A device name torch does not know, or a device this machine does not have."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device; ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    Raises:
        DeviceError: a name torch does not know, or a device that this machine does not have.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(
            f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N (N counts from 0) or mps"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {str(device)!r}: no CUDA device is available; use cpu")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: Apple MPS is not available on this machine")
    return resolved


def build_model(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    precision: str = "float32",
) -> Sam3D:
    """Build a registered model with freshly initialised weights, in eval mode.

    To load a released or fine-tuned model ready to segment (weights, adapters, the encoder's
    precision), use :class:`fastsam3d_core.weights.ModelRecipe` instead.

    Args:
        name: a key of :data:`MODEL_REGISTRY` (``"fastsam3d"`` or ``"sam-med3d-turbo"``).
        device: where to put it: a torch device, or ``"auto"`` (see :func:`resolve_device`);
            default CPU.
        dtype: parameter dtype of the whole model (training, tests); default float32.
        precision: only ``"float32"``, what a model is built in. Another precision is chosen
            once the weights are loaded (``auto`` checks them), so it is refused here with the
            way to ask for it.

    Raises:
        ValueError: an unknown name; :class:`DeviceError` (a ValueError) for a device this
            machine does not have; :class:`PrecisionError` (a ValueError) for a precision
            other than float32.
    """
    if precision != "float32":
        raise PrecisionError(
            f"build_model no longer takes precision={precision!r}: load the model with "
            f"ModelRecipe({name!r}, weights, precision={precision!r}).load(), or call "
            "model.set_precision(...) (not auto) once its weights are loaded"
        )
    try:
        builder = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_REGISTRY)}") from None
    model = builder()
    if device is not None or dtype is not None:
        model = model.to(device=resolve_device(device) if device else None, dtype=dtype)
    return model


def expected_state_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of a registered model, without allocating its weights."""
    with torch.device("meta"):
        model = MODEL_REGISTRY[name]()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
