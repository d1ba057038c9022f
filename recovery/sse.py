"""The live alert stream as Server-Sent Events, from the alerts topic.

The event id is the Kafka offset on the topic's single partition, so a client reconnecting with
`Last-Event-ID: n` resumes at offset n + 1 and misses nothing the topic still holds. Without an
id the stream starts at the end of the log, fixed before the first byte is sent (an alert
published after the client saw the stream open is always delivered).

Live events come from the process's `AlertHub`: the alert feed's one consumer decodes and formats
each alert once, for every open stream, off the API's event loop. A stream reads the topic with
a consumer of its own only while it is behind the hub (a resume from an older id) or after it
fell too far behind it (a slow client), then joins the hub again; without a hub (no alert feed
in this process) it always reads the topic itself.

A stream may leave out alerts whose sighting is older than `max_age_ms` (police without the
supervisor role: the 90-day rule), and ends once `allowed()` says no (its key was revoked:
checked after every wait, which is at most a second, and the hub wakes its streams at once when
a key is revoked here). `delivered` counts the events written, for the audit.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from math import isfinite
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from core.records.alerts import ALERT_FIELDS, Alert, decode_alerts
from recovery import schemas
from recovery.exceptions import InvalidRequest

SSE_CLIENTS = Gauge("tagtrail_api_sse_clients", "Open alert streams")
SSE_EVENTS = Counter("tagtrail_api_sse_events_total", "Alert events sent to stream clients")
KEEPALIVE_S = 15.0
RETRY_MS = 2000
# Large enough that a burst of alerts reaches a client in one or two fetches: with the default
# (1 MB per partition) a burst waits for a broker round trip per few thousand alerts.
FETCH_BYTES = 16 * 1024 * 1024
EVENTS_PER_WRITE = 5000
# Events a stream may have queued from the hub, unwritten (a slow client): beyond this it leaves
# the hub and reads the topic itself from where it is, at its own pace.
MAX_QUEUED_EVENTS = 200_000
NEVER_OLD = 2**63 - 1  # the sighting time of an undecodable record: it carries no position


def alert_json(a: Alert, offset: int) -> dict[str, object]:
    """An alert for API clients (`schemas.Alert`): not stored yet, so created_at is when its
    read was published; the stream position is its event_id."""
    fields: dict[str, object] = {f: getattr(a, f) for f in ALERT_FIELDS}
    out = schemas.Alert(**fields, created_at=a.read_published_ms, event_id=offset)
    return out.model_dump()


_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def event_data(a: Alert, offset: int) -> str:
    """`json.dumps(alert_json(a, offset))` spelt out (tests hold the two equal): a burst of
    thousands of alerts is formatted on the API's event loop, ahead of the client's receipt,
    and building the model for each would hold the loop several times longer."""
    lat, lon = a.lat, a.lon
    if type(lat) is not float or type(lon) is not float or not isfinite(lat + lon):
        return json.dumps(alert_json(a, offset))  # NaN/inf are spelled differently from repr
    return (
        f'{{"alert_id": {_json_str(a.alert_id)}, "case_id": {_json_str(a.case_id)}, '
        f'"tag_id": {a.tag_id:d}, "reader_id": {a.reader_id:d}, "first_ts": {a.first_ts:d}, '
        f'"last_ts": {a.last_ts:d}, "lat": {lat!r}, "lon": {lon!r}, "h3_r9": "{a.h3_r9:x}", '
        f'"created_at": {a.read_published_ms:d}, "event_id": {offset:d}}}'
    )


def format_events(offsets: Sequence[int], alerts: Sequence[Alert | None]) -> list[str]:
    """The SSE events of fetched alert records (an undecodable one is an `invalid` event: the
    client's position still advances past it, so a reconnect does not loop on it)."""
    return [
        f"id: {off}\nevent: alert\ndata: {event_data(a, off)}\n\n"
        if a is not None
        else f"id: {off}\nevent: invalid\ndata: {{}}\n\n"
        for off, a in zip(offsets, alerts, strict=True)
    ]


class _Fetch(NamedTuple):
    """One fetch as the hub hands it out: its events and each alert's sighting end (last_ts)."""

    offsets: list[int]
    events: list[str]
    seen: list[int]
    oldest: int  # min(seen)


_WAKE = _Fetch([], [], [], NEVER_OLD)  # no events: the stream re-checks (dropped, revoked)


def _seen(alerts: Sequence[Alert | None]) -> list[int]:
    return [a.last_ts if a is not None else NEVER_OLD for a in alerts]


@dataclass(eq=False)
class _Subscription:
    queue: asyncio.Queue[_Fetch]
    queued: int = 0  # events put and not yet taken
    dropped: bool = False  # fell too far behind: the stream reads the topic itself


@dataclass
class AlertHub:
    """The alert feed's fetches, formatted once and handed to every subscribed stream.

    `publish` runs on the feed's thread, streams on `loop` (the API's): a lock orders subscribing
    against publishing, so a subscriber gets exactly the fetches from `position` on."""

    loop: asyncio.AbstractEventLoop
    position: int  # offset of the next alert published
    _subs: set[_Subscription] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self) -> tuple[_Subscription, int]:
        sub = _Subscription(asyncio.Queue())
        with self._lock:
            self._subs.add(sub)
            return sub, self.position

    def unsubscribe(self, sub: _Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def taken(self, sub: _Subscription, n: int) -> None:
        with self._lock:
            sub.queued -= n

    def wake(self) -> None:
        """Wake every stream now (a key was revoked: they re-check theirs)."""
        with self._lock:
            for sub in self._subs:
                self.loop.call_soon_threadsafe(sub.queue.put_nowait, _WAKE)

    def publish(self, offsets: list[int], alerts: Sequence[Alert | None]) -> None:
        """Hand one fetch (offsets ascending, after `position`) to every stream."""
        if not offsets:
            return
        # Formatted outside the lock, unless nobody listens (a stream subscribing meanwhile is
        # caught below, under the lock).
        fetch = self._fetch(offsets, alerts) if self._subs else None
        with self._lock:
            if fetch is None:
                if not self._subs:
                    self.position = offsets[-1] + 1
                    return
                fetch = self._fetch(offsets, alerts)
            self.position = offsets[-1] + 1
            n = len(fetch.events)
            for sub in list(self._subs):
                if sub.queued + n > MAX_QUEUED_EVENTS:
                    sub.dropped = True  # the stream sees it at its next chunk or wake-up
                    self._subs.discard(sub)
                    self.loop.call_soon_threadsafe(sub.queue.put_nowait, _WAKE)
                    continue
                sub.queued += n
                self.loop.call_soon_threadsafe(sub.queue.put_nowait, fetch)

    @staticmethod
    def _fetch(offsets: list[int], alerts: Sequence[Alert | None]) -> _Fetch:
        seen = _seen(alerts)
        return _Fetch(offsets, format_events(offsets, alerts), seen, min(seen))


class AlertStream:
    """Open with `await start()`, then iterate `events()`; `close()` in a finally."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        last_event_id: int | None,
        hub: AlertHub | None = None,
        *,
        max_age_ms: int | None = None,
        allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.tp = TopicPartition(topic, 0)
        self.last_event_id = last_event_id
        self.hub = hub
        self.max_age_ms = max_age_ms  # leave out alerts whose sighting ended longer ago
        self.allowed = allowed  # False: end the stream (its key was revoked)
        self.delivered = 0  # events written to the client
        self.next = 0  # offset of the next event this stream sends
        self._counted = False
        self._consumer: AIOKafkaConsumer | None = None
        self._sub: _Subscription | None = None
        self._hub_from = 0  # while catching up: the offset from which the hub has it all

    async def _open_consumer(self) -> AIOKafkaConsumer:
        """A consumer of its own on the topic's partition (positioned by the caller)."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
        )
        await self._consumer.start()
        self._consumer.assign([self.tp])
        return self._consumer

    async def start(self) -> None:
        """Fix the stream's start; InvalidRequest for a last event id past the end of the log
        (no event of this stream has it: seeking there would wait for it, or start over)."""
        consumer = await self._open_consumer()
        SSE_CLIENTS.inc()
        self._counted = True
        end = (await consumer.end_offsets([self.tp]))[self.tp]
        if self.last_event_id is None:
            self.next = end
        elif self.last_event_id >= end:
            raise InvalidRequest(
                f"Last-Event-ID (or after) {self.last_event_id} is not an event of this stream "
                f"(the latest is {end - 1}); send -1 to replay all, or none to start live"
            )
        else:
            self.next = self.last_event_id + 1
        consumer.seek(self.tp, self.next)

    async def events(self) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        idle_since = time.monotonic()
        while True:
            chunk = await self._next_chunk()
            # After every wait (a second at most), before anything more is sent.
            if self.allowed is not None and not await self.allowed():
                yield ": access revoked\n\n"
                return
            if chunk is None:
                if time.monotonic() - idle_since > KEEPALIVE_S:
                    idle_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            idle_since = time.monotonic()
            SSE_EVENTS.inc(chunk[1])
            yield chunk[0]
            self.delivered += chunk[1]

    def _cutoff(self) -> int:
        """Alerts whose sighting ended before this are left out (0: none are)."""
        return 0 if self.max_age_ms is None else int(time.time() * 1000) - self.max_age_ms

    async def _next_chunk(self) -> tuple[str, int] | None:
        """The next events to write and their count; None after a second with none."""
        hub = self.hub
        if hub is not None and self._sub is None:
            self._sub, position = hub.subscribe()
            if position <= self.next:  # the hub has nothing this stream still needs
                await self._stop_consumer()
            else:
                self._hub_from = position
        sub = self._sub
        if sub is not None and self._consumer is None:
            return await self._from_hub(sub)
        return await self._from_topic()

    async def _from_hub(self, sub: _Subscription) -> tuple[str, int] | None:
        try:
            fetch = await asyncio.wait_for(sub.queue.get(), 1.0)
        except TimeoutError:
            return None
        assert self.hub is not None
        offsets, events = fetch.offsets, fetch.events
        self.hub.taken(sub, len(events))
        if not offsets:
            if sub.dropped:  # too far behind: read on from the topic
                self._sub = None
                (await self._open_consumer()).seek(self.tp, self.next)
            return None  # (or woken to re-check its key)
        start, cutoff = self.next, self._cutoff()
        self.next = max(start, offsets[-1] + 1)
        if offsets[0] < start or fetch.oldest < cutoff:
            # Published before this stream's position, or alerts too old for this caller.
            seen = fetch.seen
            keep = [i for i, off in enumerate(offsets) if off >= start and seen[i] >= cutoff]
            if not keep:
                return None
            events = [events[i] for i in keep]
        return "".join(events), len(events)

    async def _from_topic(self) -> tuple[str, int] | None:
        consumer = self._consumer
        assert consumer is not None
        batches = await consumer.getmany(self.tp, timeout_ms=1000, max_records=EVENTS_PER_WRITE)
        msgs = batches.get(self.tp, [])
        caught_up = False
        if self._sub is not None:
            # Catching up to the hub, whose queue holds every event from `_hub_from` on.
            caught_up = bool(msgs) and msgs[-1].offset >= self._hub_from - 1
            msgs = [m for m in msgs if m.offset < self._hub_from]
        if caught_up:
            await self._stop_consumer()
        if not msgs:
            return None
        self.next = msgs[-1].offset + 1
        alerts = decode_alerts([m.value for m in msgs])
        cutoff = self._cutoff()
        if cutoff:  # leave out alerts too old for this caller
            seen = _seen(alerts)
            msgs = [m for m, t in zip(msgs, seen, strict=True) if t >= cutoff]
            alerts = [a for a, t in zip(alerts, seen, strict=True) if t >= cutoff]
            if not msgs:
                return None
        events = format_events([m.offset for m in msgs], alerts)
        return "".join(events), len(events)

    async def _stop_consumer(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def close(self) -> None:
        """Leave the hub and stop the consumer (idempotent; safe after a failed start)."""
        if self._counted:
            SSE_CLIENTS.dec()
            self._counted = False
        if self._sub is not None and self.hub is not None:
            self.hub.unsubscribe(self._sub)
            self._sub = None
        await self._stop_consumer()
