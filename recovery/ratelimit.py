"""Per-key token buckets: each API key may make `rate_per_s` requests a second, bursts of `burst`.

In memory per process: with several API processes each enforces its own share, which is enough
to stop a runaway client or a scraping key without a shared store on the request path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    rate_per_s: float = 50.0
    burst: int = 200
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("rate limiter: rate_per_s must be > 0 and burst >= 1")

    def take(self, key: str) -> float:
        """Spend one token for `key`; return 0 if allowed, else seconds until one is available."""
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s
