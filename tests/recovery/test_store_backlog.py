"""The alert feed's store backlog: bounded by alerts, not fetches; the live streams wait only
when that many alerts are not yet stored."""

from __future__ import annotations

import asyncio
from typing import Any

from recovery.alert_feed import StoreBacklog


def _rows(n: int, at: int = 0) -> list[dict[str, Any]]:
    return [{"stream_offset": at + i} for i in range(n)]


def test_many_small_fetches_queue_without_waiting_and_store_in_one_insert() -> None:
    async def run() -> None:
        backlog = StoreBacklog(limit=100)
        for k in range(90):  # 90 fetches of one alert: far more fetches than the old bound
            assert await backlog.put(k, _rows(1, k)) < 0.05
        last, rows = await backlog.take_all()
        assert last == 89 and [r["stream_offset"] for r in rows] == list(range(90))
        assert backlog.held == 90  # held until stored
        await backlog.stored(len(rows))
        assert backlog.held == 0

    asyncio.run(run())


def test_a_full_backlog_holds_the_next_fetch_until_stored() -> None:
    async def run() -> None:
        backlog = StoreBacklog(limit=10)
        await backlog.put(5, _rows(6))
        _, rows = await backlog.take_all()  # being stored: still held
        waiting = asyncio.create_task(backlog.put(9, _rows(5, 6)))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 6 + 5 > 10
        await backlog.stored(len(rows))
        assert await asyncio.wait_for(waiting, 1) > 0.04
        assert await backlog.take_all() == (9, _rows(5, 6))

    asyncio.run(run())


def test_a_fetch_larger_than_the_bound_goes_in_alone() -> None:
    async def run() -> None:
        backlog = StoreBacklog(limit=10)
        assert await asyncio.wait_for(backlog.put(49, _rows(50)), 1) < 0.05
        late = asyncio.create_task(backlog.put(50, _rows(1, 50)))
        await asyncio.sleep(0.05)
        assert not late.done()
        _, rows = await backlog.take_all()
        await backlog.stored(len(rows))
        await asyncio.wait_for(late, 1)

    asyncio.run(run())
