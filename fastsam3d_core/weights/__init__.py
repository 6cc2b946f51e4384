"""Checkpoints: safe reading, key normalisation and strict loading."""

from .checkpoint import CheckpointError, LoadReport, load_checkpoint, read_checkpoint_file

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_checkpoint_file"]
