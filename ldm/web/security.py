"""Requests are untrusted: ids instead of paths, the server's own Host and Origin only, optional Basic auth.

`child(root, ident)` is the only way a request reaches a file: the id must be a plain name (no separators,
no leading dot) and the resolved path must stay inside the root.
"""

from __future__ import annotations

import base64
import hmac
import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ldm.errors import LdmUserError
from ldm.web.settings import WebSettings

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,119}")

# Sent with every response. The pages load only their own /static scripts and styles (no inline code), so
# the policy can forbid everything else: injected markup cannot run script, and no other site may frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class WebInputError(LdmUserError):
    """A request the UI refuses; the message names the input and the fix (HTTP 400 unless `status`)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_id(ident: str, what: str = "id") -> str:
    """A file or folder name chosen by the UI: letters, digits, `._- `, no path separators, no leading dot."""
    if not isinstance(ident, str) or not ID_PATTERN.fullmatch(ident) or ".." in ident:
        raise WebInputError(f"{what} {ident!r} is not a plain name; use letters, digits, '.', '_', '-' and spaces")
    return ident


def child(root: Path, *idents: str, what: str = "id") -> Path:
    """root/ident[/ident...] after checking each id and that the resolved path stays inside root."""
    path = root
    for ident in idents:
        path = path / check_id(ident, what)
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise WebInputError(f"{what} {'/'.join(idents)!r} leaves its folder; pick one from the list")
    return resolved


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc


class GuardMiddleware(BaseHTTPMiddleware):
    """Refuse a foreign Host (DNS rebinding), a foreign Origin/Referer on writes (cross-site posts), and,
    when auth is set, any request without the right Basic credentials."""

    def __init__(self, app, settings: WebSettings):
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next) -> Response:
        problem = self.problem(request)
        if problem is not None:
            status, message = problem
            headers = {"WWW-Authenticate": 'Basic realm="textual-inversion"'} if status == 401 else {}
            return JSONResponse({"error": message}, status_code=status, headers={**headers, **SECURITY_HEADERS})
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def problem(self, request: Request) -> tuple[int, str] | None:
        settings = self.settings
        host = request.headers.get("host", "")
        allowed = settings.allowed_hosts()
        if not settings.public and host not in allowed:
            return 421, f"Host {host!r} is not this server's; open http://{settings.host}:{settings.port}/"
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin") or request.headers.get("referer")
            if origin and origin != "null" and _host_of(origin) != host:
                return 403, f"a request from {origin!r} may not change this server; use the UI's own pages"
            if origin == "null":
                return 403, "a request from an opaque origin may not change this server; use the UI's own pages"
            if request.headers.get("sec-fetch-site") == "cross-site":  # a browser's own word, when it sends one
                return 403, "a request from another site may not change this server; use the UI's own pages"
        if settings.auth is not None and not _authorized(request, settings.auth):
            return 401, "log in with the user and password given to --auth"
        return None


def _authorized(request: Request, auth: tuple[str, str]) -> bool:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
    except ValueError:  # binascii.Error: not base64
        return False
    # bytes, not str: compare_digest refuses non-ASCII str, and a stranger's header must not crash the check
    return hmac.compare_digest(user, auth[0].encode()) & hmac.compare_digest(password, auth[1].encode())
