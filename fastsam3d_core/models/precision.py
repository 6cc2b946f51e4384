"""The image encoder's numeric precision: one switch for the command line, Python and the GUI.

Only the image encoder changes precision: it holds nearly all of a model's arithmetic (a crop's
encoder run is 50–105 GFLOP against 1.5 GFLOP per click). The prompt encoder, the mask decoder and
the embedding between them stay float32, so clicks and masks are computed as before.

Precisions:
    ``float32``: the released models' own arithmetic (the golden references hold it to 1e-4).
    ``bfloat16`` / ``float16``: the encoder's weights are cast once, the tokens stay in that dtype
        from the patch embedding to the neck. The neck's 3×3×3 convolution and last LayerNorm stay
        float32: on an AVX-512-BF16 CPU the bfloat16 kernel for this 3-D convolution was slower
        than the float32 one, and it is 4.1 GFLOP (8 % of FastSAM3D's encoder, 4 % of
        SAM-Med3D-turbo's). On CPUs whose oneDNN computes bfloat16, linear layers use weights
        pre-packed once into oneDNN's blocked layout (models.common).
    ``int8``: dynamic quantisation of the linear layers of the encoder's MLPs (int8 weights with
        one scale per output channel, activations quantised per call); CPU only, opt-in. The
        attention's projections stay float32: quantised too, they moved the worst Dice against
        float32 (golden scenarios and three scans, FastSAM3D) from 0.992 to 0.989, below the
        0.99 bar, for 10 % more speed. One scale per tensor instead of per channel: 0.990 on
        the golden scenarios alone.
    ``auto``: ``bfloat16`` on a CPU with bfloat16 matrix units (AMX or AVX-512-BF16) when the
        model's bfloat16 masks agree with its float32 masks on a check crop (Dice >= 0.99), else
        ``float32``. On a GPU float32 (an encoder run takes milliseconds there; reduced
        precision is opt-in). ``auto`` is resolved once, when a model is loaded
        (:mod:`.precision_choice`, called by :class:`fastsam3d_core.weights.ModelRecipe`), never
        inside a click.

This module holds the table of precisions and the one check of a precision's name against a
device (:func:`check_precision`); it imports nothing above the models.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .image_encoder import ImageEncoderViT3D

PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16", "int8")
CAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class PrecisionError(ValueError):
    """A precision that does not exist, or does not run on the device asked for."""


@dataclass(frozen=True)
class CpuMatrixUnits:
    """The CPU's instructions for reduced-precision matrix products (Linux: from /proc/cpuinfo).

    Attributes:
        amx_bf16: Intel AMX tiles with bfloat16 (Sapphire Rapids and later).
        avx512_bf16: AVX-512 bfloat16 dot products (Cooper Lake, AMD Zen 4 and later).
        vnni: int8 dot products (AVX-512-VNNI or AVX-VNNI).
    """

    amx_bf16: bool = False
    avx512_bf16: bool = False
    vnni: bool = False

    @property
    def bfloat16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        names = [
            name
            for name, present in (
                ("AMX-BF16", self.amx_bf16),
                ("AVX-512-BF16", self.avx512_bf16),
                ("VNNI", self.vnni),
            )
            if present
        ]
        return ", ".join(names) or "none"


# CPU flags to use instead of the CPU's own, e.g. "amx_bf16 avx512_bf16": to try on one machine
# what `auto` does on another (tests, benchmarks), or "none" to keep float32 on any CPU.
CPU_FLAGS_VARIABLE = "FASTSAM3D_CPU_FLAGS"


@functools.cache
def cpu_matrix_units() -> CpuMatrixUnits:
    """What this CPU offers (or ``$FASTSAM3D_CPU_FLAGS`` says); none where the flags cannot be
    read (macOS, Windows)."""
    override = os.environ.get(CPU_FLAGS_VARIABLE)
    if override is not None:
        return matrix_units_from_cpuinfo(f"flags : {override}")
    if not sys.platform.startswith("linux"):
        return CpuMatrixUnits()
    try:
        return matrix_units_from_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return CpuMatrixUnits()


def matrix_units_from_cpuinfo(text: str) -> CpuMatrixUnits:
    """The units that the first ``flags`` line of a Linux ``/proc/cpuinfo`` lists."""
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                  if line.startswith("flags")), set())  # fmt: skip
    return CpuMatrixUnits(
        amx_bf16="amx_bf16" in flags,
        avx512_bf16="avx512_bf16" in flags,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni"}),
    )


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that does not exist or does not run on ``device``.

    Raises:
        PrecisionError: one line, naming the choices or the device that fits.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(
            f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}"
        )
    if precision == "int8" and device.type != "cpu":
        raise PrecisionError(f"int8 runs on the CPU only, not on {device.type}; use float16 there")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a model's encoder computes in, and why."""

    precision: str
    reason: str

    def describe(self) -> str:
        return f"{self.precision} ({self.reason})"


def convert_encoder(encoder: ImageEncoderViT3D, precision: str) -> None:
    """Put a float32 encoder into ``precision`` (not ``auto``), in place."""
    if precision in CAST_DTYPES:
        encoder.to(CAST_DTYPES[precision])
        for module in list(encoder.neck)[2:]:  # see the module docstring
            module.float()
    elif precision == "int8":
        with warnings.catch_warnings():
            # torch announces a move of quantisation to torchao; this API still works as is.
            warnings.filterwarnings("ignore", message=".*deprecated")
            try:
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
            except ImportError:
                raise PrecisionError(
                    f"int8 needs torch.ao.quantization, which torch {torch.__version__} lacks; "
                    "use bfloat16 or float32"
                ) from None
            for block in encoder.blocks:
                quantize_dynamic(
                    block.mlp, {nn.Linear: per_channel_dynamic_qconfig}, torch.qint8, inplace=True
                )
    elif precision != "float32":
        raise PrecisionError(f"cannot convert an encoder to {precision!r}")
