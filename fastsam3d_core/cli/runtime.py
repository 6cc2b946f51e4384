"""Steps shared by commands: reading an image and loading a model, with clear messages."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..geometry import Volume
from ..models.sam3d import Sam3D


def read_image(path: Path) -> Volume:
    """Read an image or stop the command with the reader's message."""
    from ..io import VolumeReadError, read_volume

    typer.echo(f"reading {path} ...")
    try:
        return read_volume(path)
    except VolumeReadError as error:
        raise typer.BadParameter(str(error), param_hint="IMAGE") from None


def load_model(name: str, weights: Optional[Path], device: str) -> Sam3D:
    """Build a registered model on a device and load its weights (local file or cache)."""
    from .. import CheckpointError, build_model, load_checkpoint
    from ..models import MODEL_REGISTRY
    from ..weights import WeightsError, resolve_weights

    if name not in MODEL_REGISTRY:
        raise typer.BadParameter(f"choose from {sorted(MODEL_REGISTRY)}", param_hint="--model")
    try:
        path = resolve_weights(name, weights_file=weights, progress=_progress())
        typer.echo(f"loading {name} from {path} on {device} ...")
        model = build_model(name, device=device)
        load_checkpoint(model, path)
    except (WeightsError, CheckpointError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    return model


def _progress():
    """A download progress callback that prints whole percentages."""
    shown = {"percent": -1}

    def report(done: int, total: Optional[int]) -> None:
        if total:
            percent = int(100 * done / total)
            if percent != shown["percent"]:
                shown["percent"] = percent
                typer.echo(f"\rdownloading: {percent}%", nl=percent == 100)

    return report
