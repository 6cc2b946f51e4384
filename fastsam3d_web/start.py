"""Starting the page for one image: what ``fastsam3d web`` runs once its options are parsed.

:func:`serve_pages` is the launcher on the address users open: each tab gets a session process
of its own (:mod:`fastsam3d_web.launcher`), started as ``python -m fastsam3d_web.session PORT``
with these settings in its environment (:func:`session_environment`), which runs
:func:`serve_session`. Both serve until interrupted.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsam3d_core.io.dicomweb import PASSWORD_VARIABLE, TOKEN_VARIABLE, USER_VARIABLE

from .launcher import Launcher, serve, session_command
from .server import SESSION_IDLE_S, predictor_for, run
from .uploads import max_image_bytes

# The encoder service's address, from the launcher to its sessions: their command lines are
# public (ps), and an address may carry a user:password@ or a token.
SESSION_SERVER_ENV = "FASTSAM3D_SESSION_SERVER"
SERVICE_TOKEN_ENV = "FASTSAM3D_TOKEN"
# The rest of a session's settings, as JSON, from the launcher to its sessions.
SESSION_SETTINGS_ENV = "FASTSAM3D_WEB_SESSION_SETTINGS"
# The launcher's token when --require-token is given (else a new one is made).
PAGE_TOKEN_ENV = "FASTSAM3D_WEB_TOKEN"
# The DICOMweb credentials, from the launcher to its sessions: the variables the core reads.
DICOMWEB_CREDENTIAL_ENVS = (TOKEN_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE)
# How long the DICOMweb server may take to answer the check before the page starts.
CHECK_TIMEOUT_S = 30


@dataclass(frozen=True)
class PageSettings:
    """What every session of the page shows and runs.

    Attributes:
        image: the image (NRRD, NIfTI, MHA/MHD or DICOM); None: see ``image_url``, or with
            ``dicomweb`` the page starts without one.
        image_url: IMAGE when it is a DICOMweb series URL (instead of ``image``).
        dicomweb: the DICOMweb server whose series the page lists (its base URL).
        dicomweb_auth: the core's ``DicomwebAuth`` for it and for ``image_url``.
        model: ``fastsam3d``, ``sam-med3d-turbo``, or ``oracle`` (answers with ``truth``).
        weights: a local checkpoint (with ``server``: the decoder's); None: the cached one.
        server, token: the encoder service to encode on, and its token; None: encode here.
        truth, truth_value: with the oracle, the labels and the structure's value (None: any).
        adapter: an adapter file from ``fastsam3d finetune`` (with ``--text``: the page's
            "Segment by name" offers its names); None: none.
        focus: (R, A, S) mm to centre the slice views on.
        host: where the launcher and its sessions listen.
        idle_minutes: a session closes after this long without use (0: never).
    """

    image: Path | None = None
    model: str = "fastsam3d"
    weights: Path | None = None
    server: str | None = None
    token: str | None = None
    truth: Path | None = None
    truth_value: int | None = None
    focus: tuple[float, float, float] | None = None
    host: str = "127.0.0.1"
    idle_minutes: float = 30.0
    image_url: str | None = None
    dicomweb: str | None = None
    dicomweb_auth: Any = None
    adapter: Path | None = None


def check_inputs(image: Path) -> None:
    """Refuse in one line, before any server starts: an image that cannot be read, or a bad
    ``$FASTSAM3D_WEB_MAX_IMAGE_GB`` (the bound of uploads)."""
    from fastsam3d_core.io import read_volume

    read_volume(image)
    max_image_bytes()


def check_dicomweb(base: str, auth: Any) -> None:
    """Refuse in one line, before any server starts, a DICOMweb server that does not answer a
    search (QIDO-RS) with these credentials (the message names it, never the credentials)."""
    from fastsam3d_core.io.dicomweb import search_series

    search_series(base, auth, limit=1, timeout_s=CHECK_TIMEOUT_S)


def serve_session(settings: PageSettings, port: int) -> None:
    """One tab's page on ``port``, as the launcher starts it (:mod:`fastsam3d_web.session`)."""
    predictor = predictor_for(settings.model, settings.weights, settings.server, settings.token,
                              settings.truth, settings.truth_value, settings.adapter)  # fmt: skip
    idle = settings.idle_minutes if settings.idle_minutes > 0 else None
    access = None
    if settings.dicomweb or settings.image_url:
        from .pacs import DicomwebAccess

        access = DicomwebAccess(settings.dicomweb, settings.dicomweb_auth)
    image = settings.image_url or settings.image
    run(image, predictor, settings.host, port, settings.focus, SESSION_IDLE_S, idle, access)


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
    launcher = Launcher(session_command(), settings.host, sessions, session_environment(settings))
    serve(launcher, settings.host, port, page_token)


def session_environment(settings: PageSettings) -> dict[str, str]:
    """The environment variables that carry ``settings`` to a session process: not its command
    line, which every user of the machine sees (``ps``), while an environment only its owner
    reads; the service's address and token each in a variable of their own. Paths absolute, as
    a session may start elsewhere. The DICOMweb credentials go in the variables that
    ``DicomwebAuth.from_options`` reads, all three (empty where not given: the launcher's own
    environment must not mix in another kind)."""
    fields = {  # the service's address and token apart, below
        "image": str(settings.image.resolve()) if settings.image else None,
        "image_url": settings.image_url,
        "dicomweb": settings.dicomweb,
        "model": settings.model,
        "weights": str(settings.weights.resolve()) if settings.weights else None,
        "truth": str(settings.truth.resolve()) if settings.truth else None,
        "adapter": str(settings.adapter.resolve()) if settings.adapter else None,
        "truth_value": settings.truth_value,
        "focus": list(settings.focus) if settings.focus else None,
        "host": settings.host,
        "idle_minutes": settings.idle_minutes,
    }
    environment = {SESSION_SETTINGS_ENV: json.dumps(fields)}
    if settings.server is not None:
        environment[SESSION_SERVER_ENV] = settings.server
    if settings.token is not None:
        environment[SERVICE_TOKEN_ENV] = settings.token
    if settings.dicomweb_auth is not None:
        auth = settings.dicomweb_auth
        for name, value in zip(DICOMWEB_CREDENTIAL_ENVS, (auth.token, auth.user, auth.password)):
            environment[name] = value or ""
    return environment


def settings_from_environment(environment: Mapping[str, str]) -> PageSettings:
    """The settings :func:`session_environment` wrote.

    Raises:
        ValueError: the settings are missing (not started by the launcher) or malformed.
    """
    text = environment.get(SESSION_SETTINGS_ENV)
    if not text:
        raise ValueError(f"${SESSION_SETTINGS_ENV} is not set: sessions are started by "
                         "`fastsam3d web`")  # fmt: skip
    try:
        fields = json.loads(text)
        optional_path = {name: Path(fields[name]) if fields[name] else None
                         for name in ("weights", "truth", "adapter") if name in fields}  # fmt: skip
        urls = {name: fields[name] or None for name in ("image_url", "dicomweb")}
        return PageSettings(
            image=Path(fields["image"]) if fields["image"] else None,
            model=str(fields["model"]),
            server=environment.get(SESSION_SERVER_ENV) or None,
            token=environment.get(SERVICE_TOKEN_ENV) or None,
            truth_value=None if fields["truth_value"] is None else int(fields["truth_value"]),
            focus=tuple(float(v) for v in fields["focus"]) if fields["focus"] else None,
            host=str(fields["host"]),
            idle_minutes=float(fields["idle_minutes"]),
            dicomweb_auth=_dicomweb_auth(environment) if any(urls.values()) else None,
            **optional_path,
            **urls,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"${SESSION_SETTINGS_ENV} is malformed ({error!r})") from None


def _dicomweb_auth(environment: Mapping[str, str]) -> Any:
    """The DICOMweb credentials :func:`session_environment` wrote."""
    from fastsam3d_core.io.dicomweb import DicomwebAuth

    token, user, password = (environment.get(name) or None for name in DICOMWEB_CREDENTIAL_ENVS)
    return DicomwebAuth(token, user, password)
