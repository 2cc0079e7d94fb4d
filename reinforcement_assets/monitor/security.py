"""Who may reach the Monitoring page, and who may change anything through it.

- Without a token the server binds only to loopback: reads are open there, writes (retrain, cancel,
  rollback) only from the page's own origin (the browser's `Origin` header), so another site open in
  the same browser cannot post to it.
- Any other bind needs `REINFORCEMENT_MONITOR_TOKEN`; then every request needs `Authorization: Bearer
  <token>` or the session cookie the login page sets (an HMAC of the token, never the token itself).
  A write through the cookie must come from the page's own origin too.
- The `Host` header must name the bind (DNS rebinding: a hostile name resolving to 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

SESSION_COOKIE = "reinforcement_monitor_session"
OPEN_PATHS = ("/login", "/static/")  # reachable before logging in
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class MonitorRefused(ValueError):
    """A configuration the server will not start with; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> tuple[str, int | None]:
    """`example.org:8765` → ("example.org", 8765); `[::1]:80` → ("::1", 80); a bad port → port -1."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif header.count(":") == 1:
        name, port = header.split(":")
    else:
        name, port = header, None
    if port is None:
        return name, None
    return name, int(port) if port.isascii() and port.isdigit() else -1  # "²".isdigit() is true


@dataclass(frozen=True)
class Access:
    """The bind, the token, and the host names requests may use."""

    host: str
    port: int
    token: str | None
    allowed_hosts: frozenset[str]

    @classmethod
    def for_bind(cls, host: str, port: int, token: str | None, extra_hosts: Iterable[str] = ()) -> Access:
        """Refuses a bind beyond loopback without a token. A wildcard bind (0.0.0.0, ::) answers to this
        machine's names and to `extra_hosts` (the names users type, e.g. behind a proxy)."""
        token = token.strip() if token else None
        if not token and not is_loopback(host):
            raise MonitorRefused(f"refusing to serve on {host or '0.0.0.0'} without a token: set "
                                 "REINFORCEMENT_MONITOR_TOKEN (every request then needs it), or bind to 127.0.0.1")
        if token is not None and len(token) < 16:
            raise MonitorRefused("REINFORCEMENT_MONITOR_TOKEN is too short: use at least 16 characters")
        names = {host_name(h)[0] for h in extra_hosts if h.strip()}
        if is_loopback(host):
            names |= LOOPBACK_NAMES
        if host in WILDCARDS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()} | LOOPBACK_NAMES
        else:
            names.add(host.lower().strip("[]"))
        return cls(host=host, port=port, token=token, allowed_hosts=frozenset(names))

    def host_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        name, port = host_name(header)
        return name in self.allowed_hosts and port in (None, self.port)

    def session_value(self) -> str:
        """The login cookie's value: an HMAC of the token, so the cookie never holds the token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"reinforcement-monitor-session", hashlib.sha256).hexdigest()

    def authorised_by(self, request: Request) -> str | None:
        """"bearer", "session", "open" (no token configured) or None (not authorised)."""
        if self.token is None:
            return "open"
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
            return "bearer"
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session_value().encode()):
            return "session"
        return None


def same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from a page of this server."""
    origin = request.headers.get("origin")
    return origin is not None and origin.rstrip("/").lower() == f"{request.url.scheme}://{request.headers['host']}".lower()


class AccessMiddleware(BaseHTTPMiddleware):
    """Applies `Access` to every request before any route sees it."""

    def __init__(self, app, access: Access):
        super().__init__(app)
        self.access = access

    async def dispatch(self, request: Request, call_next) -> Response:
        refusal = self.refusal(request)
        return refusal if refusal is not None else await call_next(request)

    def refusal(self, request: Request) -> Response | None:
        api = request.url.path.startswith("/api/")
        if not self.access.host_allowed(request.headers.get("host")):
            return PlainTextResponse("unexpected Host header: this server answers only to the names it is bound to",
                                     status_code=421)
        authorised = self.access.authorised_by(request)
        if authorised is None and not request.url.path.startswith(OPEN_PATHS):
            if api or request.method != "GET":
                return JSONResponse({"error": "a token is required: Authorization: Bearer <token>"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return RedirectResponse("/login", status_code=303)
        if request.method in WRITE_METHODS and authorised != "bearer" and not same_origin(request):
            return JSONResponse({"error": "writes are accepted only from this server's own page (Origin header)"},
                                status_code=403)
        return None
