"""Typer application. Commands import the library lazily so ``--help`` stays fast."""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from pathlib import Path
from typing import Annotated, Optional

import typer

from .bench import bench
from .evaluate import evaluate
from .monailabel import monailabel
from .segment import segment
from .serve import export_onnx, serve
from .train import distill, finetune
from .web import web
from .weights import weights_app

app = typer.Typer(
    help="FastSAM3D: interactive 3-D segmentation with FastSAM3D and SAM-Med3D-turbo.",
    no_args_is_help=True,
    add_completion=False,
)

ModelOption = Annotated[
    Optional[list[str]],
    typer.Option("--model", "-m", help="Model to check (repeatable); default: every model found."),
]
DeviceOption = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1, mps.")]


app.add_typer(weights_app, name="weights")
app.command("segment")(segment)
app.command("evaluate")(evaluate)
app.command("bench")(bench)
app.command("serve")(serve)
app.command("export-onnx")(export_onnx)
app.command("web")(web)
app.command("monailabel")(monailabel)
app.command("finetune")(finetune)
app.command("distill")(distill)


@app.callback()
def main() -> None:
    """FastSAM3D command line."""


@app.command()
def info() -> None:
    """Show the models, their sizes, and the compute devices and attention backends available."""
    import torch

    from .. import MODEL_REGISTRY, __version__
    from ..attention import BACKENDS, FLASH_ATTN_INSTALLED

    typer.echo(f"fastsam3d-core {__version__}, torch {torch.__version__}")
    for name, builder in MODEL_REGISTRY.items():
        with torch.device("meta"):
            model = builder()
        encoder = sum(p.numel() for p in model.image_encoder.parameters())
        total = sum(p.numel() for p in model.parameters())
        typer.echo(
            f"  model {name}: {total / 1e6:.2f} M parameters ({encoder / 1e6:.2f} M encoder)"
        )
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
    if torch.backends.mps.is_available():
        devices.append("mps")
    typer.echo(f"  devices: {', '.join(devices)}; CPU threads: {torch.get_num_threads()}")
    flash = "installed" if FLASH_ATTN_INSTALLED else "not installed"
    typer.echo(f"  attention backends: {', '.join(BACKENDS)} (flash-attn {flash})")


@app.command("check-golden")
def check_golden(
    directory: Annotated[
        Path, typer.Argument(help="Folder with <model>.manifest.json and <model>.npz.")
    ],
    model: ModelOption = None,
    device: DeviceOption = "cpu",
) -> None:
    """Reproduce the official models' reference outputs and report the largest relative error.

    Exits with status 1 if any array is outside the references' tolerance.
    """
    from .. import MODEL_REGISTRY
    from ..golden import GOLDEN_RTOL, GoldenReference

    names = model or [n for n in MODEL_REGISTRY if (directory / f"{n}.manifest.json").is_file()]
    if not names:
        raise typer.BadParameter(f"no golden manifests in {directory}", param_hint="DIRECTORY")
    failed = False
    for name in names:
        reference = GoldenReference.load(directory, name)
        typer.echo(f"{name}: building seeded weights and running on {device} ...")
        outputs = reference.run(reference.seeded_model(device))
        errors = reference.relative_errors(outputs)
        worst = max(errors, key=errors.__getitem__)
        mask_logit = reference.full_mask_disagreement(outputs)
        ok = errors[worst] <= GOLDEN_RTOL and mask_logit < 1e-4
        failed |= not ok
        typer.echo(
            f"  {len(errors)} arrays, worst {worst}: {errors[worst]:.2e} "
            f"(tolerance {GOLDEN_RTOL:g}); "
            f"128³ mask differs only where |logit| <= {mask_logit:.1e}: {'OK' if ok else 'FAILED'}"
        )
    raise typer.Exit(1 if failed else 0)
