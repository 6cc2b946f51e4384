"""One process per browser tab: the address users open hands each new tab a session of its own.

A trame server holds one state and one scene, which every connected tab would share. The
launcher listens on the public address; each request for the page starts a session process
(``fastsam3d web … --session``) on a free loopback port and redirects the tab there. At most
``max_sessions`` run at once; a session exits when its tab has been closed for a while, or when
no tab ever connects (see :mod:`fastsam3d_web.server`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

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

    def start_session(self) -> int | None:
        """A new session's port, once it listens; None when ``max_sessions`` run already.

        Raises:
            RuntimeError: the session process exited or did not listen in time.
        """
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            if len(self._sessions) >= self.max_sessions:
                return None
            port = _free_port(self.host)
            session = subprocess.Popen([*self.session_command, "--port", str(port)])
            self._sessions.append(session)
        deadline = time.monotonic() + SESSION_START_S
        while time.monotonic() < deadline:
            if session.poll() is not None:
                raise RuntimeError(f"the session process exited with status {session.returncode}")
            with socket.socket() as probe:
                if probe.connect_ex((self.host, port)) == 0:
                    return port
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


def serve(launcher: Launcher, host: str, port: int) -> None:
    """Answer page requests on ``host:port`` until interrupted; then stop every session."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
            if self.path.split("?")[0] not in ("/", "/index.html"):
                self._page(404, "Not found: open / to start a session.")
                return
            try:
                session_port = launcher.start_session()
            except RuntimeError as error:
                self._page(500, f"The session could not start: {error}.")
                return
            if session_port is None:
                self._page(
                    503,
                    f"All {launcher.max_sessions} sessions of this server are in use. Close "
                    "another FastSAM3D tab, or try again in a few minutes.",
                )
                return
            # The name the browser used for this server (it may listen on 0.0.0.0).
            name = urlsplit(f"//{self.headers.get('Host') or host}").hostname or host
            self.send_response(303)
            self.send_header("Location", f"http://{_bracketed(name)}:{session_port}/")
            self.end_headers()

        def _page(self, status: int, message: str) -> None:
            body = f"<!doctype html><title>FastSAM3D</title><p>{message}</p>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one line per request would drown the sessions' own messages

    httpd = ThreadingHTTPServer((host, port), Handler)
    print(f"fastsam3d web: http://{host}:{port}/ (each tab gets its own session)", flush=True)
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
