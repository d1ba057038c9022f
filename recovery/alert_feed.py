"""Follows the alerts topic into the store's alerts table and acts on each case's first alert.

The topic has one partition; its offset is the alert's stream position (the SSE event id). The
follower resumes after the highest offset already stored, and storing is idempotent (alert_id is
the table key, the offset range the insert's dedup token), so restarts neither lose nor double.
The first alert of an open case marks it spotted (hotlist and owner webhook follow). Every API
replica stores alerts (idempotently, for its SSE clients), but only one acts on them: the member
of the consumer group `<group>-alert-actions` that holds the topic's one partition, so several
replicas never mark a case twice or call the owner's webhook twice.

Both consumers run on a thread with an event loop of its own: a burst of thousands of alerts is
parsed, decoded and stored there, not on the API's loop. Each fetch is decoded once: formatted
for the live streams first (`recovery.sse.AlertHub`, so police see it before it is stored), then
stored. A store that is down or busy holds up storing, not the live streams, for up to
STORE_BACKLOG_ALERTS alerts. Acting on a first alert (a few per burst) runs on the API's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from core.loop_thread import LoopThread
from core.records.alerts import ALERT_FIELDS, Alert, decode_alerts
from recovery import casework
from recovery.exceptions import NotFound
from recovery.sse import FETCH_BYTES, AlertHub
from recovery.state import ServiceState
from store import cases
from store.accounts import now_ms

log = logging.getLogger(__name__)
RETRY_S = 1.0
# Alerts decoded and sent live but not yet stored before fetching (and with it the live streams)
# waits for the store: a bound on memory while the store is down or busy. Counted in alerts, not
# fetches, because under load alerts arrive in many small fetches, and a bound in fetches would
# hold up the live streams whenever the store is briefly busy with the sinks' inserts.
STORE_BACKLOG_ALERTS = 20_000
# A wait for the store longer than this is logged: the live streams were held that long.
SLOW_STORE_S = 0.5
ALERTS_STORED = Counter("tagtrail_api_alerts_stored_total", "Alerts the API stored from the topic")


def alert_rows(msgs: list[Any], alerts: list[Alert | None]) -> list[dict[str, Any]]:
    """The alerts table's rows for fetched alert records and their decoded alerts (undecodable
    ones logged, skipped)."""
    rows = []
    created_at = now_ms()
    for m, a in zip(msgs, alerts, strict=True):
        if a is None:
            log.error("alerts offset %d: undecodable record skipped", m.offset)
            continue
        row = {f: getattr(a, f) for f in ALERT_FIELDS}
        row["created_at"], row["stream_offset"] = created_at, m.offset
        rows.append(row)
    return rows


def first_alerts(msgs: list[Any], settled: AbstractSet[str]) -> dict[str, Alert]:
    """The first alert of each case not `settled`, in fetch order."""
    firsts: dict[str, Alert] = {}
    # Workers key alerts by case id: settled cases' alerts need no decoding.
    todo = [m.value for m in msgs if m.key is None or m.key.decode(errors="replace") not in settled]
    for a in decode_alerts(todo):
        # (an undecodable record is logged by the storing loop, which sees them all)
        if a is not None and a.case_id not in settled:
            firsts.setdefault(a.case_id, a)
    return firsts


class StoreBacklog:
    """Fetches sent live and waiting to be stored, bounded by their alerts (queued or being
    stored). A fetch larger than the bound goes in alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fetches: list[tuple[int, list[dict[str, Any]]]] = []
        self.held = 0  # alerts queued or being stored
        self._changed = asyncio.Condition()

    def _room_for(self, n: int) -> bool:
        return self.held == 0 or self.held + n <= self.limit

    async def put(self, last_offset: int, rows: list[dict[str, Any]]) -> float:
        """Queue a fetch's rows, waiting for room; the seconds waited."""
        async with self._changed:
            t0 = time.monotonic()
            await self._changed.wait_for(lambda: self._room_for(len(rows)))
            self._fetches.append((last_offset, rows))
            self.held += len(rows)
            self._changed.notify_all()
            return time.monotonic() - t0

    async def take_all(self) -> tuple[int, list[dict[str, Any]]]:
        """Every queued fetch as one list of rows (one insert), with the last one's offset;
        `stored(len(rows))` once they are."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._fetches))
            fetches, self._fetches = self._fetches, []
        return fetches[-1][0], [row for _, rows in fetches for row in rows]

    async def stored(self, n: int) -> None:
        async with self._changed:
            self.held -= n
            self._changed.notify_all()


class AlertFeed:
    def __init__(self, ctx: ServiceState) -> None:
        self.ctx = ctx
        self.stored_offset = -1  # highest offset in the store
        self.stored: asyncio.Condition | None = None  # on the feed's loop
        self._settled: set[str] = set()  # cases whose alerts need no action (any more)
        self._consumer: AIOKafkaConsumer | None = None
        self._actions: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._api_loop: asyncio.AbstractEventLoop | None = None
        self._thread = LoopThread("alert-feed")
        self.hub: AlertHub | None = None

    async def start(self) -> None:
        self.stored_offset = await self.ctx.runner.run(cases.last_alert_offset)
        self._api_loop = asyncio.get_running_loop()
        self.hub = AlertHub(self._api_loop, self.stored_offset + 1)
        await self._thread.start(self._main)

    async def stop(self) -> None:
        await self._thread.stop(self._cancel, timeout_s=30)

    def _cancel(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def _main(self, started: Future[None]) -> None:
        """The feed thread: both consumers, until `stop`."""
        self.stored = asyncio.Condition()
        try:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.ctx.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=FETCH_BYTES,  # a burst in one fetch
            )
            await self._consumer.start()
            tp = TopicPartition(self.ctx.settings.topic_alerts, 0)
            self._consumer.assign([tp])
            self._consumer.seek(tp, self.stored_offset + 1)
            self._actions = AIOKafkaConsumer(
                self.ctx.settings.topic_alerts,
                bootstrap_servers=self.ctx.bootstrap,
                group_id=f"{self.ctx.settings.consumer_group}-alert-actions",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=FETCH_BYTES,
            )
            await self._actions.start()
        except BaseException:
            await self._stop_consumers()
            raise  # the caller of `start` raises it (LoopThread)
        started.set_result(None)
        self._tasks = [asyncio.create_task(self._run(tp)), asyncio.create_task(self._act())]
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("alert feed stopped: %r", result, exc_info=result)
        await self._stop_consumers()

    async def _stop_consumers(self) -> None:
        for c in (self._consumer, self._actions):
            if c is not None:
                await c.stop()

    async def _run(self, tp: TopicPartition) -> None:
        consumer, hub = self._consumer, self.hub
        if consumer is None or hub is None:
            return
        backlog = StoreBacklog(STORE_BACKLOG_ALERTS)
        storing = asyncio.create_task(self._store(backlog))
        try:
            while True:
                batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                msgs = batches.get(tp, [])
                if not msgs:
                    continue
                alerts = decode_alerts([m.value for m in msgs])
                hub.publish([m.offset for m in msgs], alerts)  # live streams first
                waited = await backlog.put(msgs[-1].offset, alert_rows(msgs, alerts))
                if waited >= SLOW_STORE_S:
                    log.warning(
                        "live alert streams waited %.1f s for the store (%d alerts not stored)",
                        waited, backlog.held,
                    )  # fmt: skip
        finally:
            storing.cancel()

    async def _store(self, backlog: StoreBacklog) -> None:
        """Store the queued fetches in order, all that are waiting in one insert, retried until
        stored: moving on would leave a hole in the alert history."""
        while True:
            # Everything queued goes in one insert: under load alerts come in many small
            # fetches, and an insert costs about the same whatever its size.
            last_offset, rows = await backlog.take_all()
            while True:
                try:
                    await self.ctx.runner.run(cases.insert_alerts, rows)
                    break
                except Exception as e:
                    log.warning("storing %d alerts failed (%s); retrying", len(rows), e)
                    await asyncio.sleep(RETRY_S)
            ALERTS_STORED.inc(len(rows))
            await backlog.stored(len(rows))
            assert self.stored is not None
            async with self.stored:
                self.stored_offset = last_offset
                self.stored.notify_all()

    async def _act(self) -> None:
        """The group member holding the partition acts on each alert once it is stored here."""
        consumer, stored = self._actions, self.stored
        if consumer is None or stored is None:
            return
        acted = -1  # the highest offset acted on here
        while True:
            # Fetched (records parsed) only once something new is stored: a burst's parsing
            # then comes after the live streams' and storing's, not alongside them.
            async with stored:
                await stored.wait_for(lambda a=acted: self.stored_offset > a)
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for msgs in batches.values():
                async with stored:  # act on stored alerts only: the case page shows them
                    await stored.wait_for(lambda m=msgs: self.stored_offset >= m[-1].offset)
                # A case is acted on at its first alert; the rest of a burst (thousands of
                # alerts of a few hundred cases) costs a set lookup each, not a store query.
                firsts = first_alerts(msgs, self._settled)  # changed only while awaited below
                if firsts:  # casework belongs to the API's loop (its producer, its locks)
                    assert self._api_loop is not None
                    await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(self._first_alerts(firsts), self._api_loop)
                    )
                acted = max(acted, msgs[-1].offset)
            if batches:
                # A replica that dies before this commit leaves the batch to the next holder:
                # marking spotted is idempotent (a spotted case is not marked again).
                await consumer.commit()

    async def _first_alerts(self, firsts: dict[str, Alert]) -> None:
        """Act on the first alert of each case: one lookup for all, then each open case."""
        if not firsts:
            return
        try:
            found = await self.ctx.runner.run(cases.get_cases, list(firsts))
        except Exception as e:  # the store: these cases' next alerts try again
            log.warning("%d cases: could not look up: %s", len(firsts), e)
            return
        unknown = [c for c in firsts if c not in found]
        if unknown:
            # Hotlist entries written by something else than this service: nothing to mark,
            # now or at their next alerts.
            log.warning(
                "%d alerted cases unknown here, not marked spotted (first: %s)",
                len(unknown), unknown[0],
            )  # fmt: skip
            self._settled.update(unknown)
        for case_id, case in found.items():
            if case["status"] != "open":
                self._settled.add(case_id)
            else:
                await self._first_alert(firsts[case_id])

    async def _first_alert(self, a: Alert) -> None:
        try:
            case = await casework.change_status(
                self.ctx, a.case_id, "spotted", actor="alerts", note=f"reader {a.reader_id}",
                caller=None,
            )  # fmt: skip
        except NotFound as e:
            # No such case here (a hotlist entry written by something else than this service):
            # nothing to mark, now or at its next alert.
            log.warning("case %s: not marked spotted: %s", a.case_id, e)
            self._settled.add(a.case_id)
            return
        except Exception as e:  # the store, broker, or not started: its next alert tries again
            log.warning("case %s: could not mark spotted: %s", a.case_id, e)
            return
        if case["status"] != "open":
            self._settled.add(a.case_id)
