"""Safe checkpoint loading: the only place that calls ``torch.load``.

Accepted forms (model.md §2.2):
    * a raw state dict of the whole model (keys ``image_encoder.*``, ``prompt_encoder.*``,
      ``mask_decoder.*``), or of the image encoder alone (keys without ``image_encoder.``);
    * a training checkpoint holding such a dict under ``model_state_dict`` (``FastSAM3D.pth`` also
      pickles ``argparse.Namespace``, ``collections.Counter``, ``torch.device`` and optimizer and
      scheduler state, all of which are read as plain data);
    * any of these with keys prefixed ``module.`` (saved from a DataParallel wrapper).

Files are read with ``weights_only=True`` and a short allow-list of plain-data classes: a file that
would need anything else (a class or function that unpickling would call) is refused, so loading
never runs code from the file.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..io.errors import special_file_kind
from ..models.build import MODEL_REGISTRY, expected_state_shapes
from ..models.sam3d import Sam3D
from .formats import describe_start, is_checkpoint_start

# Plain-data classes found in the released training checkpoints besides tensors and containers.
SAFE_GLOBALS: list[Any] = [argparse.Namespace, collections.Counter, torch.device]
STATE_DICT_ENTRIES = ("model_state_dict", "state_dict")
PART_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
ENCODER_PREFIX = "image_encoder."
DATA_PARALLEL_PREFIX = "module."
_LISTED_KEYS = 8

StateDict = Mapping[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, or does not fit the model."""


class IncompleteCheckpointError(CheckpointError):
    """A checkpoint that loads but leaves parts of the model without trained weights (an
    encoder-only file on a fresh model)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_checkpoint` loaded.

    Attributes:
        layout: ``"full"`` (all three parts) or ``"encoder-only"``.
        tensors: number of state-dict entries loaded.
        extras: names of the other entries of a training checkpoint (epoch, optimizer, …), ignored.
    """

    layout: str
    tensors: int
    extras: tuple[str, ...]


def read_checkpoint_file(path: str | os.PathLike) -> object:
    """Unpickle a ``torch.save`` file without running code from it.

    Raises:
        CheckpointError: missing or unreadable file, or one that needs more than plain data.
    """
    if not os.path.isfile(path):
        kind = special_file_kind(path)  # a named pipe would block, /dev/zero never end
        if kind is not None:
            raise CheckpointError(f"{os.fspath(path)}: not a regular file but {kind}")
        raise CheckpointError(f"checkpoint file not found: {os.fspath(path)}")
    with open(path, "rb") as file:
        head = file.read(64)
    if not is_checkpoint_start(head):
        raise CheckpointError(
            f"{os.fspath(path)} is not a PyTorch checkpoint: {describe_start(head)}; download "
            "the weights again (in a browser if need be) and pass the .pth file"
        )
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the offending global on a line of its long message.
        named = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        reason = named[0] if named else "an object that is not plain data"
        raise CheckpointError(
            f"refused to load {os.fspath(path)}: it contains objects whose unpickling would run "
            f"code ({reason}). Only tensors and plain data are read; re-save the weights from a "
            f"trusted environment with torch.save(model.state_dict(), path)."
        ) from None
    except Exception as error:  # torch fails on non-checkpoints in many ways (IndexError, …)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{os.fspath(path)} is not a readable PyTorch checkpoint (a damaged or truncated "
            f"download, or another kind of file?): {reason}"
        ) from None


def extract_state_dict(checkpoint: object) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The model weights inside a checkpoint object, with any ``module.`` prefix removed.

    Returns:
        The state dict and the names of the checkpoint's other top-level entries.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"expected a dict of weights, found {type(checkpoint).__name__}")
    weights: Mapping = checkpoint
    extras: tuple[str, ...] = ()
    for entry in STATE_DICT_ENTRIES:
        if isinstance(checkpoint.get(entry), Mapping):
            extras = tuple(str(key) for key in checkpoint if key != entry)
            weights = checkpoint[entry]
            break
    not_tensors = [str(key) for key, value in weights.items() if not torch.is_tensor(value)]
    if not_tensors:
        raise CheckpointError(
            f"no model weights found: entries {_listed(not_tensors)} are not tensors and there "
            f"is no {' or '.join(STATE_DICT_ENTRIES)} entry"
        )
    state = {_strip_prefix(str(key)): value for key, value in weights.items()}
    return state, extras


