"""Owner notifications: webhook POSTs sent in background tasks, retried with backoff.

Never awaited by the request or the alerts follower that triggers them, so a slow or dead
webhook cannot delay alerting. A notification that still fails after the last retry is logged
and counted (the case itself is unaffected).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from recovery.webhook_policy import WebhookPolicy

log = logging.getLogger(__name__)

WEBHOOKS = Counter("tagtrail_webhooks_total", "Owner webhook deliveries", ["outcome"])


def _where(url: str) -> str:
    # Webhook URLs often carry a token in their path or query: log only scheme and host.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


class Notifier:
    def __init__(
        self,
        delays_s: tuple[float, ...] = (0.5, 1, 2, 4, 8),
        timeout_s: float = 5.0,
        policy: WebhookPolicy | None = None,
    ):
        self.delays_s = delays_s
        self.policy = policy if policy is not None else WebhookPolicy()
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
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
        # Checked at delivery too: the host may resolve to a private address since registration.
        refused = await self.policy.check_delivery(url)
        if refused is not None:
            WEBHOOKS.labels("refused").inc()
            log.warning("webhook %s refused: %s", _where(url), refused)
            return False
        for attempt in range(len(self.delays_s) + 1):
            try:
                r = await self._client.post(url, json=payload)
                # 4xx other than 408/429 will not get better by retrying.
                if r.status_code < 300:
                    WEBHOOKS.labels("delivered").inc()
                    return True
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    break
            except httpx.HTTPError as e:
                log.info("webhook %s attempt %d failed: %s", _where(url), attempt + 1, e)
            if attempt < len(self.delays_s):
                await asyncio.sleep(self.delays_s[attempt])
        WEBHOOKS.labels("failed").inc()
        log.warning("webhook %s: giving up on %s", _where(url), payload.get("event"))
        return False

    async def close(self, wait_s: float = 2.0) -> None:
        """Give pending deliveries `wait_s` to finish, cancel the rest, close the client."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=wait_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()
