"""The web app's guard: a random token checked on every request, as Jupyter does.

The URL printed by `tunewise ui` carries `?token=...`; the first visit trades it for an HttpOnly,
SameSite=Strict cookie and redirects to the same page without it (so the token does not stay in
the address bar or in history). Every later request must carry the cookie. State-changing requests
from another origin are refused as well, so another web page cannot drive the app through a
visitor's browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.responses import HTMLResponse, RedirectResponse

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def new_token() -> str:
    return secrets.token_urlsafe(24)


def cookie_name(host: str) -> str:
    """One cookie per port: cookies ignore ports, and two apps on one machine must not clash."""
    port = host.rsplit(":", 1)[-1] if ":" in host else "80"
    return f"tunewise_ui_{port if port.isdigit() else 'x'}"


def same_token(given: str | None, token: str) -> bool:
    """Constant-time, and independent of the given string's length."""
    if not given:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(token.encode()).digest())


DENIED = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tunewise: open the link with its token</title>
<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}code{background:#eee;padding:.1em .3em}</style></head>
<body><h1>Open the link that <code>tunewise ui</code> printed</h1>
<p>This page is private to the person who started the app. Copy the full URL, with its
<code>?token=...</code>, from the terminal where <code>tunewise ui</code> runs.</p></body></html>"""


class TokenGuard:
    """ASGI middleware, outermost: the token (query, once) or its cookie on every request."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = cookie_name(host)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if given is not None and same_token(given, self.token) and scope.get("method") == "GET":
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(name, self.token, httponly=True, samesite="strict", path="/")
            return await response(scope, receive, send)
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is the same as none
            cookie = SimpleCookie()
        if not same_token(cookie[name].value if name in cookie else None, self.token):
            return await HTMLResponse(DENIED, status_code=403)(scope, receive, send)
        if scope.get("method") in UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
                return await HTMLResponse("cross-origin request refused", status_code=403)(scope, receive, send)
        await self.app(scope, receive, send)