def _strip_prefix(key: str) -> str:
    return key[len(DATA_PARALLEL_PREFIX) :] if key.startswith(DATA_PARALLEL_PREFIX) else key


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else "")


def _likely_architecture(shapes: dict[str, tuple[int, ...]], encoder_only: bool) -> str:
    for name in MODEL_REGISTRY:
        expected = expected_state_shapes(name)
        if encoder_only:
            expected = {
                key[len(ENCODER_PREFIX) :]: shape
                for key, shape in expected.items()
                if key.startswith(ENCODER_PREFIX)
            }
        if expected == shapes:
            return f"the file holds the {name!r} architecture: build that model instead"
    if not encoder_only and not any(key.startswith(ENCODER_PREFIX) for key in shapes):
        return "the file has no image encoder: load the encoder's weights as well"
    return "the file matches no registered architecture (a different or modified model?)"


def _check_fit(target: nn.Module, state: dict[str, torch.Tensor], encoder_only: bool) -> None:
    wanted = {key: tuple(value.shape) for key, value in target.state_dict().items()}
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    missing = [key for key in wanted if key not in shapes]
    unexpected = [key for key in shapes if key not in wanted]
    mismatched = [
        f"{key} {shapes[key]} != {wanted[key]}"
        for key in wanted
        if key in shapes and shapes[key] != wanted[key]
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", mismatched),
        )
        if keys
    ]
    raise CheckpointError(
        "checkpoint does not fit the model; "
        + "; ".join(problems)
        + f". Likely cause: {_likely_architecture(shapes, encoder_only)}"
    )


def load_checkpoint(
    model: Sam3D, path_or_mapping: str | os.PathLike | Mapping[str, object]
) -> LoadReport:
    """Load weights into a model built by :func:`fastsam3d_core.build_model`, strictly.

    An encoder-only checkpoint replaces only ``model.image_encoder``; the prompt encoder and mask
    decoder keep their weights, which must have been loaded before (part by part with their own
    ``load_state_dict``, e.g. the teacher's, as FastSAM3D's evaluation does): a model with a part
    never loaded is refused by the session (:meth:`Sam3D.check_weights_loaded`).

    Args:
        model: the model to fill.
        path_or_mapping: a file written by ``torch.save``, or an already loaded object.

    Raises:
        CheckpointError: unsafe or unreadable file, no weights in it, or weights that do not fit;
            the message names the missing, unexpected and mis-shaped keys and the likely cause.
    """
    if isinstance(path_or_mapping, Mapping):
        return _load_state(model, path_or_mapping)
    checkpoint = read_checkpoint_file(path_or_mapping)
    try:
        return _load_state(model, checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{os.fspath(path_or_mapping)}: {error}") from None


def _load_state(model: Sam3D, checkpoint: object) -> LoadReport:
    state, extras = extract_state_dict(checkpoint)
    encoder_only = not any(key.startswith(PART_PREFIXES) for key in state)
    _check_fit(model.image_encoder if encoder_only else model, state, encoder_only)
    _check_finite(state)
    if encoder_only:
        # Through the whole model, so that it records which parts now hold loaded weights.
        state = {ENCODER_PREFIX + key: value for key, value in state.items()}
    model.load_state_dict(state, strict=not encoder_only)
    return LoadReport("encoder-only" if encoder_only else "full", len(state), extras)


def _check_finite(state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: every mask would come out empty, without a sign why."""
    broken = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if broken:
        raise CheckpointError(
            f"the checkpoint holds NaN or infinite weights in {_listed(broken)} (a damaged file "
            "or a diverged training run); use another copy of the weights"
        )
