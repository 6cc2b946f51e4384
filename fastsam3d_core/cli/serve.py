"""``fastsam3d serve``: the encoder service on Ray Serve (see :mod:`fastsam3d_core.serving`)."""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .runtime import PrecisionOption, check_precision

# The token, out of sight of `ps` (which shows every process's command line to every user).
TOKEN_VARIABLE = "FASTSAM3D_SERVE_TOKEN"


def _replicas(replicas: int, autoscale: Optional[str]) -> Any:
    if autoscale is None:
        if replicas < 1:
            raise typer.BadParameter("at least 1", param_hint="--replicas")
        return replicas
    try:
        low, high = (int(n) for n in autoscale.split(","))
    except ValueError:
        low = high = -1
    if not 0 <= low <= high or high < 1:
        raise typer.BadParameter(
            f"{autoscale!r} is not MIN,MAX, e.g. 1,4", param_hint="--autoscale"
        )
    return {"min_replicas": low, "max_replicas": high}


# The options whose declarations are long, named here to keep serve() short.
_BodyTimeoutOption = Annotated[
    float,
    typer.Option(metavar="S", help="Longest an upload may take; a slower one gets 408 (HTTP)."),
]
_TokenOption = Annotated[
    Optional[str],
    typer.Option(
        metavar="TOKEN",
        envvar=[TOKEN_VARIABLE, "FASTSAM3D_TOKEN"],
        help=f"Required bearer token. On the command line every user of this machine sees "
        f"it (ps): prefer {TOKEN_VARIABLE} or --token-file.",
    ),
]
_TokenFileOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Read the bearer token from FILE (its first line)."),
]


def serve(
    model: Annotated[
        Optional[list[str]],
        typer.Option(metavar="NAME", help="Model to serve (repeatable); default fastsam3d."),
    ] = None,
    weights: Annotated[
        Optional[list[Path]],
        typer.Option(metavar="FILE", help="Checkpoint per --model, in order; default: the cache."),
    ] = None,
    adapter: Annotated[
        Optional[list[Path]],
        typer.Option(
            metavar="FILE", help="Adapter file per --model, in order (fastsam3d finetune)."
        ),
    ] = None,
    precision: PrecisionOption = "auto",
    address: Annotated[
        Optional[str],
        typer.Option(
            metavar="RAY",
            help="Join this Ray cluster (e.g. ray://head:10001); "
            "default: start Ray on this machine.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(metavar="N", help="Replicas (without --autoscale).")] = 1,
    autoscale: Annotated[
        Optional[str], typer.Option(metavar="MIN,MAX", help="Autoscale between MIN and MAX.")
    ] = None,
    gpus_per_replica: Annotated[
        float, typer.Option(metavar="F", help="GPUs per replica (0.5 shares one GPU by two).")
    ] = 0.0,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="Each replica's device.")] = "auto",
    max_batch_size: Annotated[int, typer.Option(metavar="N", help="Crops per batch.")] = 4,
    batch_wait_ms: Annotated[
        float, typer.Option(metavar="MS", help="Longest wait for a batch to fill.")
    ] = 10.0,
    body_timeout: _BodyTimeoutOption = 30.0,
    token: _TokenOption = None,
    token_file: _TokenFileOption = None,
) -> None:
    """Serve image embeddings to remote sessions (Ray Serve), until interrupted.

    Listens on 127.0.0.1 unless --host says otherwise; for access from other machines put it
    behind a reverse proxy with TLS (the README shows how) and set a token.
    """
    from ..serving.foreground import serve_until_stopped
    from ..serving.onnx_decoder import decoder_cache_dir
    from ..serving.service import ServiceOptions

    check_precision(precision)  # the device is the replica's: int8 on a GPU fails there
    if body_timeout <= 0:
        raise typer.BadParameter("must be more than 0 seconds", param_hint="--body-timeout")
    token = _token(token, token_file)
    paths, adapters = _model_files(model or ["fastsam3d"], weights, adapter)
    options = ServiceOptions(
        weights=paths,
        device=device,
        token=token,
        max_batch_size=max_batch_size,
        batch_wait_s=batch_wait_ms / 1000,
        decoder_dir=str(decoder_cache_dir()),
        adapters=adapters,
        precision=precision,
        body_timeout_s=body_timeout,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        typer.echo(
            f"warning: listening on {host} without a token: anyone who reaches the port can use "
            "the service; put it behind a TLS proxy and set a token",
            err=True,
        )
    scaling = _replicas(replicas, autoscale)
    serve_until_stopped(options, scaling, gpus_per_replica, host, port, address,
                        _started(options, address))  # fmt: skip


def _model_files(
    names: list[str], weights: Optional[list[Path]], adapter: Optional[list[Path]]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each model's checkpoint (given, else the cache's) and adapter file, as absolute paths."""
    from ..weights import resolve_weights

    files = list(weights or [])
    if files and len(files) != len(names):
        raise typer.BadParameter("give one --weights per --model, in the same order")
    paths = {
        name: str(resolve_weights(name, weights_file=files[i] if files else None).resolve())
        for i, name in enumerate(names)
    }
    adapters = list(adapter or [])
    if adapters and len(adapters) != len(names):
        raise typer.BadParameter("give one --adapter per --model, in the same order")
    for path in adapters:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--adapter")
    return paths, {name: str(path.resolve()) for name, path in zip(names, adapters)}


def _token(token: Optional[str], token_file: Optional[Path]) -> Optional[str]:
    """The token from --token (or its environment variables) or --token-file."""
    if token_file is None:
        return token or None
    try:
        lines = token_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not a text file"
        raise typer.BadParameter(f"{token_file}: {reason}", param_hint="--token-file") from None
    from_file = lines[0].strip() if lines else ""
    if not from_file:
        raise typer.BadParameter(
            f"{token_file}: its first line is empty; write the token there",
            param_hint="--token-file",
        )
    if token and token != from_file:
        raise typer.BadParameter(
            f"give one token: --token-file, --token or {TOKEN_VARIABLE}, not two that differ",
            param_hint="--token-file",
        )
    return from_file


def _started(options: Any, address: Optional[str]) -> Any:
    """What to print once the service answers at its URL."""

    def show(url: str) -> None:
        typer.echo(f"serving {', '.join(options.weights)} at {url}/v1 (Ctrl-C stops)")
        if address is not None:
            typer.echo(
                "note: the cluster's own Serve proxy answers /-/routes and /-/healthz without "
                "the token, and hands slow uploads to the replicas; see the README"
            )
        sys.stdout.flush()  # seen now, also by a process manager reading a pipe

    return show


def export_onnx(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE.onnx", help="The ONNX file to write.")
    ],
    model: Annotated[str, typer.Option(metavar="NAME", help="fastsam3d or sam-med3d-turbo.")] = (
        "fastsam3d"
    ),
    weights: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="Local checkpoint; default: the cached download."),
    ] = None,
) -> None:
    """Export the prompt encoder and mask decoder to ONNX, for clients without torch."""
    from ..io import check_output_path
    from ..serving.onnx_decoder import export_decoder
    from ..weights.recipe import ModelRecipe
    from .runtime import load_recipe

    check_output_path(output, inputs=(weights,))
    loaded = load_recipe(ModelRecipe(model, weights, device="cpu"))
    # The identity a service of these weights announces: its clients take this file.
    export_decoder(loaded.model, output, loaded.identity)
    typer.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")
