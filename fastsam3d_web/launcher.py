"""One process per browser tab: the address users open hands each new tab a session of its own.

A trame server holds one state and one scene, which every connected tab would share. The
launcher listens on the public address; each request for the page starts a session process
(``fastsam3d web … --session``) on a free loopback port and redirects the tab there. At most
``max_sessions`` run at once; a session exits when its tab has been closed for a while, when
it idles, or when no tab ever connects (see :mod:`fastsam3d_web.server`). Who may open what:
:mod:`fastsam3d_web.access`.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .access import (
    SESSION_HOME_ENV,
    SESSION_SECRET_ENV,
    cookie_name,
    denied_page,
    granted,
    set_cookie_header,
)

# How long a new session may take to listen (it loads the image and, locally, the model).
SESSION_START_S = 180.0


class Launcher:
    """Starts, bounds and reaps the session processes.

    Args:
        session_command: the command that serves one session; ``--port P`` is appended.
        host: where sessions listen (the launcher's own host).
        max_sessions: sessions running at once; more tabs get a 503 page.
    """

    def __init__(self, session_command: Sequence[str], host: str, max_sessions: int) -> None:
        self.session_command = list(session_command)
        self.host = host
        self.max_sessions = max_sessions
        self._sessions: list[subprocess.Popen] = []
        self._lock = threading.Lock()

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
            if len(self._sessions) >= self.max_sessions:
                return None
            port = _free_port(self.host)
            secret = secrets.token_urlsafe(24)
            # The secret goes through the environment: command lines are public (``ps``).
            env = {**os.environ, SESSION_SECRET_ENV: secret, SESSION_HOME_ENV: home}
            session = subprocess.Popen([*self.session_command, "--port", str(port)], env=env)
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
            # The name the browser used for this server (it may listen on 0.0.0.0).
            name = _bracketed(urlsplit(f"//{self.headers.get('Host') or host}").hostname or host)
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
    address = f"http://{_bracketed(host)}:{port}/" + (f"?token={token}" if token else "")
    print(f"fastsam3d web: {address} (each tab gets its own session)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        launcher.stop()


def _bracketed(hostname: str) -> str:
    """An IPv6 address in brackets, as URLs write it; other names as they are."""
    return f"[{hostname}]" if ":" in hostname else hostname


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def session_command(argv: Sequence[str]) -> list[str]:
    """The command line that serves one session with this process's other options."""
    code = "import sys; from fastsam3d_core.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *argv, "--session"]
