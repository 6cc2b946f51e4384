"""Who may open a page: the launcher's token, and each session's secret.

Every session process is started with a secret of its own, which the launcher hands only to
the tab it starts the session for: the tab arrives with ``?session=SECRET``, gets a cookie in
exchange, and every later request (the page, its files, the websocket) must carry the cookie.
So a tab cannot open another tab's session by guessing its port. With ``--require-token`` the
launcher asks for its token the same way (``?token=…`` once, then a cookie).

Cookies are shared by all ports of a host, so each cookie's name carries its server's port.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from html import escape
from typing import Any

SESSION_SECRET_ENV = "FASTSAM3D_SESSION_SECRET"
# The launcher's address as the tab used it: where a closed session sends the user.
SESSION_HOME_ENV = "FASTSAM3D_SESSION_HOME"


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
