"""``fastsam3d bench``: the benchmark suite of :mod:`fastsam3d_core.benchmark`."""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from pathlib import Path
from typing import Annotated, Optional

import typer


def _volume_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise typer.BadParameter(f"{text!r} is not I×J×K, e.g. 512x512x300", param_hint="--volume")
    return shape  # type: ignore[return-value]


def _check_choices(values: Optional[list[str]], choices: tuple[str, ...], hint: str) -> None:
    for value in values or []:
        if value not in choices:
            raise typer.BadParameter(f"{value!r}: choose from {choices}", param_hint=hint)


def _golden_dir(path: Path) -> Path:
    if not any(path.glob("*.manifest.json")):
        raise typer.BadParameter(
            f"{path}: no golden references (*.manifest.json)", param_hint="--golden"
        )
    return path


def _scan(text: str, golden: Optional[Path]) -> tuple[str, str, Optional[int]]:
    """``IMAGE,LABEL[,VALUE]`` as paths and a label value, both files checked."""
    parts = text.split(",")
    if golden is None:
        raise typer.BadParameter("needs --golden (its seeded weights)", param_hint="--scan")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
        raise typer.BadParameter(f"{text!r} is not IMAGE,LABEL[,VALUE]", param_hint="--scan")
    for path in parts[:2]:
        if not Path(path).is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--scan")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None


# The options whose declarations are long, named here to keep bench() short.
_ModelOption = Annotated[
    Optional[list[str]],
    typer.Option("--model", "-m", help="Model (repeatable); default both (quick: fastsam3d)."),
]
_BackendOption = Annotated[
    Optional[list[str]],
    typer.Option(help="Attention backend besides 'reference' (repeatable); default exact."),
]
_DeviceOption = Annotated[
    Optional[list[str]], typer.Option(help="Device (repeatable): cpu, cuda, mps, auto.")
]
_PrecisionOption = Annotated[
    Optional[list[str]],
    typer.Option(
        help="Encoder precision (repeatable): float32, bfloat16, float16, int8 (CPU); "
        "default float32. Other rows are compared with float32: speed and agreement."
    ),
]
_VolumeOption = Annotated[str, typer.Option(help="Click-test volume shape, e.g. 512x512x300.")]
_CompileOption = Annotated[
    bool, typer.Option("--compile", help="torch.compile the encoder and decoder.")
]
_QuickOption = Annotated[
    bool,
    typer.Option(help="CI-sized: fastsam3d, 1 repeat, a 96×96×64 volume, no FLOPs."),
]
_GoldenOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="DIR",
        help="Golden references: agreement also on their seeded weights and scenarios.",
    ),
]
_ScanOption = Annotated[
    Optional[list[str]],
    typer.Option(
        metavar="IMAGE,LABEL[,VALUE]",
        help="A scan and its label (repeatable): agreement also on clicks there (with "
        "--golden's seeded weights).",
    ),
]
_JsonOption = Annotated[
    Optional[Path], typer.Option("--json", "-o", help="Write the full report as JSON.")
]


def bench(
    model: _ModelOption = None,
    backend: _BackendOption = None,
    device: _DeviceOption = None,
    precision: _PrecisionOption = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (median).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: torch's).")] = None,
    volume: _VolumeOption = "512x512x300",
    compile_model: _CompileOption = False,
    flops: Annotated[bool, typer.Option(help="Count FLOPs (one extra run per part).")] = True,
    quick: _QuickOption = False,
    golden: _GoldenOption = None,
    scan: _ScanOption = None,
    json_path: _JsonOption = None,
) -> None:
    """Time encoder, decoder and an end-to-end click against the reference path; JSON report."""
    from ..attention import BACKENDS
    from ..benchmark import BENCH_PRECISIONS, BenchSettings, run_benchmark
    from .runtime import resolve_device

    _check_choices(precision, BENCH_PRECISIONS, "--precision")
    _check_choices(backend, BACKENDS, "--backend")
    for name in device or []:
        resolve_device(name)
    settings = BenchSettings(
        backends=backend or ["exact"],
        devices=device or ["cpu"],
        precisions=precision or ["float32"],
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        volume_shape=_volume_shape(volume),
        compile=compile_model,
        flops=flops,
        golden_dir=str(_golden_dir(golden)) if golden else None,
        scans=[_scan(text, golden) for text in scan or []],
    )
    if quick:
        settings.make_quick()
    if model:
        settings.models = model
    run_benchmark(settings, json_path, echo=typer.echo)
