"""``fastsam3d weights``: list, download and verify the released weights.

Commands import the library lazily so ``--help`` stays fast.
"""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

if TYPE_CHECKING:
    from ..weights.registry import WeightsEntry

weights_app = typer.Typer(
    help=(
        "List, download and verify the released model weights. The cache folder is "
        "FASTSAM3D_CACHE_DIR if set, else the per-user cache."
    ),
    no_args_is_help=True,
)

NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="Weights name, as shown by `fastsam3d weights list`.")
]
UNKNOWN_SHA256 = "unknown (recorded on first download)"


def _entry(name: str, param_hint: str = "NAME") -> "WeightsEntry":
    from ..weights.registry import get_weights_entry

    try:
        return get_weights_entry(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=param_hint) from None


@weights_app.command("list")
def list_weights() -> None:
    """Show every known weights file: size, licence, architecture, SHA-256 and cache state."""
    from ..weights.download import cached_weights_path, default_cache_dir, recorded_sha256
    from ..weights.registry import WEIGHTS

    typer.echo(f"cache: {default_cache_dir()}")
    for entry in WEIGHTS.values():
        path = cached_weights_path(entry)
        recorded = recorded_sha256(entry)
        if entry.sha256 is not None:
            sha256 = entry.sha256
        elif recorded is not None:
            sha256 = f"{recorded} (recorded on first download)"
        else:
            sha256 = UNKNOWN_SHA256
        typer.echo(f"{entry.name}: {entry.description}")
        typer.echo(f"  file: {entry.filename}, about {entry.size / 1e6:.0f} MB")
        typer.echo(f"  architecture: {entry.architecture}")
        typer.echo(f"  licence: {entry.licence}")
        typer.echo(f"  sha256: {sha256}")
        typer.echo(f"  cached: {'yes' if path.is_file() else 'no'} ({path})")


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, Optional[int]], None]]:
    """A download progress callback drawn with rich (a dependency of typer) on stderr.

    The bar appears with the first bytes, so a failed connection prints only its error.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    tasks: list[TaskID] = []

    def report(done: int, total: Optional[int]) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task(label, total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        yield report
    finally:
        bar.stop()


@weights_app.command("download")
def download(
    name: NameArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if a good copy is cached.")
    ] = False,
) -> None:
    """Download weights into the cache (resuming a partial download) and check their SHA-256.

    Prints the file's path and SHA-256. Exits with status 1 if the download fails.
    """
    from ..weights.download import (
        WeightsError,
        cached_weights_path,
        download_weights,
        recorded_sha256,
        recorded_sha256_path,
        verify_weights,
    )

    entry = _entry(name)
    path = cached_weights_path(entry)
    if path.is_file() and not force:
        check = verify_weights(entry, path)
        if check.ok is not False:
            typer.echo(f"already cached: {path}\nsha256: {check.sha256}")
            return
        typer.echo(f"the cached {path} fails its SHA-256 check; downloading again")
    typer.echo(f"downloading {entry.url}")
    try:
        with _progress_bar(entry.filename) as report:
            path = download_weights(entry, progress=report)
    except WeightsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    # download_weights has checked (or, with no published hash, recorded) the hash.
    typer.echo(f"saved: {path}\nsha256: {entry.sha256 or recorded_sha256(entry)}")
    if entry.sha256 is None:
        typer.echo(
            f"  (no published hash: recorded in {recorded_sha256_path(entry)}; "
            "later checks compare against it)"
        )


@weights_app.command("verify")
def verify(
    name: Annotated[
        Optional[str], typer.Argument(metavar="NAME", help="Weights name; checks the cached copy.")
    ] = None,
    file: Annotated[
        Optional[Path], typer.Option("--file", help="Check this file instead of the cached copy.")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Weights name the --file should hold.")
    ] = None,
) -> None:
    """Recompute a weights file's SHA-256 and compare it with the published or recorded one.

    Use `verify NAME` for the cached copy, or `verify --file PATH --model NAME`. Exits with status
    1 on a mismatch or a missing file, and 2 when no reference hash is known yet.
    """
    from ..weights.download import WeightsError, verify_weights

    if (name is None) == (model is None):
        raise typer.BadParameter("give either NAME or --model NAME (with --file)")
    entry = _entry(name or str(model), "NAME" if name else "--model")
    try:
        check = verify_weights(entry, file)
    except WeightsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{check.path}\n  sha256:   {check.sha256}")
    if check.ok is None:
        typer.echo(f"  expected: {UNKNOWN_SHA256}; nothing to compare with")
        raise typer.Exit(2)
    typer.echo(f"  expected: {check.expected} ({check.source})")
    typer.echo("  OK" if check.ok else "  MISMATCH")
    raise typer.Exit(0 if check.ok else 1)
