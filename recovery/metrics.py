"""The recovery service's case metrics (charted on the recovery dashboard, listed in
docs/operations.md), updated where the cases change: `recovery.casework`.

- `tagtrail_open_cases`: cases open or spotted, as the case store counts them (every replica
  reports the store's count; the dashboard takes the max). Set when the service starts, after
  every transition (coalesced: a burst of changes costs one count), and every `interval_s`, so
  changes made through another replica show too.
- `tagtrail_report_to_first_alert_seconds`: theft report accepted -> the case's first alert
  (the alert feed marking it spotted).
- `tagtrail_recoveries_total`: cases marked recovered, by owner or police.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from store import cases
from store.runner import StoreRunner

log = logging.getLogger(__name__)

REPORT_TO_FIRST_ALERT = Histogram(
    "tagtrail_report_to_first_alert_seconds",
    "Theft report accepted to first alert of the case",
    buckets=(1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400),
)
OPEN_CASES = Gauge("tagtrail_open_cases", "Theft cases open or spotted")
RECOVERIES = Counter("tagtrail_recoveries_total", "Stolen bikes recovered")


def case_moved(case: dict[str, Any], previous: str, *, by_alert: bool) -> None:
    """A case was stored with a new status (`previous` -> case["status"])."""
    status = case["status"]
    if status == "recovered" and previous != "recovered":
        RECOVERIES.inc()
    elif status == "spotted" and previous == "open" and by_alert:
        # updated_at: when its first alert was acted on (within a second of the alert).
        waited_ms = int(case["updated_at"]) - int(case["reported_at"])
        REPORT_TO_FIRST_ALERT.observe(max(waited_ms, 0) / 1000)


class OpenCasesGauge:
    """Keeps `tagtrail_open_cases` at the store's count of open and spotted cases."""

    def __init__(self, runner: StoreRunner, interval_s: float = 60.0) -> None:
        self.runner = runner
        self.interval_s = interval_s
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Count now and set the gauge (a store error is logged: the gauge keeps its value)."""
        try:
            n = await self.runner.run(cases.count_active_cases)
        except Exception as e:
            log.warning("open cases not counted: %s", e)
            return
        OPEN_CASES.set(n)

    def touch(self) -> None:
        """A case changed: count again soon (one count for a burst of changes)."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="tagtrail-open-cases")

    async def _drain(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._loop = asyncio.create_task(self._every(), name="tagtrail-open-cases-poll")

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, self._task) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
