"""Steps shared by commands: their shared options, choosing the device, loading a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    import torch

    from ..models.sam3d import Sam3D
    from ..weights.recipe import LoadedModel, ModelRecipe


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
    """The model that ``--model``, ``--weights``, ``--adapter`` and ``--precision`` name, loaded
    on ``device`` (see :func:`load_recipe`)."""
    from ..weights.recipe import ModelRecipe

    return load_recipe(ModelRecipe(name, weights, adapter, device, precision)).model


def load_recipe(recipe: ModelRecipe) -> LoadedModel:
    """Load a model by its recipe, saying what is loaded from where, with which adapters and
    in which precision; an unknown ``--model`` or ``--precision`` is a usage error, refused
    before the weights are fetched.

    Raises:
        WeightsError, CheckpointError: the weights cannot be found, fetched or loaded.
    """
    from ..models import MODEL_REGISTRY
    from ..models.build import DeviceError
    from ..models.precision import PrecisionError

    check_model_name(recipe.model, sorted(MODEL_REGISTRY))
    try:
        recipe.check()
    except PrecisionError as error:
        raise typer.BadParameter(str(error), param_hint="--precision") from None
    except DeviceError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
    recipe = recipe.with_weights(progress=_progress(), notice=_note)
    typer.echo(recipe.loading_line())
    loaded = recipe.load()
    if loaded.adapter is not None:
        cases = loaded.adapter["summary"].get("cases", [])
        typer.echo(f"with adapters {recipe.adapter} (trained on {len(cases)} case(s))")
    if recipe.precision != "float32":
        typer.echo(f"encoder precision: {loaded.precision.describe()}")
    return loaded


def check_precision(precision: str, device: Optional[torch.device] = None) -> None:
    """Refuse a ``--precision`` that does not exist, or does not run on ``device``, as a usage
    error."""
    import torch

    from ..models.precision import PrecisionError
    from ..models.precision import check_precision as check

    try:
        check(precision, device or torch.device("cpu"))
    except PrecisionError as error:
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
