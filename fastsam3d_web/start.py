"""Starting the page for one image: what ``fastsam3d web`` runs once its options are parsed.

:func:`serve_pages` is the launcher on the address users open: each tab gets a session process
of its own (:mod:`fastsam3d_web.launcher`), started as ``fastsam3d web … --session``, which runs
:func:`serve_session`. Both serve until interrupted.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .launcher import Launcher, serve, session_command
from .server import SESSION_IDLE_S, predictor_for, run
from .uploads import max_image_bytes

# The encoder service's address, from the launcher to its sessions: their command lines are
# public (ps), and an address may carry a user:password@ or a token.
SESSION_SERVER_ENV = "FASTSAM3D_SESSION_SERVER"
SERVICE_TOKEN_ENV = "FASTSAM3D_TOKEN"
# The launcher's token when --require-token is given (else a new one is made).
PAGE_TOKEN_ENV = "FASTSAM3D_WEB_TOKEN"


@dataclass(frozen=True)
class PageSettings:
    """What every session of the page shows and runs.

    Attributes:
        image: the image (NRRD, NIfTI, MHA/MHD or DICOM).
        model: ``fastsam3d``, ``sam-med3d-turbo``, or ``oracle`` (answers with ``truth``).
        weights: a local checkpoint (with ``server``: the decoder's); None: the cached one.
        server, token: the encoder service to encode on, and its token; None: encode here.
        truth, truth_value: with the oracle, the labels and the structure's value (None: any).
        focus: (R, A, S) mm to centre the slice views on.
        host: where the launcher and its sessions listen.
        idle_minutes: a session closes after this long without use (0: never).
    """

    image: Path
    model: str = "fastsam3d"
    weights: Path | None = None
    server: str | None = None
    token: str | None = None
    truth: Path | None = None
    truth_value: int | None = None
    focus: tuple[float, float, float] | None = None
    host: str = "127.0.0.1"
    idle_minutes: float = 30.0


def check_inputs(image: Path) -> None:
    """Refuse in one line, before any server starts: an image that cannot be read, or a bad
    ``$FASTSAM3D_WEB_MAX_IMAGE_GB`` (the bound of uploads)."""
    from fastsam3d_core.io import read_volume

    read_volume(image)
    max_image_bytes()


def serve_session(settings: PageSettings, port: int) -> None:
    """One tab's page on ``port``, as the launcher starts it: the service's address comes from
    the launcher through the environment when ``settings.server`` is not given."""
    server = settings.server or os.environ.get(SESSION_SERVER_ENV)
    predictor = predictor_for(settings.model, settings.weights, server, settings.token,
                              settings.truth, settings.truth_value)  # fmt: skip
    idle = settings.idle_minutes if settings.idle_minutes > 0 else None
    run(settings.image, predictor, settings.host, port, settings.focus, SESSION_IDLE_S, idle)


def serve_pages(
    settings: PageSettings, port: int, sessions: int, require_token: bool = False
) -> None:
    """The launcher on ``settings.host:port``: each tab that opens it gets a session of its own,
    at most ``sessions`` (1 or more) at once; with ``require_token``, only a tab that brings the
    token (``$FASTSAM3D_WEB_TOKEN``, else a new one; the address printed carries it).
    """
    page_token = None
    if require_token:
        page_token = os.environ.get(PAGE_TOKEN_ENV) or secrets.token_urlsafe(16)
    # The token and the address to the sessions through their environment, not their command line.
    if settings.token is not None:
        os.environ[SERVICE_TOKEN_ENV] = settings.token
    if settings.server is not None:
        os.environ[SESSION_SERVER_ENV] = settings.server
    command = session_command(session_arguments(settings))
    serve(Launcher(command, settings.host, sessions), settings.host, port, page_token)


def session_arguments(settings: PageSettings) -> list[str]:
    """``fastsam3d web`` arguments of a session of ``settings`` (``--session`` and its port are
    added by the launcher); paths absolute, as a session may start elsewhere."""
    focus = ",".join(repr(value) for value in settings.focus) if settings.focus else None
    options = {
        "--model": settings.model,
        "--weights": settings.weights,
        "--truth": settings.truth,
        "--truth-value": settings.truth_value,
        "--focus": focus,
        "--host": settings.host,
        "--idle-minutes": settings.idle_minutes,
    }
    argv = ["web", str(settings.image.resolve())]
    for name, value in options.items():
        if value is not None:
            argv += [name, str(Path(value).resolve()) if isinstance(value, Path) else str(value)]
    return argv
