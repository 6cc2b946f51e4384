"""``fastsam3d web``: the browser front end (the ``web`` extra; see :mod:`fastsam3d_web`)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Optional

import typer

from .runtime import ServerOption, TokenOption

# The encoder service's address, from the launcher to its sessions: their command lines are
# public (ps), and an address may carry a user:password@ or a token.
SESSION_SERVER_ENV = "FASTSAM3D_SESSION_SERVER"


def web(
    image: Annotated[
        Path, typer.Argument(metavar="IMAGE", help="Image: NRRD, NIfTI, MHA/MHD or DICOM.")
    ],
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
    session: Annotated[bool, typer.Option("--session", hidden=True)] = False,
) -> None:
    """Segment IMAGE in a web browser: click in the slice views, as in the Slicer module."""
    from ..io import read_volume
    from .segment import parse_point

    try:
        from fastsam3d_web.launcher import Launcher, serve, session_command
        from fastsam3d_web.server import SESSION_IDLE_S, predictor_for, run
        from fastsam3d_web.uploads import max_image_bytes
    except ImportError as error:
        raise RuntimeError(
            f"the browser front end needs the web extra ({error.name} is missing): "
            "pip install -e '.[web]'"
        ) from None
    if (model == "oracle") != (truth is not None):
        raise typer.BadParameter("--truth goes with --model oracle, and only with it")
    read_volume(image)  # a bad image is refused here, in one line, before the server starts
    max_image_bytes()  # and a bad $FASTSAM3D_WEB_MAX_IMAGE_GB (the uploads' bound)
    point = parse_point(focus)[0] if focus else None
    if session:  # one tab's process, started by the launcher below
        server = server or os.environ.get(SESSION_SERVER_ENV)
        predictor = predictor_for(model, weights, server, token, truth, truth_value)
        idle = idle_minutes if idle_minutes > 0 else None
        run(image, predictor, host, port, point, SESSION_IDLE_S, idle)
        return
    if sessions < 1:
        raise typer.BadParameter("at least 1", param_hint="--sessions")
    if idle_minutes < 0:
        raise typer.BadParameter("0 (never) or more", param_hint="--idle-minutes")
    page_token = None
    if require_token:
        page_token = os.environ.get("FASTSAM3D_WEB_TOKEN") or secrets.token_urlsafe(16)
    options = {
        "--model": model,
        "--weights": weights,
        "--truth": truth,
        "--truth-value": truth_value,
        "--focus": focus,
        "--host": host,
        "--idle-minutes": idle_minutes,
    }
    # The token and the address to the sessions through their environment, not their command line.
    if token is not None:
        os.environ["FASTSAM3D_TOKEN"] = token
    if server is not None:
        os.environ[SESSION_SERVER_ENV] = server
    argv = ["web", str(image.resolve())]
    for name, value in options.items():
        if value is not None:
            argv += [name, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
    serve(Launcher(session_command(argv), host, sessions), host, port, page_token)
