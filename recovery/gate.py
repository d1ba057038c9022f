"""The front door of the keyed routes: a pure ASGI middleware ahead of routing and body parsing.

Before a byte of a request's body is read it applies, in order: the client address's limit (to
every keyed request), the key (401 without one, or for an unknown or revoked one), the limit on
unknown keys per client address (429 without a store lookup once spent: guessing keys costs the
service nothing), and the key's own limit. The principal it found travels in the ASGI scope to
the routes' `Caller` dependency. Every /v1 answer, refusals included, says `Cache-Control:
no-store`: they carry positions and personal data.

Keyed: everything under /v1, /metrics unless `metrics_open`, and the API's docs (/docs, /redoc,
/openapi.json) when `api_docs` is "key". The client address is the ASGI client (the socket's
peer, or what a proxy trusted by `trusted_proxies` says); IPv6 clients count by their /64.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recovery.auth import Principal
from recovery.exceptions import RateLimited, RecoveryError, Unauthenticated
from recovery.http_errors import retry_after, status_of
from recovery.ratelimit import RateLimiter
from recovery.state import ServiceState
from store.exceptions import StoreError

# Where the front door leaves the caller for `recovery.deps.get_principal`.
PRINCIPAL = "tagtrail.principal"
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def client_address(scope: Scope) -> str:
    """Whose limits a request spends: the client's IPv4 address or IPv6 /64."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def api_key(headers: Headers) -> str:
    """The key of `Authorization: Bearer <key>` (or `X-Api-Key`); empty when there is none."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()


@dataclass
class FrontDoor:
    """The service's limits per client address and its key check, for the gate and `Caller`."""

    ctx: ServiceState
    per_address: RateLimiter
    bad_keys: RateLimiter

    @classmethod
    def for_context(cls, ctx: ServiceState) -> FrontDoor:
        s = ctx.settings
        return cls(
            ctx,
            RateLimiter(s.api_address_rate_per_s, s.api_address_rate_burst),
            RateLimiter(s.api_bad_key_rate_per_s, s.api_bad_key_burst),
        )

    def keyed(self, path: str) -> bool:
        """Whether `path` needs a key (before routing: unknown /v1 paths do too)."""
        s = self.ctx.settings
        if path == "/v1" or path.startswith("/v1/"):
            return True
        if path == "/metrics":
            return not s.metrics_open
        return path in DOC_PATHS and s.api_docs == "key"

    async def authenticate(self, scope: Scope) -> Principal:
        """The caller of a keyed request, or Unauthenticated / RateLimited."""
        key = api_key(Headers(scope=scope))
        local = self.ctx.local_admin_key
        if key and local and hmac.compare_digest(key.encode(), local.encode()):
            # The operator's own CLI on this machine: never stored, never limited.
            p = await self.ctx.principal_for(key)
            assert p is not None
            return p
        addr = client_address(scope)
        wait_s = self.per_address.take(addr)
        if wait_s > 0:
            raise RateLimited("rate limit exceeded for this client address", retry_after_s=wait_s)
        if not key:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        wait_s = self.bad_keys.wait(addr)
        if wait_s > 0:
            raise RateLimited(
                "too many unknown keys from this client address", retry_after_s=wait_s
            )
        p = await self.ctx.principal_for(key)
        if p is None:
            self.bad_keys.take(addr)
            raise Unauthenticated("unknown or revoked API key")
        wait_s = self.ctx.limiter.take(p.key_id)
        if wait_s > 0:
            raise RateLimited("rate limit exceeded for this key", retry_after_s=wait_s)
        return p


def refusal(exc: RecoveryError | StoreError) -> JSONResponse:
    """The answer to a request refused at the door (as `recovery.http_errors` would give it)."""
    if isinstance(exc, StoreError):
        return JSONResponse(
            {"error": "the store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": retry_after(getattr(exc, "retry_after_s", None))},
        )
    headers = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retriable:
        headers["Retry-After"] = retry_after(getattr(exc, "retry_after_s", None))
    return JSONResponse({"error": str(exc)}, status_code=status_of(exc), headers=headers or None)


def _no_store(send: Send) -> Send:
    async def send_no_store(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
            ]
            headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return send_no_store


class Gate:
    """ASGI middleware: `FrontDoor` on keyed paths, no-store on /v1, before any body is read."""

    def __init__(self, app: ASGIApp, door: FrontDoor) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            send = _no_store(send)
        if self.door.keyed(path):
            try:
                scope[PRINCIPAL] = await self.door.authenticate(scope)
            except (Unauthenticated, RateLimited) as e:
                await refusal(e)(scope, receive, send)
                return
            except StoreError as e:
                if not e.retriable:
                    raise
                await refusal(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)
