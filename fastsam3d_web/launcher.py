"""One process per browser tab: the address users open hands each new tab a session of its own.

A trame server holds one state and one scene, which every connected tab would share. The
launcher listens on the public address; each request for the page gets a session process
(``python -m fastsam3d_web.session PORT``, its settings in its environment) on a free loopback
port, the spare one started before the tab asked if there is one (:class:`Launcher`), and
redirects the tab there. At most ``max_sessions`` run at once; a session exits when its
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
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .access import (
    SESSION_HOME_ENV,
    SESSION_SECRET_ENV,
    SESSION_SPARE_ENV,
    SPARE_TAKEN,
    WILDCARD_HOSTS,
    bracketed,
    cookie_name,
    denied_page,
    granted,
    host_allowed,
    request_hostname,
    set_cookie_header,
)
from .timeline import mark

# How long a new session may take to listen (it loads the image and, locally, the model).
SESSION_START_S = 180.0
# How often a starting session is checked for listening (the tab waits that long at most more).
LISTEN_CHECK_S = 0.05
# The spare session starts this long after a tab got a session (see Launcher), and whether one
# is due is checked this often.
SPARE_DELAY_S = 20.0
SPARE_CHECK_S = 1.0
# ... and only while the running sessions together used less than this share of one core since
# the previous check (a user clicking, a model loading: the spare's start would slow them).
QUIET_CPU_SHARE = 0.1


class Launcher:
    """Starts, bounds and reaps the session processes, and keeps one spare session started.

    A session's cold start (Python, Slicer's libraries, the page, the image) takes seconds;
    so, while fewer than ``max_sessions`` run, one spare session is started before any tab asks
    and the next tab gets it. It is started when the launcher starts, and again
    :data:`SPARE_DELAY_S` after a tab got a session (not at once: its start would take the
    cores from that tab's first image and model). A spare counts among ``max_sessions``; it
    loads its model before its tab comes, and waits for it without the no-tab timeout
    (:data:`fastsam3d_web.server.SESSION_IDLE_S`) or the page's idle time, until its launcher
    stops (see :func:`fastsam3d_web.server.wait_as_spare`).

    Args:
        session_command: the command that serves one session; its port is appended.
        host: where sessions listen (the launcher's own host).
        max_sessions: sessions running at once; more tabs get a 503 page.
        session_environment: variables added to each session's environment (its settings,
            which may hold secrets: command lines are public, ``ps``).
        spare: keep a spare session started (False: each tab's session starts on its request).
    """

    def __init__(
        self,
        session_command: Sequence[str],
        host: str,
        max_sessions: int,
        session_environment: Mapping[str, str] | None = None,
        spare: bool = True,
    ) -> None:
        self.session_command = list(session_command)
        self.session_environment = dict(session_environment or {})
        self.host = host
        self.max_sessions = max_sessions
        self.spare = spare
        self._sessions: list[subprocess.Popen] = []
        self._spare: _Started | None = None
        self._spare_home: str | None = None  # the launcher's address, once known
        self._next_spare_at = 0.0  # time.monotonic() after which a spare may start
        self._cpu_seen: dict = {}  # each session's CPU seconds at the last check
        self._spare_failures = 0  # spares in a row that ended before a tab got them
        self._cpu_checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._stopped = False  # no session starts once stop() has begun

    @property
    def stopped(self) -> bool:
        return self._stopped

    def running(self) -> int:
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            return len(self._sessions)

    def start_session(self, home: str) -> tuple[int, str] | None:
        """A session's port and secret, once it listens: the spare if one is started for
        ``home``, else a new one; None when ``max_sessions`` run already. ``home``: the
        launcher's address, for the session's pages.

        Raises:
            RuntimeError: the session process exited or did not listen in time.
        """
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            if self._stopped:
                raise RuntimeError("this server is stopping")
            started, self._spare = self._spare, None
            if started is not None and (started.process.poll() is not None or started.home != home):
                self._end(started.process)  # for another address (a wildcard host's other name)
                started = None
            self._spare_home = home
            self._next_spare_at = time.monotonic() + SPARE_DELAY_S
            if started is not None:
                mark("launcher: the spare session handed out")
                _tell(started.process, SPARE_TAKEN)  # it ends if no tab comes (a cold one does)
                self._spare_failures = 0
            elif len(self._sessions) >= self.max_sessions:
                return None
            else:
                started = self._spawn(home)
        deadline = time.monotonic() + SESSION_START_S
        while time.monotonic() < deadline:
            if started.process.poll() is not None:
                raise RuntimeError(
                    f"the session process exited with status {started.process.returncode}"
                )
            with socket.socket() as probe:
                if probe.connect_ex((self.host, started.port)) == 0:
                    mark("launcher: the session listens")
                    return started.port, started.secret
            time.sleep(LISTEN_CHECK_S)
        started.process.kill()
        raise RuntimeError(f"the session did not start within {SESSION_START_S:.0f} s")

    def keep_spare(self, home: str | None = None) -> None:
        """Start a spare session (for ``home``, else the address the last tab used) if none is
        started, there is room, the last tab got its session long enough ago, and the running
        sessions are quiet (a spare's start would slow their clicks)."""
        with self._lock:
            self._sessions = [s for s in self._sessions if s.poll() is None]
            home = home or self._spare_home
            if self._spare is not None and self._spare.process.poll() is not None:
                # It ended unused (it failed, or was stopped from outside): not again at once.
                self._spare, self._spare_failures = None, self._spare_failures + 1
                backoff = SPARE_DELAY_S * 2 ** min(self._spare_failures, 6)
                self._next_spare_at = time.monotonic() + backoff
            quiet = self._sessions_quiet()
            if (
                not self.spare
                or self._stopped
                or home is None
                or self._spare is not None
                or len(self._sessions) >= self.max_sessions
                or time.monotonic() < self._next_spare_at
                or not quiet
            ):
                return
            self._spare = self._spawn(home, spare=True)

    def _sessions_quiet(self) -> bool:
        """Whether the sessions used less than :data:`QUIET_CPU_SHARE` of a core since the last
        call (Linux's /proc; elsewhere always)."""
        now, used, known = time.monotonic(), 0.0, True
        seconds = {s.pid: _cpu_seconds(s.pid) for s in self._sessions}
        for pid, cpu in seconds.items():
            if cpu is None:
                continue
            if pid in self._cpu_seen:
                used += max(0.0, cpu - self._cpu_seen[pid])
            else:
                known = False  # a session not measured before: until the next call
        elapsed = max(now - self._cpu_checked_at, 1e-3)
        self._cpu_seen, self._cpu_checked_at = seconds, now
        return known and used / elapsed < QUIET_CPU_SHARE

    def _spawn(self, home: str, spare: bool = False) -> _Started:
        """A new session process (the lock held), not waited for."""
        port = _free_port(self.host)
        secret = secrets.token_urlsafe(24)
        # The secret goes through the environment: command lines are public (``ps``).
        env = {**os.environ, **self.session_environment,
               SESSION_SECRET_ENV: secret, SESSION_HOME_ENV: home}  # fmt: skip
        if spare:
            env[SESSION_SPARE_ENV] = str(os.getpid())
        mark("launcher: session process spawned", spare=spare)
        # A spare's standard input: told when a tab has it, and its end when this process ends.
        stdin = subprocess.PIPE if spare else None
        process = subprocess.Popen([*self.session_command, str(port)], env=env, stdin=stdin)
        self._sessions.append(process)
        return _Started(process, port, secret, home)

    def _end(self, process: subprocess.Popen) -> None:
        process.terminate()
        with contextlib.suppress(ValueError):
            self._sessions.remove(process)

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


@dataclass(frozen=True)
class _Started:
    """A session process: where it listens, the secret its tab brings, the home it was told."""

    process: subprocess.Popen
    port: int
    secret: str
    home: str


def _tell(process: subprocess.Popen, line: bytes) -> None:
    """Write ``line`` on a spare session's standard input (if it has ended: nothing)."""
    with contextlib.suppress(OSError, ValueError):
        process.stdin.write(line)
        process.stdin.flush()


def _keep_spare_sessions(launcher: Launcher, home: str | None) -> None:
    """The launcher's spare session started now (``home``: its address, if known) and kept
    started: checked every :data:`SPARE_CHECK_S` until the launcher stops."""
    launcher.keep_spare(home)
    while not launcher.stopped:
        time.sleep(SPARE_CHECK_S)
        launcher.keep_spare()


def serve(launcher: Launcher, host: str, port: int, token: str | None = None) -> None:
    """Answer page requests on ``host:port`` until interrupted; then stop every session.

    With ``token``, only requests that bring it (``?token=``, then its cookie) start sessions.
    """
    page_cookie = cookie_name("page", port)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
            mark("launcher: page requested")
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
    # Under every interface's address, the name a tab uses is known only from its request.
    home = (
        None
        if host.strip("[]") in WILDCARD_HOSTS
        else f"http://{bracketed(host.strip('[]'))}:{port}/"
    )
    keeper = threading.Thread(target=_keep_spare_sessions, args=(launcher, home), daemon=True)
    keeper.start()
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


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time (user + system, s) that process ``pid`` used so far; None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def session_command() -> list[str]:
    """The command line that serves one session (:mod:`fastsam3d_web.session`), less its port:
    this Python, and nothing of the settings, which travel in the environment."""
    return [sys.executable, "-m", "fastsam3d_web.session"]
