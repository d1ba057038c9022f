"""Test helpers for the recovery service: a running service, an SSE reader, seeded sightings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from benchmarks import background_api as background
from benchmarks.background_api import Service
from core.config import Settings
from recovery.notify import Notifier
from recovery.ratelimit import RateLimiter
from recovery.webhook_policy import WebhookPolicy

__all__ = ["SSEClient", "Service", "running_service", "seed_sightings"]


@contextmanager
def running_service(settings: Settings, **ctx_args: Any) -> Iterator[Service]:
    """A service with generous rate limits and fast webhook retries (tests change them)."""
    ctx_args.setdefault("limiter", RateLimiter(rate_per_s=1000, burst=1000))
    policy = WebhookPolicy.from_settings(settings)
    ctx_args.setdefault("notifier", Notifier(delays_s=(0.1, 0.2, 0.4), policy=policy))
    with background.running_service(settings, **ctx_args) as svc:
        yield svc


class SSEClient:
    """A blocking Server-Sent Events reader over httpx, for tests."""

    def __init__(self, url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=30.0))
        self._cm = self._client.stream("GET", url, headers=headers, params=params)
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []
        if self.response.status_code == 200:
            self._read_block()  # the "connected" preamble: the start position is now fixed

    def _read_block(self) -> dict[str, str]:
        block: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if block or self.comments:
                    return block
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            block[name] = block.get(name, "") + value.lstrip()
        return block

    def events(self, n: int) -> list[dict[str, str]]:
        """The next `n` events (id, event, data), skipping comments; raises on read timeout."""
        out: list[dict[str, str]] = []
        while len(out) < n:
            b = self._read_block()
            if "data" in b:
                out.append(b)
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self._client.close()


def seed_sightings(svc: Service, tag_id: int, points: list[tuple[int, int, float, float]]) -> None:
    """Store sightings of one tag: (reader_id, first_ts, lat, lon) each, 10 s long."""
    import numpy as np
    from h3.api import basic_int as h3i

    from store.writes import insert_sightings

    n = len(points)
    cols = {
        "tag_id": np.full(n, tag_id, np.uint64),
        "reader_id": np.array([p[0] for p in points], np.uint32),
        "first_ts": np.array([p[1] for p in points], np.int64),
        "last_ts": np.array([p[1] + 10_000 for p in points], np.int64),
        "n_reads": np.full(n, 3, np.uint32),
        "max_rssi": np.full(n, -50, np.int8),
        "lat": np.array([p[2] for p in points]),
        "lon": np.array([p[3] for p in points]),
        **{
            f"h3_r{r}": np.array([h3i.latlng_to_cell(p[2], p[3], r) for p in points], np.uint64)
            for r in (7, 9, 12)
        },
    }
    svc.call(svc.ctx.runner.run(insert_sightings, cols, version=1))
