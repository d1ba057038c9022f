"""Token buckets: each key (an API key's id, a client address) may make `rate_per_s` requests a
second, bursts of `burst`.

In memory per process: with several API processes each enforces its own share, which is enough
to stop a runaway client or a scraping key without a shared store on the request path. Buckets
that have refilled are dropped once there are more than `max_keys`, so a client rotating
addresses or keys cannot grow the table without bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate_per_s: float = 50.0
    burst: int = 200
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("rate limiter: rate_per_s must be > 0 and burst >= 1")

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate_per_s)

    def take(self, key: str) -> float:
        """Spend one token for `key`; return 0 if allowed, else seconds until one is available."""
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._prune(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0: it has one now); spends nothing."""
        tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s

    def _prune(self, now: float) -> None:
        full = float(self.burst)
        self._buckets = {
            k: (t, at)
            for k, (t, at) in self._buckets.items()
            if t + (now - at) * self.rate_per_s < full
        }
        if len(self._buckets) >= self.max_keys:  # all busy: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[self.max_keys // 2 :]
            self._buckets = dict(keep)
