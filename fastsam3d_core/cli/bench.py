"""``fastsam3d bench``: the benchmark suite of :mod:`fastsam3d_core.benchmark`."""

from __future__ import annotations

import json
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


def bench(
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", "-m", help="Model (repeatable); default both (quick: fastsam3d)."),
    ] = None,
    backend: Annotated[
        Optional[list[str]],
        typer.Option(help="Attention backend besides 'reference' (repeatable); default exact."),
    ] = None,
    device: Annotated[
        Optional[list[str]], typer.Option(help="Device (repeatable): cpu, cuda, mps, auto.")
    ] = None,
    dtype: Annotated[
        Optional[list[str]],
        typer.Option(help="float32, bfloat16 or float16 (autocast; repeatable); default float32."),
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (median).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: torch's).")] = None,
    volume: Annotated[str, typer.Option(help="Click-test volume shape, e.g. 512x512x300.")] = (
        "512x512x300"
    ),
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the encoder and decoder.")
    ] = False,
    int8: Annotated[
        bool, typer.Option(help="Also time int8 dynamic quantisation (CPU, Linear layers).")
    ] = False,
    flops: Annotated[bool, typer.Option(help="Count FLOPs (one extra run per part).")] = True,
    quick: Annotated[
        bool,
        typer.Option(help="CI-sized: fastsam3d, 1 repeat, a 96×96×64 volume, no FLOPs."),
    ] = False,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", "-o", help="Write the full report as JSON.")
    ] = None,
) -> None:
    """Time encoder, decoder and an end-to-end click against the reference path; JSON report."""
    from ..attention import BACKENDS
    from ..benchmark import DTYPES, BenchSettings, format_table, run_suite
    from ..io import check_output_path
    from ..io._atomic import write_atomically
    from .runtime import resolve_device

    _check_choices(dtype, DTYPES, "--dtype")
    _check_choices(backend, BACKENDS, "--backend")
    for name in device or []:
        resolve_device(name)
    if json_path is not None:
        check_output_path(json_path)
    settings = BenchSettings(
        backends=backend or ["exact"],
        devices=device or ["cpu"],
        dtypes=dtype or ["float32"],
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        volume_shape=_volume_shape(volume),
        compile=compile_model,
        int8=int8,
        flops=flops,
    )
    if quick:
        settings.make_quick()
    if model:
        settings.models = model
    report = run_suite(settings, echo=typer.echo)
    typer.echo(format_table(report))
    if json_path is not None:
        text = json.dumps(report, indent=2)
        write_atomically(json_path, ".json", lambda temporary: temporary.write_text(text))
        typer.echo(f"wrote {json_path}")
