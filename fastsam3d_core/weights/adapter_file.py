"""Adapter files: a fine-tuned model's adapters, small and self-describing.

A file holds the adapters' weights, their :class:`~fastsam3d_core.models.adapter.AdapterConfig`,
the base model's name and the SHA-256 of its frozen weights (and of its checkpoint file when
known), and a training summary. Loading checks the base: adapters trained on other weights are
refused instead of silently degrading the masks.
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
from .checkpoint import CheckpointError, read_checkpoint_file

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
) -> None:
    """Write the model's adapters to ``path`` (atomically: never a partial file).

    Raises:
        ValueError: the model has no adapters.
    """
    config = getattr(model, "adapter_config", None)
    if config is None:
        raise ValueError("the model has no adapters to save (attach_adapters first)")
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
    missing = set(adapter_state(model)) ^ set(content["state_dict"])
    if missing:
        raise AdapterFileError(f"{os.fspath(path)}: adapter keys do not fit: {sorted(missing)[:3]}")
    model.load_state_dict(content["state_dict"], strict=False)
    return {key: content[key] for key in ("base", "config", "summary")}
