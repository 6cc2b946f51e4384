"""Weights: the registry of released files, downloads into a cache, safe checkpoint loading."""

from .checkpoint import CheckpointError, LoadReport, load_checkpoint, read_checkpoint_file
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

__all__ = [
    "WEIGHTS",
    "CheckpointError",
    "ChecksumMismatchError",
    "LoadReport",
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
