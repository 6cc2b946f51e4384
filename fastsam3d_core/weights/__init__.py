"""Weights: the registry of released files, downloads into a cache, safe checkpoint loading,
and the model recipe (:class:`ModelRecipe`), the one way to load a model ready to segment.

Checkpoint loading and the recipe need torch and are imported on first use; downloads and the
registry do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .download import (
    ChecksumMismatchError,
    Verification,
    WeightsDownloadError,
    WeightsError,
    cached_weights_path,
    default_cache_dir,
    download_weights,
    resolve_weights,
    verify_weights,
)
from .registry import WEIGHTS, WeightsEntry, get_weights_entry

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, LoadReport, load_checkpoint, read_checkpoint_file
    from .recipe import LoadedModel, ModelRecipe

# Names imported on first use (torch), by module.
_CHECKPOINT_NAMES = ("CheckpointError", "LoadReport", "load_checkpoint", "read_checkpoint_file")
_RECIPE_NAMES = ("LoadedModel", "ModelRecipe")

__all__ = [
    "WEIGHTS",
    "CheckpointError",
    "ChecksumMismatchError",
    "LoadReport",
    "LoadedModel",
    "ModelRecipe",
    "Verification",
    "WeightsDownloadError",
    "WeightsEntry",
    "WeightsError",
    "cached_weights_path",
    "default_cache_dir",
    "download_weights",
    "get_weights_entry",
    "load_checkpoint",
    "read_checkpoint_file",
    "resolve_weights",
    "verify_weights",
]


def __getattr__(name: str) -> Any:
    # Plain imports, so that the import contract sees them (pyproject.toml).
    if name in _CHECKPOINT_NAMES:
        from . import checkpoint as home
    elif name in _RECIPE_NAMES:
        from . import recipe as home
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value
