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
    typer.Option(
        "--token",
        metavar="TOKEN",
        envvar="FASTSAM3D_TOKEN",
        help="The service's token. On the command line every user of this machine sees it (ps): "
        "prefer FASTSAM3D_TOKEN.",
    ),
]


AdapterOption = Annotated[
    Optional[Path],
    typer.Option(
        "--adapter",
        metavar="FILE",
        help="Adapters from `fastsam3d finetune`, on the model they were trained from.",
    ),
]


PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="PRECISION",
        help="The image encoder's arithmetic: auto (bfloat16 on a CPU with AMX or AVX-512-BF16 "
        "when its masks agree with float32's, else float32), float32, bfloat16, float16, or "
        "int8 (CPU; about 1% of mask voxels change).",
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
    name: str,
    weights: Optional[Path],
    device: torch.device,
    adapter: Optional[Path] = None,
    precision: str = "float32",
) -> Sam3D:
    """Build a registered model on a device and load its weights (local file or cache), and its
    adapters if ``adapter`` names a file; then put its encoder into ``precision``.

    Raises:
        WeightsError, CheckpointError: the weights cannot be found, fetched or loaded.
    """
    from .. import build_model, load_checkpoint
    from ..models import MODEL_REGISTRY
    from ..weights import resolve_weights

    check_model_name(name, sorted(MODEL_REGISTRY))
    check_precision(precision, device)
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
    if precision != "float32":
        typer.echo(f"encoder precision: {model.set_precision(precision).describe()}")
    return model


def check_precision(precision: str, device: Optional[torch.device] = None) -> None:
    """Refuse a ``--precision`` that does not exist, or does not run on ``device``, as a usage
    error."""
    import torch

    from ..models.precision import check_precision as check

    try:
        check(precision, device or torch.device("cpu"))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--precision") from None


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
