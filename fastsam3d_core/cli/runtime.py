"""Steps shared by commands: reading an image, choosing the device, loading a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    import torch

    from ..geometry import Volume
    from ..models.sam3d import Sam3D


# The encoder service's address and token, as `segment` and `web` take them.
ServerOption = Annotated[
    Optional[str],
    typer.Option(
        "--server",
        metavar="URL",
        help="Encode on this `fastsam3d serve` service (e.g. http://127.0.0.1:8000) and decode "
        "here, instead of loading the model.",
    ),
]
TokenOption = Annotated[
    Optional[str],
    typer.Option("--token", metavar="TOKEN", envvar="FASTSAM3D_TOKEN", help="The service's token."),
]


AdapterOption = Annotated[
    Optional[Path],
    typer.Option(
        "--adapter",
        metavar="FILE",
        help="Adapters from `fastsam3d finetune`, on the model they were trained from.",
    ),
]


def read_image(path: Path) -> Volume:
    """Read an image; a bad file raises the reader's one-line :class:`VolumeReadError`."""
    from ..io import read_volume

    typer.echo(f"reading {path} ...")
    return read_volume(path)


def resolve_device(device: str) -> torch.device:
    """The torch device that ``--device`` names (``auto``: the best one here)."""
    from ..models.build import resolve_device as resolve

    try:
        return resolve(device)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None


def load_model(
    name: str, weights: Optional[Path], device: torch.device, adapter: Optional[Path] = None
) -> Sam3D:
    """Build a registered model on a device and load its weights (local file or cache), and its
    adapters if ``adapter`` names a file.

    Raises:
        WeightsError, CheckpointError: the weights cannot be found, fetched or loaded.
    """
    from .. import build_model, load_checkpoint
    from ..models import MODEL_REGISTRY
    from ..weights import resolve_weights

    check_model_name(name, sorted(MODEL_REGISTRY))
    path = resolve_weights(name, weights_file=weights, progress=_progress(), notice=_note)
    typer.echo(f"loading {name} from {path} on {device} ...")
    model = build_model(name, device=device)
    load_checkpoint(model, path)
    try:
        model.check_weights_loaded()  # an encoder-only file leaves the decoder random
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if adapter is not None:
        from ..weights.adapter_file import load_adapter

        trained = load_adapter(model, adapter)["summary"]
        typer.echo(f"with adapters {adapter} (trained on {len(trained.get('cases', []))} case(s))")
    return model


def check_model_name(name: str, choices: list[str]) -> None:
    """Refuse an unknown ``--model`` as a usage error that repeats the name given."""
    if name not in choices:
        raise typer.BadParameter(
            f"{name!r}: choose from {', '.join(choices)}", param_hint="--model"
        )


def _note(message: str) -> None:
    typer.echo(f"note: {message}")


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
