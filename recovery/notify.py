"""Owner notifications: webhook POSTs sent in background tasks, retried with backoff.

Never awaited by the request or the alerts follower that triggers them, so a slow or dead
webhook cannot delay alerting. A notification that still fails after the last retry is logged
and counted (the case itself is unaffected).

Every connection goes through `CheckedBackend`: it resolves the host, checks every address
against the webhook policy and connects to a checked address, so what was checked is what is
called (a name rebound to an internal address after the check cannot redirect it). TLS still
verifies the certificate against the URL's host name. Redirects are never followed and no proxy
from the environment is used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import typing
from typing import Any
from urllib.parse import urlsplit

import httpcore
from prometheus_client import Counter

from recovery.webhook_policy import WebhookPolicy, WebhookRefused

log = logging.getLogger(__name__)

WEBHOOKS = Counter("tagtrail_webhooks_total", "Owner webhook deliveries", ["outcome"])
# What a failed attempt may raise (anything else is a fault here and propagates).
_TRANSIENT = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    OSError,
)


def _where(url: str) -> str:
    # Webhook URLs often carry a token in their path or query: log only scheme and host.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, resolved and checked at each connect."""

    def __init__(self, policy: WebhookPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.policy.allowed_name(host):  # the operator's own name: trusted as it resolves
            targets = [host]
        else:
            targets = [str(ip) for ip in await self.policy.resolve(host, port)]
        error: Exception = WebhookRefused(f"{host}: no address to connect to")
        for target in targets:
            try:
                return await self._inner.connect_tcp(
                    target,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("webhooks are never delivered over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Notifier:
    def __init__(
        self,
        delays_s: tuple[float, ...] = (0.5, 1, 2, 4, 8),
        timeout_s: float = 5.0,
        policy: WebhookPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.delays_s = delays_s
        self.policy = policy if policy is not None else WebhookPolicy()
        self._timeouts = {k: timeout_s for k in ("connect", "read", "write", "pool")}
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context if ssl_context is not None else ssl.create_default_context(),
            max_connections=100,
            keepalive_expiry=30.0,
            network_backend=CheckedBackend(self.policy),
        )
        self._tasks: set[asyncio.Task[bool]] = set()

    def notify(self, url: str, payload: dict[str, Any]) -> asyncio.Task[bool] | None:
        """Schedule one delivery of `payload` to `url`; returns the task (None without a URL)."""
        if not url:
            return None
        task = asyncio.create_task(self._deliver(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, url: str, payload: dict[str, Any]) -> bool:
        refused = self.policy.check_url(url)
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"user-agent", b"tagtrail-webhook")]
        for attempt in range(len(self.delays_s) + 1):
            if refused is not None:
                break
            try:
                # Only the status is used: the answer's body is never read.
                extensions = {"timeout": self._timeouts}
                async with self._pool.stream(
                    "POST", url, headers=headers, content=body, extensions=extensions
                ) as r:
                    status = r.status
                if status < 300:
                    WEBHOOKS.labels("delivered").inc()
                    return True
                # A redirect is not followed, and a 4xx other than 408/429 will not get better.
                if 300 <= status < 500 and status not in (408, 429):
                    break
            except WebhookRefused as e:
                refused = str(e)
                break
            except _TRANSIENT as e:
                log.info("webhook %s attempt %d failed: %r", _where(url), attempt + 1, e)
            except (httpcore.UnsupportedProtocol, ValueError) as e:  # will not get better
                log.info("webhook %s failed: %r", _where(url), e)
                break
            if attempt < len(self.delays_s):
                await asyncio.sleep(self.delays_s[attempt])
        if refused is not None:
            WEBHOOKS.labels("refused").inc()
            log.warning("webhook %s refused: %s", _where(url), refused)
            return False
        WEBHOOKS.labels("failed").inc()
        log.warning("webhook %s: giving up on %s", _where(url), payload.get("event"))
        return False

    async def close(self, wait_s: float = 2.0) -> None:
        """Give pending deliveries `wait_s` to finish, cancel the rest, close the connections."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=wait_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._pool.aclose()
