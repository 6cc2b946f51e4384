"""Adapter files: a fine-tuned model's adapters, small and self-describing.

A file holds the adapters' weights, their :class:`~fastsam3d_core.models.adapter.AdapterConfig`,
the base model's name and the SHA-256 of its frozen weights (and of its checkpoint file when
known), and a training summary. Loading checks the base: adapters trained on other weights are
refused instead of silently degrading the masks.

A file trained with ``fastsam3d finetune --text`` also holds the text path (its weights with the
adapters', its configuration under ``text.config``), the identity of the text encoder it was
trained with and the embedding bank of its training names and synonyms
(:class:`~.text_bank.TextBank`, under ``text``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io._atomic import write_atomically
from ..models.adapter import AdapterConfig, adapter_state, attach_adapters, base_state
from ..models.text_reference import (
    NoTextPath,
    TextReferenceConfig,
    attach_text_reference,
)
from .checkpoint import CheckpointError, read_checkpoint_file
from .text_bank import TextBank, TextNotKnown, text_key

__all__ = [
    "ADAPTER_FORMAT",
    "AdapterFileError",
    "AdapterMismatchError",
    "NoTextPath",
    "TextBank",
    "TextNotKnown",
    "load_adapter",
    "read_adapter",
    "read_text_bank",
    "save_adapter",
    "text_key",
    "weights_sha256",
]

ADAPTER_FORMAT = "fastsam3d-adapter"
ADAPTER_VERSION = 1


class AdapterFileError(CheckpointError):
    """An adapter file that cannot be read, is not one, or does not fit the model."""


class AdapterMismatchError(AdapterFileError):
    """An adapter file made for another model or other base weights."""


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's own weights (adapters excluded): keys, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key, tensor in base_state(model).items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def save_adapter(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    checkpoint_sha256: str | None = None,
    summary: dict[str, Any] | None = None,
    text_bank: TextBank | None = None,
) -> None:
    """Write the model's adapters to ``path`` (atomically: never a partial file).

    Args:
        text_bank: with a text path: the text encoder's identity and the embeddings of the
            training names and synonyms.

    Raises:
        ValueError: the model has no adapters, or a text path without ``text_bank``.
    """
    config = getattr(model, "adapter_config", None)
    if config is None:
        raise ValueError("the model has no adapters to save (attach_adapters first)")
    reference = getattr(model, "text_reference", None)
    if (reference is None) != (text_bank is None):
        raise ValueError("a text path is saved with its text bank, and a text bank with a path")
    content = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "base": {
            "model": getattr(model, "name", ""),
            "weights_sha256": weights_sha256(model),
            "checkpoint_sha256": checkpoint_sha256,
        },
        "config": config.to_dict(),
        "summary": summary or {},
        "state_dict": {k: v.detach().cpu().clone() for k, v in adapter_state(model).items()},
    }
    if reference is not None and text_bank is not None:
        content["text"] = {"config": reference.config.to_dict(), **text_bank.to_dict()}
    write_atomically(Path(path), ".pt", lambda temporary: torch.save(content, temporary))


def read_adapter(path: str | os.PathLike) -> dict[str, Any]:
    """An adapter file's content, checked to be one.

    Raises:
        AdapterFileError: not a readable file, or not an adapter file (e.g. a model checkpoint).
    """
    try:
        content = read_checkpoint_file(path)
    except CheckpointError as error:
        raise AdapterFileError(str(error)) from None
    if not isinstance(content, dict) or content.get("format") != ADAPTER_FORMAT:
        raise AdapterFileError(
            f"{os.fspath(path)} is not a FastSAM3D adapter file (fastsam3d finetune writes "
            "them); a model checkpoint goes to --weights"
        )
    if content.get("version") != ADAPTER_VERSION:
        raise AdapterFileError(
            f"{os.fspath(path)}: adapter format version {content.get('version')}, this "
            f"version of fastsam3d reads version {ADAPTER_VERSION}"
        )
    return content


def load_adapter(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Attach the adapters of ``path`` to ``model`` (its base weights loaded already).

    Returns:
        The file's description: ``base``, ``config`` and ``summary``.

    Raises:
        AdapterFileError: not an adapter file, or its keys do not fit the model.
        AdapterMismatchError: made for another model, or for other base weights.
    """
    content = read_adapter(path)
    base, name = content["base"], getattr(model, "name", "")
    if base.get("model") != name:
        raise AdapterMismatchError(
            f"{os.fspath(path)}: an adapter for {base.get('model')!r}, not for {name!r}; "
            f"use --model {base.get('model')}"
        )
    actual = weights_sha256(model)
    if base.get("weights_sha256") != actual:
        raise AdapterMismatchError(
            f"{os.fspath(path)}: trained on other {name} weights (SHA-256 "
            f"{str(base.get('weights_sha256'))[:12]}..., these are {actual[:12]}...); load the "
            "checkpoint it was trained on"
        )
    attach_adapters(model, AdapterConfig(**content["config"]))
    if "text" in content:
        attach_text_reference(model, TextReferenceConfig.from_dict(content["text"]["config"]))
    missing = set(adapter_state(model)) ^ set(content["state_dict"])
    # Files written before the text path centred its input: no centre, i.e. a zero one.
    missing.discard("text_reference.text_centre")
    if missing:
        raise AdapterFileError(f"{os.fspath(path)}: adapter keys do not fit: {sorted(missing)[:3]}")
    model.load_state_dict(content["state_dict"], strict=False)
    described = {key: content[key] for key in ("base", "config", "summary")}
    if "text" in content:
        bank = TextBank.from_dict(content["text"])
        described["text"] = {"identity": bank.identity, "names": bank.names}
    return described


def read_text_bank(source: str | os.PathLike | dict[str, Any]) -> TextBank:
    """The text bank of an adapter file (a path, or its content from :func:`read_adapter`).

    Raises:
        AdapterFileError: not an adapter file.
        NoTextPath: an adapter trained without ``--text`` (one line).
    """
    content = source if isinstance(source, dict) else read_adapter(source)
    if "text" not in content:
        where = "" if isinstance(source, dict) else f"{os.fspath(source)}: "
        raise NoTextPath(
            f"{where}an adapter without a text path (trained without --text): segmenting by "
            "text needs one trained with 'fastsam3d finetune --text'"
        )
    return TextBank.from_dict(content["text"])
