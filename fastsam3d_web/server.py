"""``fastsam3d web``: start the page's trame server for one image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .access import (
    SESSION_HOME_ENV,
    SESSION_SECRET_ENV,
    SESSION_SPARE_ENV,
    SPARE_TAKEN,
    origin_guard,
    session_guard,
)
from .timeline import mark


def predictor_for(
    model: str,
    weights: Path | None,
    server: str | None,
    token: str | None,
    truth: Path | None,
    truth_value: int | None = None,
    adapter: Path | None = None,
) -> Any:
    """What the page's logic runs: the oracle on ``truth``, the remote service, or a local
    model (as ``setModel`` arguments), with an adapter file (e.g. one with a text path)."""
    if model == "oracle":
        from fastsam3d_core.io import read_volume
        from fastsam3d_core.session import OraclePredictor

        if truth is None:
            raise ValueError("--model oracle needs --truth LABEL (the label it answers with)")
        return OraclePredictor(read_volume(truth), truth_value)
    if server is not None:
        return (model, "remote", str(weights) if weights else None, server, token)
    local = (model, "auto", str(weights) if weights else None, None, None)
    return local + (str(adapter),) if adapter is not None else local


# A session process stops once no tab has been connected for this long (a reload reconnects
# well within it), or when none connected this long after it started.
SESSION_IDLE_S = 60


def run(
    image: Path | str | None,
    predictor: Any,
    host: str,
    port: int,
    focus: tuple | None = None,
    idle_timeout_s: int | None = None,
    idle_minutes: float | None = None,
    dicomweb: Any = None,
) -> None:
    """Serve the page (one scene) until interrupted, ``idle_timeout_s`` without a tab, or
    ``idle_minutes`` without use. ``image``, ``dicomweb``: as
    :class:`~fastsam3d_web.app.SegmentationPage` takes them.

    Started by the launcher, the process finds its secret and the launcher's address in its
    environment (:mod:`fastsam3d_web.access`) and serves only the tab that brings the secret.
    """
    from trame.app import get_server

    from .app import SegmentationPage

    mark("session: trame and Slicer's libraries imported")
    server = get_server(client_type="vue3")
    home = os.environ.get(SESSION_HOME_ENV)
    # The model loads once the page shows its image (its first frame is out).
    page = SegmentationPage(server, image, predictor, focus, idle_minutes, home, dicomweb, True)
    mark("session: page built")
    guard_server(server, host, port, os.environ.get(SESSION_SECRET_ENV), home)
    server.controller.on_server_ready.add(lambda **_: mark("session: server ready"))
    server.controller.on_client_connected.add(lambda **_: mark("session: a tab connected"))
    if idle_timeout_s and os.environ.get(SESSION_SPARE_ENV):
        wait_as_spare(server, page, idle_timeout_s)
        idle_timeout_s = None
    server.start(
        host=host,
        port=port,
        open_browser=False,
        show_connection_info=False,
        timeout=idle_timeout_s or 0,
    )


def wait_as_spare(server: Any, page: Any, idle_timeout_s: int) -> None:
    """A spare session (started before its tab asked) waits for its tab without a timeout and
    without the page's idle time. Once its launcher has handed it to a tab (a line on its
    standard input, :data:`SPARE_TAKEN`), it stops ``idle_timeout_s`` after that unless the tab
    connects (a redirect nobody followed: a closed tab, a link preview); once a tab has
    connected, ``idle_timeout_s`` after its last tab left, or after the idle time, as other
    sessions do. It stops when its standard input ends: the launcher has stopped or was killed
    (its parent's process id would not tell: a Python that starts the real one, Windows'
    virtual environments, sits in between)."""
    import asyncio
    import sys
    import threading

    web_server: list = []
    server.controller.on_server_bind.add(web_server.append)
    idle_minutes, page.idle_minutes = page.idle_minutes, None
    tab_seen: list = []

    def tab_connected(**_: Any) -> None:
        # wslink reads its timeout when the last tab leaves (the session's start had none).
        tab_seen.append(True)
        for web in web_server:
            web.config["timeout"] = idle_timeout_s
        page.idle_minutes = idle_minutes  # from now (the page counts from its tab's connection)

    def handed_out() -> None:
        if not tab_seen:  # as wslink does at a session's start: cancelled when a tab connects
            for web in web_server:
                web.config["timeout"] = idle_timeout_s
                web.shutdown_schedule()

    def read_launcher(loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin.buffer if sys.stdin is not None else ():
            if line == SPARE_TAKEN:
                loop.call_soon_threadsafe(handed_out)
        asyncio.run_coroutine_threadsafe(server.stop(), loop)  # the launcher has gone

    async def watch_launcher(**_: Any) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=read_launcher, args=(loop,), daemon=True).start()

    server.controller.on_client_connected.add(tab_connected)
    server.controller.on_server_ready.add_task(watch_launcher)


def guard_server(server: Any, host: str, port: int, secret: str | None, home: str | None) -> None:
    """Make the trame ``server`` (listening on ``host:port``) answer only requests that call it
    by its own names from its own pages and, with ``secret``, only the tab that brings it."""
    guards = [origin_guard(host, port)]
    if secret:
        guards.append(session_guard(secret, port, home or "the address of fastsam3d web"))
    # Before wslink starts its aiohttp application (which freezes its middlewares); they see
    # every request, the websocket's handshake included.
    server.controller.on_server_bind.add(
        lambda web_server: web_server.app.middlewares.extend(guards)
    )
