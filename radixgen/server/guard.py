"""The HTTP guard: API keys (each key a tenant) and request-body limits, as plain ASGI.

Plain ASGI on purpose: a `BaseHTTPMiddleware` hands routes a `receive` that returns at once after
the body, which defeats the routes' disconnect detection (`until_disconnect`).

For every HTTP request:

- Headers are bytes and stay bytes: nothing here decodes them as UTF-8 (HTTP's header charset
  is latin-1), so no header byte can cause a 5xx.
- Keys (only when some are configured; `/health` and the dashboard's static shell -- a page,
  script and style sheet with no server data, which a browser loads without headers -- are
  always open): exactly one
  `Authorization: Bearer <key>`. Two or more Authorization headers are ambiguous and get 400
  (param "Authorization"), never "last one wins". A missing, malformed, non-ASCII or unknown key
  gets 401; the token's SHA-256 digest is compared with every key's in constant time.
- Tenant: `scope["state"]["tenant"]` is `key_tenant(key)` for the key that authenticated the
  request, or None when no keys are configured (every caller is then one tenant) and on /health.
- Body: a request that declares a Content-Length over `max_body_bytes` gets 413 before any of
  it is read. A request that carries a body (Content-Length or Transfer-Encoding) is read here
  whole before the app runs, counting bytes as they arrive, so a chunked body is limited too:
  the moment it passes `max_body_bytes` it gets 413 and reading stops. The whole body must arrive
  within `body_read_timeout` seconds of the first read, a total deadline (not a per-chunk idle
  timeout, which a client dripping a byte at a time would never trip); otherwise 408. These
  refusals carry `Connection: close`: the server answers and closes without reading the rest.
  The app then gets the body as one `http.request` message and, after it, the server's own
  `receive`, so it still sees `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from radixgen.server.errors import APIError, ClientDisconnected, error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024
BODY_READ_TIMEOUT = 30.0

# The dashboard's shell (dashboard/routes.py SHELL_FILES): static files, no server data.
_OPEN_PATHS = frozenset(
    {"/health", "/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"}
)
_KEY_SYNTAX = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token can carry
_CLOSE = {"Connection": "close"}


def check_api_key(key: str) -> None:
    """Raise ValueError unless `key` can be sent as a bearer token (visible ASCII, no spaces)."""
    if not isinstance(key, str) or not _KEY_SYNTAX.fullmatch(key):
        raise ValueError("an API key must be non-empty visible ASCII without spaces")


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def key_tenant(key: str) -> str:
    """The tenant id of an API key: 16 hex digits of its SHA-256 (stable across restarts). It
    names the key in server state and logs without being the key; it is not a secret, but it
    should not be shown to other tenants."""
    return _digest(key.encode("ascii")).hex()[:16]


def _headers(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", ()) if key.lower() == name]


class GuardMiddleware:
    """API keys, tenant and body limits for every HTTP request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        api_keys: Iterable[str] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        body_read_timeout: float = BODY_READ_TIMEOUT,
    ):
        self.app = app
        self.keys = [(_digest(key.encode("ascii")), key_tenant(key)) for key in api_keys]
        self.max_body = max_body_bytes
        self.body_read_timeout = body_read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            tenant = self._authenticate(scope)
            body = await self._read_body(scope, receive)
        except APIError as exc:
            response = error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)
            return await response(scope, receive, send)
        except ClientDisconnected:
            return  # the client left while sending its body: nobody to answer
        scope.setdefault("state", {})["tenant"] = tenant
        if body is not None:
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> str | None:
        """The tenant of the request's key; None when no keys are configured or on an open
        path."""
        if not self.keys or scope["path"] in _OPEN_PATHS:
            return None
        given = _headers(scope, b"authorization")
        if len(given) > 1:
            raise APIError(400, "more than one Authorization header", param="Authorization")
        scheme, _, token = (given[0] if given else b"").partition(b" ")
        digest = _digest(token if scheme.lower() == b"bearer" else b"")
        tenant = None
        for key_digest, key_tenant in self.keys:  # no early exit: every key costs the same
            if secrets.compare_digest(digest, key_digest):
                tenant = key_tenant
        if tenant is None:
            raise APIError(401, "invalid or missing API key")
        return tenant

    def _too_large(self) -> APIError:
        return APIError(413, f"request body over {self.max_body} bytes", headers=_CLOSE)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None for a request without one (then nothing is read). Raises
        APIError 413 / 408 (with `Connection: close`), or ClientDisconnected."""
        lengths = _headers(scope, b"content-length")
        if not lengths and not _headers(scope, b"transfer-encoding"):
            return None
        if any(value.strip().isdigit() and int(value) > self.max_body for value in lengths):
            raise self._too_large()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_read_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                text = f"request body not received within {self.body_read_timeout:g} s"
                raise APIError(408, text, headers=_CLOSE) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that returns `body` as one message, then defers to the server's `receive`
    (which reports `http.disconnect` when the client goes away)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
