"""``fastsam3d web``: the browser front end (the ``web`` extra; see :mod:`fastsam3d_web`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .runtime import ServerOption, TokenOption


def web(
    image: Annotated[
        Optional[Path],
        typer.Argument(metavar="IMAGE", help="Image: NRRD, NIfTI, MHA/MHD or DICOM."),
    ] = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            help="Open the example CT shipped with the package (instead of IMAGE), the views on "
            "its spleen.",
        ),
    ] = False,
    model: Annotated[
        str,
        typer.Option(metavar="NAME", help="fastsam3d, sam-med3d-turbo, or oracle (with --truth)."),
    ] = "fastsam3d",
    weights: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="Local checkpoint (or, with --server, the decoder's)."),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    truth: Annotated[
        Optional[Path],
        typer.Option(metavar="LABEL", help="With --model oracle: the labels it answers with."),
    ] = None,
    truth_value: Annotated[
        Optional[int],
        typer.Option(metavar="N", help="With --truth: the structure's label value (else any)."),
    ] = None,
    focus: Annotated[
        Optional[str],
        typer.Option(metavar="R,A,S", help="Centre the slice views on this point (RAS mm)."),
    ] = None,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="HTTP port.")] = 8080,
    sessions: Annotated[
        int, typer.Option(metavar="N", help="Browser tabs served at once, each its own scene.")
    ] = 4,
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token",
            help="Open only with a token: FASTSAM3D_WEB_TOKEN, or a new one; the address to "
            "open is printed with it.",
        ),
    ] = False,
    idle_minutes: Annotated[
        float,
        typer.Option(metavar="MIN", help="Close a session after this long without use (0: never)."),
    ] = 30.0,
) -> None:
    """Segment IMAGE in a web browser: click in the slice views, as in the Slicer module."""
    from .segment import example_point, image_or_example, parse_point

    try:
        from fastsam3d_web.start import PageSettings, check_inputs, serve_pages
    except ImportError as error:
        raise RuntimeError(
            f"the browser front end needs the web extra ({error.name} is missing): "
            "pip install -e '.[web]'"
        ) from None
    if (model == "oracle") != (truth is not None):
        raise typer.BadParameter("--truth goes with --model oracle, and only with it")
    image = image_or_example(image, example, "open")
    if example and not focus:  # the views on the example's spleen
        focus = example_point()
    check_inputs(image)  # a bad image is refused here, in one line, before the server starts
    point = parse_point(focus)[0] if focus else None
    settings = PageSettings(image=image, model=model, weights=weights, server=server, token=token,
                            truth=truth, truth_value=truth_value, focus=point, host=host,
                            idle_minutes=idle_minutes)  # fmt: skip
    if sessions < 1:
        raise typer.BadParameter("at least 1", param_hint="--sessions")
    if idle_minutes < 0:
        raise typer.BadParameter("0 (never) or more", param_hint="--idle-minutes")
    serve_pages(settings, port, sessions, require_token)

