"""Who may use the dashboard, and which forms it accepts.

Authentication is a bearer token or HTTP basic auth, both compared in constant time. A
browser presents the token once as ``?token=...``: the dashboard answers with an HttpOnly
cookie holding a keyed digest of the token (never the token itself) and drops it from the URL.
Forms carry a CSRF token that must match the one in the visitor's cookie (double submit); the
cookies are SameSite=Strict as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigurationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AUTH_COOKIE = "pgqueue_auth"
CSRF_COOKIE = "pgqueue_csrf"
CSRF_FIELD = "csrf"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality of two secrets."""
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class Credentials:
    """What a request must present: the token, or the basic-auth pair (None: not required)."""

    token: str | None = None
    basic_auth: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigurationError("the dashboard token must not be empty")
        if self.basic_auth is not None:
            user, colon, password = self.basic_auth.partition(":")
            if not colon or not user or not password:
                raise ConfigurationError("basic auth must be USER:PASSWORD, both non-empty")

    @property
    def required(self) -> bool:
        return self.token is not None or self.basic_auth is not None

    def cookie_value(self) -> str:
        """The auth cookie for the token: a digest keyed by the token, so the cookie is no token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"pgqueue-dashboard-session", hashlib.sha256).hexdigest()

    def accepts(self, headers: dict[bytes, bytes], cookies: dict[str, str]) -> bool:
        """Whether the request's Authorization header or auth cookie carries valid credentials."""
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        ok = False
        if self.token is not None:
            if scheme.lower() == "bearer" and value:
                ok |= same(value, self.token)
            cookie = cookies.get(AUTH_COOKIE)
            if cookie:
                ok |= same(cookie, self.cookie_value())
        if self.basic_auth is not None and scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            ok |= same(decoded, self.basic_auth.encode())
        return ok


def parse_cookies(headers: dict[bytes, bytes]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            cookies.setdefault(name, value)
    return cookies


def cookie(name: str, value: str, path: str, secure: bool) -> bytes:
    attributes = f"{name}={value}; Path={path or '/'}; HttpOnly; SameSite=Strict"
    return (attributes + ("; Secure" if secure else "")).encode("latin-1")


class Guard:
    """ASGI middleware: refuses requests without the credentials (401), trades a ``?token=``
    for the auth cookie, gives every visitor a CSRF cookie, and adds security headers."""

    def __init__(self, app: ASGIApp, credentials: Credentials, base_path: str = "") -> None:
        self.app = app
        self.credentials = credentials
        self.base_path = base_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        cookies = parse_cookies(headers)
        prefix = self.base_path or scope.get("root_path", "")
        path = prefix or "/"
        secure = scope.get("scheme") == "https"
        set_cookies: list[bytes] = []
        credentials = self.credentials
        if credentials.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            offered = [value for name, value in query if name == "token"]
            if offered:
                if not same(offered[-1], credentials.token):
                    await _refuse(send, credentials)
                    return
                # Accepted: keep it in a cookie and send the browser to the URL without it.
                rest = urlencode([(name, value) for name, value in query if name != "token"])
                location = prefix + scope["path"].removeprefix(scope.get("root_path", ""))
                location += f"?{rest}" if rest else ""
                auth = cookie(AUTH_COOKIE, credentials.cookie_value(), path, secure)
                await _send(send, 303, b"", [(b"location", location.encode()), (b"set-cookie", auth)])
                return
        if credentials.required and not credentials.accepts(headers, cookies):
            await _refuse(send, credentials)
            return
        csrf = cookies.get(CSRF_COOKIE, "")
        if len(csrf) < 32 or not csrf.isalnum():
            csrf = secrets.token_hex(32)
            set_cookies.append(cookie(CSRF_COOKIE, csrf, path, secure))
        scope.setdefault("state", {})["csrf"] = csrf

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"set-cookie", value) for value in set_cookies]
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(send: Send, credentials: Credentials) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"text/plain; charset=utf-8")]
    if credentials.basic_auth is not None:
        headers.append((b"www-authenticate", b'Basic realm="pgqueue", charset="UTF-8"'))
    elif credentials.token is not None:
        headers.append((b"www-authenticate", b'Bearer realm="pgqueue"'))
    body = (
        b"401 Unauthorized: this dashboard needs its token (open it once with ?token=..., or send "
        b"Authorization: Bearer ...) or its basic-auth user and password.\n"
    )
    await _send(send, 401, body, headers)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def csrf_ok(cookie_value: str | None, form_value: Any) -> bool:
    """Whether a form's CSRF field matches the visitor's CSRF cookie."""
    if not cookie_value or not isinstance(form_value, str) or not form_value:
        return False
    return same(form_value, cookie_value)
