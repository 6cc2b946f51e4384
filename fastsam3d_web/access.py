"""Who may open a page: the launcher's token, and each session's secret.

Every session process is started with a secret of its own, which the launcher hands only to
the tab it starts the session for: the tab arrives with ``?session=SECRET``, gets a cookie in
exchange, and every later request (the page, its files, the websocket) must carry the cookie.
So a tab cannot open another tab's session by guessing its port. With ``--require-token`` the
launcher asks for its token the same way (``?token=…`` once, then a cookie).

Cookies are shared by all ports of a host, so each cookie's name carries its server's port.

Which names a request may use for the server (its ``Host``, and a websocket's ``Origin``): a
page elsewhere must neither reach it through a DNS name that it points at this machine (DNS
rebinding) nor open a session's websocket from its own origin. See :func:`host_allowed`.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import urlsplit

SESSION_SECRET_ENV = "FASTSAM3D_SESSION_SECRET"
# The launcher's address as the tab used it: where a closed session sends the user.
SESSION_HOME_ENV = "FASTSAM3D_SESSION_HOME"
# For a spare session, started before a tab asks (see fastsam3d_web.launcher): the launcher's
# process id (the spare ends when its standard input, a pipe from its launcher, ends).
SESSION_SPARE_ENV = "FASTSAM3D_SESSION_SPARE"
# What the launcher writes on a spare session's standard input when it hands it to a tab (the
# spare's standard input is a pipe from its launcher; its end: the launcher has gone).
SPARE_TAKEN = b"taken\n"


def cookie_name(kind: str, port: int) -> str:
    return f"fastsam3d-{kind}-{port}"


def granted(secret: str, query: Mapping[str, str], key: str, cookies: Mapping[str, str],
            cookie: str) -> bool:  # fmt: skip
    """Whether the request's query ``key`` or its cookie ``cookie`` holds ``secret``."""
    offered = query.get(key) or cookies.get(cookie) or ""
    return hmac.compare_digest(offered.encode(), secret.encode())


def set_cookie_header(name: str, secret: str) -> str:
    """A ``Set-Cookie`` value that scripts cannot read and other sites do not send."""
    return f"{name}={secret}; Path=/; HttpOnly; SameSite=Strict"


# Addresses that mean "every interface": the browser's name for the server cannot be known.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def host_allowed(name: str | None, bound: str) -> bool:
    """Whether a request may call the server listening on ``bound`` by ``name``.

    The bound address itself always; on loopback, 127.0.0.1, localhost and ::1 as well; on every
    interface (0.0.0.0), any IP address, localhost and this machine's own names. Any other DNS
    name could be an attacker's, pointed at this machine: refused.
    """
    if not name:
        return False
    name, bound = name.lower().strip("[]"), bound.lower().strip("[]")
    if name == bound:
        return True
    if _is_loopback(bound):
        return _is_loopback(name)
    own_names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    if bound in WILDCARD_HOSTS:
        return _is_ip_address(name) or name in own_names
    return name in own_names


def request_hostname(host_header: str | None) -> str | None:
    """The name in a ``Host`` header (``name:port``, ``[::1]:port``), lower-case; None if none."""
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def origin_allowed(origin: str | None, bound: str, port: int) -> bool:
    """Whether a request's ``Origin`` is a page of this server (absent: not from a page)."""
    if origin is None:
        return True
    try:
        address = urlsplit(origin)
        return (
            address.scheme == "http"
            and address.port == port
            and host_allowed(address.hostname, bound)
        )
    except ValueError:
        return False


def bracketed(hostname: str) -> str:
    """An IPv6 address in brackets, as URLs write it; other names as they are."""
    return f"[{hostname}]" if ":" in hostname else hostname


def denied_page(message: str) -> bytes:
    return f"<!doctype html><title>FastSAM3D</title><p>{message}</p>".encode()


def session_guard(secret: str, port: int, home: str) -> Any:
    """An aiohttp middleware that serves a session's requests only to its own tab."""
    from aiohttp import web

    name = cookie_name("session", port)
    home = escape(home, quote=True)  # it came from the Host header of the tab's request

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not granted(secret, request.query, "session", request.cookies, name):
            return web.Response(
                status=401,
                body=denied_page(
                    f"This FastSAM3D session belongs to another tab. Open <a href='{home}'>"
                    f"{home}</a> for a session of your own."
                ),
                content_type="text/html",
            )
        if "session" in request.query:  # exchanged for the cookie, and out of the address bar
            response = web.HTTPSeeOther(request.path)
            response.headers["Set-Cookie"] = set_cookie_header(name, secret)
            return response
        return await handler(request)

    return guard


def origin_guard(bound: str, port: int) -> Any:
    """An aiohttp middleware that answers only requests that call the server by one of its own
    names, from none but its own pages (the websocket's handshake included): 403 otherwise."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        name = request_hostname(request.headers.get("Host"))
        if not host_allowed(name, bound):
            return web.Response(
                status=403,
                body=denied_page("This FastSAM3D session answers only under its own address."),
                content_type="text/html",
            )
        if not origin_allowed(request.headers.get("Origin"), bound, port):
            return web.Response(
                status=403,
                body=denied_page("This FastSAM3D session answers only its own pages."),
                content_type="text/html",
            )
        return await handler(request)

    return guard
