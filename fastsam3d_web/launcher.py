"""One process per browser tab: the address users open hands each new tab a session of its own.

A trame server holds one state and one scene, which every connected tab would share. The
launcher listens on the public address; each request for the page starts a session process
(``python -m fastsam3d_web.session PORT``, its settings in its environment) on a free loopback
port and redirects the tab there. At most ``max_sessions`` run at once; a session exits when its
tab has been closed for a while, when it idles, or when no tab ever connects (see
:mod:`fastsam3d_web.server`). Who may open what: :mod:`fastsam3d_web.access`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .access import (
    SESSION_HOME_ENV,
    SESSION_SECRET_ENV,
    WILDCARD_HOSTS,
    bracketed,
    cookie_name,
    denied_page,
    granted,
    host_allowed,
    request_hostname,
    set_cookie_header,
)

# How long a new session may take to listen (it loads the image and, locally, the model).
SESSION_START_S = 180.0


class Launcher:
    """Starts, bounds and reaps the session processes.

    Args:
        session_command: the command that serves one session; its port is appended.
        host: where sessions listen (the launcher's own host).
        max_sessions: sessions running at once; more tabs get a 503 page.
        session_environment: variables added to each session's environment (its settings,
            which may hold secrets: command lines are public, ``ps``).
    """

    def __init__(
        self,
        session_command: Sequence[str],
        host: str,
        max_sessions: int,
        session_environment: Mapping[str, str] | None = None,
    ) -> None:
        self.session_command = list(session_command)
        self.session_environment = dict(session_environment or {})
        self.host = host
        self.max_sessions = max_sessions
        self._sessions: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._stopped = False  # no session starts once stop() has begun

    def running(self) -> int:
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            return len(self._sessions)

    def start_session(self, home: str) -> tuple[int, str] | None:
        """A new session's port and secret, once it listens; None when ``max_sessions`` run
        already. ``home``: the launcher's address, for the session's pages.

        Raises:
            RuntimeError: the session process exited or did not listen in time.
        """
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            if self._stopped:
                raise RuntimeError("this server is stopping")
            if len(self._sessions) >= self.max_sessions:
                return None
            port = _free_port(self.host)
            secret = secrets.token_urlsafe(24)
            # The secret goes through the environment: command lines are public (``ps``).
            env = {**os.environ, **self.session_environment,
                   SESSION_SECRET_ENV: secret, SESSION_HOME_ENV: home}  # fmt: skip
            session = subprocess.Popen([*self.session_command, str(port)], env=env)
            self._sessions.append(session)
        deadline = time.monotonic() + SESSION_START_S
        while time.monotonic() < deadline:
            if session.poll() is not None:
                raise RuntimeError(f"the session process exited with status {session.returncode}")
            with socket.socket() as probe:
                if probe.connect_ex((self.host, port)) == 0:
                    return port, secret
            time.sleep(0.2)
        session.kill()
        raise RuntimeError(f"the session did not start within {SESSION_START_S:.0f} s")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for session in self._sessions:
                session.terminate()
            for session in self._sessions:
                try:
                    session.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    session.kill()


def serve(launcher: Launcher, host: str, port: int, token: str | None = None) -> None:
    """Answer page requests on ``host:port`` until interrupted; then stop every session.

    With ``token``, only requests that bring it (``?token=``, then its cookie) start sessions.
    """
    page_cookie = cookie_name("page", port)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
            name = _address_name(self.headers.get("Host"), host)
            if name is None:  # a DNS name pointed at this machine by someone else's page
                self._page(403, "This FastSAM3D server answers only under its own address.")
                return
            address = urlsplit(self.path)
            if address.path not in ("/", "/index.html"):
                self._page(404, "Not found: open / to start a session.")
                return
            query = dict(parse_qsl(address.query))
            cookies = {k: m.value for k, m in SimpleCookie(self.headers.get("Cookie")).items()}
            if token is not None and not granted(token, query, "token", cookies, page_cookie):
                self._page(
                    401,
                    "This FastSAM3D server needs its token: open the address that "
                    "<code>fastsam3d web</code> printed (it ends in <code>?token=…</code>).",
                )
                return
            try:
                started = launcher.start_session(home=f"http://{name}:{port}/")
            except RuntimeError as error:
                self._page(500, f"The session could not start: {error}.")
                return
            if started is None:
                self._page(
                    503,
                    f"All {launcher.max_sessions} sessions of this server are in use. Close "
                    "another FastSAM3D tab, or try again in a few minutes.",
                )
                return
            session_port, secret = started
            self.send_response(303)
            self.send_header("Location", f"http://{name}:{session_port}/?session={secret}")
            if token is not None:  # a reload of this address needs no token in it
                self.send_header("Set-Cookie", set_cookie_header(page_cookie, token))
            self.end_headers()

        def _page(self, status: int, message: str) -> None:
            body = denied_page(message)
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request would drown the sessions' own messages

    httpd = ThreadingHTTPServer((host, port), Handler)
    address = f"http://{bracketed(host)}:{port}/" + (f"?token={token}" if token else "")
    print(f"fastsam3d web: {address} (each tab gets its own session)", flush=True)
    try:
        with _terminate_as_interrupt():
            httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        launcher.stop()


def _address_name(host_header: str | None, host: str) -> str | None:
    """The host part of the addresses this server hands out (its sessions', its own), as URLs
    write it; None when the request called the server by a name that is not its own.

    The configured address, unless that is every interface (0.0.0.0): then the name the
    browser used, once :func:`~fastsam3d_web.access.host_allowed` accepts it.
    """
    name = request_hostname(host_header)
    if not host_allowed(name, host):
        return None
    return bracketed(name if host.strip("[]") in WILDCARD_HOSTS else host.strip("[]"))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, service managers) stops the server as Ctrl+C does, sessions and all:
    by default it would end this process at once and leave them running."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are the main thread's; its own handling stays
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def session_command() -> list[str]:
    """The command line that serves one session (:mod:`fastsam3d_web.session`), less its port:
    this Python, and nothing of the settings, which travel in the environment."""
    return [sys.executable, "-m", "fastsam3d_web.session"]
