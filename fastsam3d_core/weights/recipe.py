"""The model recipe: the one way to turn a model's name and files into a model ready to segment.

The command line, the encoder service, the Slicer engine and training all load through it::

    loaded = ModelRecipe("fastsam3d", weights="FastSAM3D.pth", precision="auto").load()
    loaded.model      # Sam3D on its device: weights (and adapters) loaded, encoder in its precision
    loaded.identity   # what the encoder service serves: the checkpoint's SHA-256 (+ adapters')

:meth:`ModelRecipe.load` takes these steps in order, each with its own error type, so a front
end can tell the user which of its settings to change:

1. check, reading no file: an unknown model (``ValueError``), device (:class:`DeviceError`) or
   precision (:class:`PrecisionError`);
2. weights: the local file, else the cached download, fetched when missing
   (:class:`WeightsError` and its kinds);
3. build on the device and load the checkpoint (:class:`CheckpointError`;
   :class:`IncompleteCheckpointError` when parts stay random, e.g. an encoder-only file);
4. adapters, if any (:class:`AdapterFileError`);
5. the encoder's precision: ``auto`` is chosen here, by its agreement check on the loaded
   weights (:mod:`fastsam3d_core.models.precision_choice`), and applied. Never later: the first
   encode runs the encoder and nothing else.

All errors but the weights' are ``ValueError``; a GPU without the memory raises torch's
out-of-memory error (the Slicer engine retries on the CPU).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from ..models.build import MODEL_REGISTRY, DeviceError, build_model, resolve_device
from ..models.precision import PrecisionChoice, PrecisionError, check_precision
from ..models.precision_choice import choose_precision
from ..models.sam3d import Sam3D
from .adapter_file import AdapterFileError, load_adapter
from .checkpoint import CheckpointError, IncompleteCheckpointError, load_checkpoint
from .download import ProgressCallback, resolve_weights, sha256_of_file

__all__ = [
    "AdapterFileError",
    "CheckpointError",
    "DeviceError",
    "IncompleteCheckpointError",
    "LoadedModel",
    "ModelRecipe",
    "PrecisionError",
]


@dataclass(frozen=True)
class ModelRecipe:
    """What to load: a registered model, its weights and adapters, where and in what precision.

    Attributes:
        model: a name of :data:`~fastsam3d_core.models.MODEL_REGISTRY` (``"fastsam3d"``,
            ``"sam-med3d-turbo"``).
        weights: a local checkpoint file; None for the released weights (cached download).
        adapter: an adapter file (``fastsam3d finetune``) for these weights; None for none.
        device: a torch device or its name; ``"auto"`` picks CUDA, then MPS, then the CPU.
        precision: the image encoder's precision (:mod:`fastsam3d_core.models.precision`):
            ``"float32"`` (the released models' arithmetic), ``"auto"``, ``"bfloat16"``,
            ``"float16"`` or ``"int8"``.
    """

    model: str
    weights: str | os.PathLike | None = None
    adapter: str | os.PathLike | None = None
    device: str | torch.device | None = "auto"
    precision: str = "float32"

    def check(self) -> torch.device:
        """Refuse what cannot load, before any file is read or fetched; return the device.

        Raises:
            ValueError: an unknown model.
            DeviceError: a device that this machine does not have.
            PrecisionError: an unknown precision, or one the device cannot run.
        """
        if self.model not in MODEL_REGISTRY:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(MODEL_REGISTRY)}")
        device = resolve_device(self.device)
        check_precision(self.precision, device)
        return device

    def with_weights(
        self,
        progress: ProgressCallback | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> ModelRecipe:
        """This recipe with :attr:`weights` found: the local file, else the cached download
        (fetched when missing, reporting ``progress``; ``notice`` hears of a cached copy that
        fails its checksum), and its device resolved. Checks the recipe first (:meth:`check`).

        Raises:
            WeightsError: the file is missing, or the download failed.
        """
        device = self.check()
        return replace(self, weights=self._weights_file(progress, notice), device=device)

    def loading_line(self) -> str:
        """What a front end says before it loads (the command line, training): ``loading
        fastsam3d from FILE on cpu ...``; on a recipe whose weights were found
        (:meth:`with_weights`)."""
        return f"loading {self.model} from {self.weights} on {self.device} ..."

    def load(
        self,
        progress: ProgressCallback | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> LoadedModel:
        """Load the model, ready to segment (see the module's docstring for the steps and their
        errors); ``progress`` and ``notice`` as in :meth:`with_weights`."""
        device = self.check()
        path = self._weights_file(progress, notice)
        # Parameters (and auto's trial copy) must not become inference tensors, even when the
        # caller loads inside inference mode: they could not be trained or converted later.
        with torch.inference_mode(False):
            model = build_model(self.model, device=device)
            load_checkpoint(model, path)
            try:
                model.check_weights_loaded()  # an encoder-only file leaves the decoder random
            except ValueError as error:
                raise IncompleteCheckpointError(f"{path}: {error}") from None
            adapter = load_adapter(model, self.adapter) if self.adapter is not None else None
            choice = choose_precision(model, self.precision)
            model.set_precision(choice.precision)
        return LoadedModel(model, replace(self, weights=path, device=device), choice, adapter)

    def _weights_file(
        self, progress: ProgressCallback | None, notice: Callable[[str], None] | None
    ) -> Path:
        return resolve_weights(
            self.model, weights_file=self.weights, progress=progress, notice=notice
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded by :meth:`ModelRecipe.load`.

    Attributes:
        model: the model, in eval mode, on ``recipe.device``.
        recipe: the recipe it was loaded from, with its weights file and device resolved.
        precision: the encoder's precision and why (``auto``'s choice says what it measured).
        adapter: the adapter file's description (``base``, ``config``, ``summary``), or None.
    """

    model: Sam3D
    recipe: ModelRecipe
    precision: PrecisionChoice
    adapter: dict[str, Any] | None = None

    @property
    def weights(self) -> Path:
        """The checkpoint file the weights came from."""
        return Path(self.recipe.weights or "")

    @cached_property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint file (read once, on first use: it takes a second for the
        larger model)."""
        return sha256_of_file(self.weights)

    @cached_property
    def identity(self) -> str:
        """What the model serves, as the encoder service announces it (``weights_sha256``): the
        checkpoint's SHA-256, or with adapters the SHA-256 of both files' hashes, so that
        clients decoding with the plain checkpoint's decoder are refused."""
        if self.recipe.adapter is None:
            return self.checkpoint_sha256
        adapter_sha256 = sha256_of_file(self.recipe.adapter)
        return hashlib.sha256(f"{self.checkpoint_sha256}+{adapter_sha256}".encode()).hexdigest()
