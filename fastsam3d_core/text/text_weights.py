"""Loading CLIP text-tower weights safely, from the registry's cache or a local file.

Accepted files: safetensors (read by the safetensors library: tensors only), or a ``torch.save``
file read as our checkpoints are (``weights_only=True``, plain data only;
:func:`fastsam3d_core.weights.checkpoint.read_checkpoint_file`). TorchScript archives (OpenAI's
released ``ViT-B-32.pt``) are refused: loading one runs its code.

Accepted state dicts: OpenAI CLIP's and OpenCLIP's ``CLIP`` (text-tower keys at the top level:
``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.N.*``,
``ln_final.*``, ``text_projection``), OpenCLIP's ``CustomTextCLIP`` (the same under ``text.``),
either inside a ``state_dict`` / ``model_state_dict`` entry and with a ``module.`` prefix. The
image tower (``visual.*``), ``logit_scale`` and ``logit_bias`` are ignored.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch

from ..weights.checkpoint import CheckpointError, extract_state_dict, read_checkpoint_file
from ..weights.download import resolve_weights, sha256_of_file
from ..weights.formats import is_safetensors_start
from ..weights.registry import TEXT_ENCODER_ARCHITECTURES, WEIGHTS
from .clip_text import ClipTextConfig, ClipTextEncoder, seeded_text_encoder

DEFAULT_TEXT_MODEL = "clip-vit-b-32-laion2b"
TEXT_PREFIXES = ("", "text.")
_TOWER_ROOTS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
_LISTED = 6
_SEEDED = re.compile(r"seeded:(\d+)")


class TextModelError(CheckpointError):
    """A text model that cannot be found, read safely, or is not a CLIP ViT-B text tower."""


def text_model_names() -> list[str]:
    """Registry names of the text encoders."""
    return sorted(
        name for name, entry in WEIGHTS.items() if entry.architecture in TEXT_ENCODER_ARCHITECTURES
    )


def load_text_encoder(
    name_or_path: str | os.PathLike = DEFAULT_TEXT_MODEL,
    device: str | torch.device = "cpu",
    activation: str | None = None,
    download: bool = True,
    vocabulary: str | os.PathLike | None = None,
) -> ClipTextEncoder:
    """A CLIP text encoder with published weights, ready to :meth:`~ClipTextEncoder.embed`.

    Args:
        name_or_path: a registry name (:func:`text_model_names`), from the weights cache
            (downloaded when missing and ``download``), a local weights file, or
            ``"seeded:<n>"`` for :func:`~fastsam3d_core.text.seeded_text_encoder` (tests).
        device: where the encoder runs.
        activation: the MLP activation, ``"gelu"`` (OpenCLIP's LAION weights) or
            ``"quick_gelu"`` (OpenAI's weights); default: the registry entry's, and ``"gelu"``
            for a local file (the file does not say; give ``"quick_gelu"`` for OpenAI's).
        download: whether a registry file missing from the cache may be downloaded.
        vocabulary: CLIP's vocabulary file, as for :class:`~fastsam3d_core.text.ClipTokenizer`.

    Raises:
        TextModelError: unknown name, missing or unsafe file, or weights that are not a ViT-B
            CLIP text tower; one line.
        WeightsError: the registry file cannot be downloaded or verified.
    """
    name = os.fspath(name_or_path)
    seeded = _SEEDED.fullmatch(name)
    if seeded is not None:
        return seeded_text_encoder(int(seeded.group(1)), activation or "gelu", vocabulary, device)
    if name in WEIGHTS and WEIGHTS[name].architecture in TEXT_ENCODER_ARCHITECTURES:
        path = resolve_weights(name, download=download)
        activation = activation or TEXT_ENCODER_ARCHITECTURES[WEIGHTS[name].architecture]
    elif Path(name).expanduser().is_file():
        path = Path(name).expanduser()
    else:
        raise TextModelError(
            f"unknown text model {name!r}: neither a registered text model "
            f"({', '.join(text_model_names())}) nor an existing file"
        )
    state = read_text_tower(path)
    config = ClipTextConfig(activation=activation or "gelu")
    identity = {"name": name if name in WEIGHTS else path.name, "sha256": sha256_of_file(path)}
    with torch.device("meta"):  # no random initialisation: every entry comes from the file
        encoder = ClipTextEncoder(config, identity=identity)
    try:
        encoder.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:  # caught by read_text_tower's shape check; kept as a guard
        raise TextModelError(f"{path}: {str(error).splitlines()[0]}") from None
    if vocabulary is not None:
        from .tokenizer import ClipTokenizer

        encoder._tokenizer = ClipTokenizer(vocabulary)
    return encoder.to(device).eval()


def read_text_tower(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The text tower's state dict (float32, our names) from a weights file.

    Raises:
        TextModelError: unreadable or unsafe file, or not a ViT-B CLIP text tower.
    """
    try:
        state = text_tower_state(read_weights_file(path))
    except CheckpointError as error:
        message = str(error)
        named = message.startswith(os.fspath(path))
        raise TextModelError(message if named else f"{os.fspath(path)}: {message}") from None
    return state


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors or ``torch.save`` file, keys without ``module.``.

    Raises:
        CheckpointError: missing, unsafe or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise TextModelError(f"text model file not found: {path}")
    with open(path, "rb") as stream:
        head = stream.read(16)
    if is_safetensors_start(head):
        return _strip_module(_read_safetensors(path))
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        raise TextModelError(
            f"{path} is a TorchScript archive (as OpenAI's released CLIP .pt files are): "
            "loading it would run its code; use OpenCLIP's safetensors "
            f"({DEFAULT_TEXT_MODEL}) or a state dict saved with torch.save"
        )
    state, _extras = extract_state_dict(read_checkpoint_file(path))
    return state


def text_tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text-tower entries of a CLIP state dict, under our names, checked against ViT-B.

    Raises:
        TextModelError: no text tower, or one with missing, extra or mis-shaped entries.
    """
    prefix = next((p for p in TEXT_PREFIXES if p + "token_embedding.weight" in state), None)
    if prefix is None:
        sample = ", ".join(sorted(state)[:_LISTED])
        raise TextModelError(
            "not a CLIP text tower: no token_embedding.weight or text.token_embedding.weight "
            f"(keys: {sample or 'none'}); an image-model checkpoint or a Hugging Face "
            "transformers CLIP file (text_model.*) is not read"
        )
    tower = {
        key[len(prefix) :]: value
        for key, value in state.items()
        if key.startswith(prefix) and key[len(prefix) :].startswith(_TOWER_ROOTS)
    }
    if "text_projection.weight" in tower:  # OpenCLIP variants with a linear projection
        if "text_projection.bias" in tower:
            raise TextModelError("a text projection with a bias is not the ViT-B text tower")
        tower["text_projection"] = tower.pop("text_projection.weight").T
    tower.pop("attn_mask", None)
    _check_fit(tower)
    return {key: value.float() for key, value in tower.items()}


def _check_fit(tower: dict[str, torch.Tensor]) -> None:
    expected = {key: tuple(shape) for key, shape in _reference_shapes().items()}
    shapes = {key: tuple(value.shape) for key, value in tower.items()}
    problems = []
    for label, keys in (
        ("missing", [key for key in expected if key not in shapes]),
        ("unexpected", [key for key in shapes if key not in expected]),
        (
            "wrong shapes",
            [
                f"{k} {shapes[k]} != {expected[k]}"
                for k in expected
                if k in shapes and shapes[k] != expected[k]
            ],
        ),
    ):
        if keys:
            more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
            problems.append(f"{label}: {', '.join(keys[:_LISTED])}{more}")
    if problems:
        raise TextModelError(
            "not the ViT-B CLIP text tower (12 layers, width 512, 77 x 49408 tokens); "
            + "; ".join(problems)
        )
    broken = [key for key, value in tower.items() if not bool(torch.isfinite(value).all())]
    if broken:
        raise TextModelError(f"the text weights hold NaN or infinite values in {broken[0]}")


_SHAPES: dict[str, torch.Size] = {}


def _reference_shapes() -> dict[str, torch.Size]:
    """Shapes of the ViT-B text tower's entries (built once, on the meta device: no memory)."""
    if not _SHAPES:
        with torch.device("meta"):
            encoder = ClipTextEncoder(ClipTextConfig())
        _SHAPES.update({key: value.shape for key, value in encoder.state_dict().items()})
    return _SHAPES


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TextModelError(
            f"{path} is not a readable safetensors file (damaged or truncated?): {reason}"
        ) from None


def _is_torchscript(path: Path) -> bool:
    """Whether a zip is a TorchScript archive (it has compiled code, ``code/`` and
    ``constants.pkl``), which ``torch.load`` would hand to ``torch.jit.load``."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key[len("module.") :] if key.startswith("module.") else key: value
        for key, value in state.items()
    }
