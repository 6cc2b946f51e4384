"""``fastsam3d monailabel``: MONAI Label's server with the FastSAM3D app (see
:mod:`fastsam3d_monailabel` and docs/monailabel.md).

The command checks what it can before the server starts (the models, devices and precisions,
and loads the weights once, downloading the released ones into the cache), writes the app folder,
then becomes MONAI Label's ``start_server --app FOLDER --studies URL --conf ...`` (through
:mod:`fastsam3d_monailabel.launch`), so that MONAI Label's logs and signals are as its users
know them.
"""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .runtime import AdapterOption, PrecisionOption, check_model_name

StudiesOption = Annotated[
    str,
    typer.Option(
        "--studies",
        metavar="URL",
        help="The images: a DICOMweb server (e.g. http://HOST:8042/dicom-web) or a folder.",
    ),
]
ModelsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--model", "-m", metavar="NAME",
        help="Model to serve (repeatable): fastsam3d, sam-med3d-turbo. Default: fastsam3d.",
    ),  # fmt: skip
]
AppDirOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="DIR",
        help="The app folder MONAI Label runs (its logs go there); default: per-user data.",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Check, write the app folder, print the server's command; no start."
    ),
]


def monailabel(
    studies: StudiesOption,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 serves other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    model: ModelsOption = None,
    weights: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="Local checkpoint (one --model); default: released."),
    ] = None,
    adapter: AdapterOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    precision: PrecisionOption = "float32",
    labels: Annotated[
        Optional[str],
        typer.Option(metavar="A,B,...", help="Structure names offered to clients (OHIF's list)."),
    ] = None,
    sessions: Annotated[int, typer.Option(help="Images held at once.")] = 4,
    session_minutes: Annotated[
        float, typer.Option(help="Minutes an idle image's session is kept.")
    ] = 30.0,
    app_dir: AppDirOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Serve FastSAM3D through MONAI Label: OHIF and Slicer's MONAILabel module as clients."""
    from fastsam3d_monailabel import default_app_folder, prepare_app_folder
    from fastsam3d_monailabel.launch import install_hint
    from fastsam3d_monailabel.settings import AppSettings

    from ..models import MODEL_REGISTRY

    if importlib.util.find_spec("monailabel") is None:
        raise ValueError(f"MONAI Label is not installed here; install it with: {install_hint()}")
    models = tuple(model or ("fastsam3d",))
    for name in models:
        check_model_name(name, sorted(MODEL_REGISTRY))
    if (weights or adapter) and len(models) > 1:
        raise typer.BadParameter(
            "--weights and --adapter are for one --model; start a server per model",
            param_hint="--weights",
        )
    settings = AppSettings.from_conf({
        "models": ",".join(models), "device": device, "precision": precision,
        "labels": labels or "", "sessions": str(sessions),
        "session_minutes": str(session_minutes),
    })  # fmt: skip
    settings = _with_loaded_weights(settings, weights, adapter)
    folder = prepare_app_folder(app_dir or default_app_folder())
    command = [sys.executable, "-m", "fastsam3d_monailabel.launch", "start_server",
               "--app", str(folder), "--studies", studies, "--host", host, "--port", str(port)]
    for key, value in settings.conf_pairs():
        command += ["--conf", key, value]
    if dry_run:
        typer.echo(shlex.join(command))
        return
    typer.echo(f"starting MONAI Label on http://{host}:{port} (OHIF: /ohif/) with "
               f"{', '.join(settings.models)} ...")  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _with_loaded_weights(settings, weights: Optional[Path], adapter: Optional[Path]):
    """The settings with each model's weights file found (the released ones downloaded when
    missing), every model loaded once so that a bad file is one line here, not a traceback in
    MONAI Label's log."""
    from dataclasses import replace

    from ..weights.recipe import ModelRecipe
    from .runtime import load_recipe

    found = []
    for name in settings.models:
        recipe = ModelRecipe(name, weights, adapter, settings.device, settings.precision)
        loaded = load_recipe(recipe)
        found.append((name, str(loaded.weights.resolve())))
        del loaded
    adapters = tuple((name, str(adapter.resolve())) for name in settings.models) if adapter else ()
    return replace(settings, weights=tuple(found), adapters=adapters)
