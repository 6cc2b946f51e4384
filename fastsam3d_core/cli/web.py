"""``fastsam3d web``: the browser front end (the ``web`` extra; see :mod:`fastsam3d_web`)."""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from pathlib import Path
from typing import Annotated, Optional

import typer

from .dicomweb_options import (
    DicomwebPasswordOption,
    DicomwebTokenOption,
    DicomwebUserOption,
    dicomweb_auth,
)
from .runtime import AdapterOption, ServerOption, TokenOption

# IMAGE is text, not a Path: a DICOMweb URL's "//" would not survive a Path.
ImageArgument = Annotated[
    Optional[str],
    typer.Argument(
        metavar="IMAGE",
        help="Image: NRRD, NIfTI, MHA/MHD, DICOM, or a DICOMweb series URL "
        "(http(s)://HOST/.../studies/UID/series/UID); optional with --dicomweb.",
        show_default=False,
    ),
]
DicomwebServerOption = Annotated[
    Optional[str],
    typer.Option(
        "--dicomweb",
        metavar="URL",
        help="A DICOMweb server (its base URL, e.g. http://HOST:8042/dicom-web) whose series "
        "the page lists to open, and where 'Save to PACS' stores their SEG.",
        show_default=False,
    ),
]


def web(
    image: ImageArgument = None,
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
    adapter: AdapterOption = None,
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
    dicomweb: DicomwebServerOption = None,
    dicomweb_token: DicomwebTokenOption = None,
    dicomweb_user: DicomwebUserOption = None,
    dicomweb_password: DicomwebPasswordOption = None,
) -> None:
    """Segment IMAGE in a web browser: click in the slice views, as in the Slicer module."""
    from .segment import example_point, parse_point

    try:
        from fastsam3d_web.start import PageSettings, serve_pages
    except ImportError as error:
        raise RuntimeError(
            f"the browser front end needs the web extra ({error.name} is missing): "
            "pip install -e '.[web]'"
        ) from None
    _check_options(model, truth, adapter, server, sessions, idle_minutes)
    if example and not focus:  # the views on the example's spleen
        focus = example_point()
    credentials = (dicomweb_token, dicomweb_user, dicomweb_password)
    images, auth = _checked_sources(image, example, dicomweb, credentials)
    point = parse_point(focus)[0] if focus else None
    settings = PageSettings(model=model, weights=weights, server=server, token=token,
                            truth=truth, truth_value=truth_value, focus=point, host=host,
                            adapter=adapter,
                            idle_minutes=idle_minutes, dicomweb=dicomweb, dicomweb_auth=auth,
                            image=images[0], image_url=images[1])  # fmt: skip
    serve_pages(settings, port, sessions, require_token)


def _check_options(
    model: str,
    truth: Optional[Path],
    adapter: Optional[Path],
    server: Optional[str],
    sessions: int,
    idle_minutes: float,
) -> None:
    """The options that go together, in one line each where they do not."""
    if (model == "oracle") != (truth is not None):
        raise typer.BadParameter("--truth goes with --model oracle, and only with it")
    if adapter is not None and (model == "oracle" or server is not None):
        raise typer.BadParameter("adapters run where the model runs: not with --model oracle "
                                 "or --server", param_hint="--adapter")  # fmt: skip
    if adapter is not None and not adapter.is_file():
        raise typer.BadParameter(f"{adapter}: no such file", param_hint="--adapter")
    if sessions < 1:
        raise typer.BadParameter("at least 1", param_hint="--sessions")
    if idle_minutes < 0:
        raise typer.BadParameter("0 (never) or more", param_hint="--idle-minutes")


def _checked_sources(
    image: Optional[str], example: bool, dicomweb: Optional[str], credentials: tuple
) -> tuple:
    """((IMAGE (or the example) as a path, IMAGE as a DICOMweb series URL), the DICOMweb
    credentials): one of the two or, with ``--dicomweb``, neither (the page starts empty, with
    the server's series to open); the credentials only where DICOMweb is used. Refused in one
    line, before any server starts: no IMAGE, an IMAGE that cannot be read or is not a series
    URL, a ``--dicomweb`` server that does not answer (or refuses the credentials)."""
    from fastsam3d_web.start import check_dicomweb, check_inputs

    from ..io.dicomweb import SeriesURL, is_dicomweb_url
    from .segment import image_or_example

    if image is not None or example or not dicomweb:
        image = str(image_or_example(image, example, "open"))
    images: tuple = (None, None)
    if image is not None and is_dicomweb_url(image):
        images = (None, str(SeriesURL.parse(image)))
    elif image is not None:
        check_inputs(Path(image))
        images = (Path(image), None)
    auth = dicomweb_auth(*credentials) if dicomweb or images[1] else None
    if dicomweb:
        check_dicomweb(dicomweb, auth)
    return images, auth
