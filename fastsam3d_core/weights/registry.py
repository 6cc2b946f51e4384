"""Where the released weights live: one frozen record per file, and a dict of them by name.

The registry holds no secrets: every file is public (Hugging Face, PyPI) and needs no token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WeightsEntry:
    """A downloadable weights file.

    Attributes:
        name: registry key, e.g. ``"fastsam3d"``.
        filename: file name in the cache directory.
        url: direct download address.
        size: size in bytes, as listed by the host (rounded) unless ``size_exact``. A download
            whose size is far from it is refused: a web page sent instead of the weights is small.
        sha256: lower-case hex SHA-256 of the file, or None when not known. ``fastsam3d`` has
            None because its hash was not known when this registry was written (Hugging Face
            could not be reached to measure the file). The first download that passes the size
            and file-format checks then records the hash in a sidecar file next to the cached
            weights, and later checks compare against that record.
        licence: the licence terms as far as they are known.
        architecture: the :data:`fastsam3d_core.MODEL_REGISTRY` name the weights fit.
        description: one line for listings.
        size_exact: whether ``size`` was measured on the file (then a download must match it).

    Raises:
        ValueError: a ``sha256`` that is not 64 lower-case hex digits.
    """

    name: str
    filename: str
    url: str
    size: int
    sha256: str | None
    licence: str
    architecture: str
    description: str
    size_exact: bool = False

    def __post_init__(self) -> None:
        if self.sha256 is not None and not _SHA256_HEX.fullmatch(self.sha256):
            raise ValueError(
                f"weights {self.name!r}: sha256 must be 64 lower-case hex digits, "
                f"got {self.sha256!r}"
            )


WEIGHTS: dict[str, WeightsEntry] = {
    "fastsam3d": WeightsEntry(
        name="fastsam3d",
        filename="FastSAM3D.pth",
        url="https://huggingface.co/techlove/FastSAM3D/resolve/main/FastSAM3D.pth",
        size=638_000_000,
        sha256=None,
        licence=(
            "code: Apache-2.0 (github.com/arcadelab/FastSAM3D); weights: see the model card at "
            "huggingface.co/techlove/FastSAM3D"
        ),
        architecture="fastsam3d",
        description="FastSAM3D distilled model; training checkpoint incl. optimizer state",
    ),
    "sam-med3d-turbo": WeightsEntry(
        name="sam-med3d-turbo",
        filename="sam_med3d_turbo.pth",
        url="https://huggingface.co/blueyo0/SAM-Med3D/resolve/main/sam_med3d_turbo.pth",
        size=402_000_000,
        sha256="899a46d04d3b70f723282ceb489149373558bf0aaba389a346f5ab57da5cdd3c",
        licence="Apache-2.0 (SAM-Med3D code licence, github.com/uni-medical/SAM-Med3D)",
        architecture="sam-med3d-turbo",
        description="SAM-Med3D-turbo (FastSAM3D's teacher); weights only",
    ),
    # RefSAM3D's text prompts (docs/text-prompts.md): the OpenCLIP ViT-B/32 text tower ...
    "clip-vit-b-32-laion2b": WeightsEntry(
        name="clip-vit-b-32-laion2b",
        filename="open_clip_model.safetensors",
        url=(
            "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/"
            "open_clip_model.safetensors"
        ),
        size=605_000_000,
        # Not found published where this registry was written (the Hugging Face file page
        # could not be read here): the first download records it, as for "fastsam3d".
        sha256=None,
        licence="MIT (model card at huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K)",
        architecture="clip-text-gelu",
        description=(
            "OpenCLIP ViT-B/32 LAION-2B (s34B b79K), whole CLIP in safetensors; the text "
            "tower (GELU MLP) is read, the image tower ignored"
        ),
    ),
    # ... and the BPE vocabulary of its tokenizer, as shipped inside OpenCLIP's wheel on PyPI
    # (the file of OpenAI's CLIP, MIT): the wheel is the download, the vocabulary is read out
    # of it without installing or importing open_clip (which needs torchvision).
    "clip-bpe-vocab": WeightsEntry(
        name="clip-bpe-vocab",
        filename="open_clip_torch-3.3.0-py3-none-any.whl",
        url=(
            "https://files.pythonhosted.org/packages/py3/o/open-clip-torch/"
            "open_clip_torch-3.3.0-py3-none-any.whl"
        ),
        size=1_547_268,
        sha256="c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce",
        licence="MIT (OpenCLIP; the vocabulary is OpenAI CLIP's, MIT)",
        architecture="clip-bpe-vocabulary",
        description=(
            "CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, 49,408 tokens) inside the "
            "open_clip_torch 3.3.0 wheel"
        ),
        size_exact=True,
    ),
}

# Architectures of the entries that are not a segmentation model (MODEL_REGISTRY): the CLIP
# text tower, named by the MLP activation its weights were trained with (OpenAI's weights:
# QuickGELU; OpenCLIP's LAION weights: GELU), and the tokenizer's vocabulary.
TEXT_ENCODER_ARCHITECTURES = {"clip-text-gelu": "gelu", "clip-text-quick-gelu": "quick_gelu"}
TOKENIZER_ARCHITECTURE = "clip-bpe-vocabulary"


def get_weights_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"unknown weights {name!r}; choose from {sorted(WEIGHTS)}") from None
