"""The live alert stream as Server-Sent Events, read straight from the alerts topic.

Each connection has its own consumer on the topic's single partition (no group): the event id is
the Kafka offset, so a client reconnecting with `Last-Event-ID: n` resumes at offset n + 1 and
misses nothing the topic still holds. Without an id the stream starts at the end of the log,
fixed before the first byte is sent (an alert published after the client saw the stream open is
always delivered).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from math import isfinite

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from stream.alert_records import Alert, decode_alerts

SSE_CLIENTS = Gauge("tagtrail_api_sse_clients", "Open alert streams")
SSE_EVENTS = Counter("tagtrail_api_sse_events_total", "Alert events sent to stream clients")
KEEPALIVE_S = 15.0
RETRY_MS = 2000
# A burst of alerts reaches a client in one or two fetches: at the default 1 MB per partition
# fetch (~3,000 alerts) a burst of 7,000 waited for three broker round trips.
FETCH_BYTES = 16 * 1024 * 1024
EVENTS_PER_WRITE = 5000


def alert_json(a: Alert, offset: int) -> dict[str, object]:
    """An alert for API clients: the cell in hex, the stream position as event_id."""
    return {
        "alert_id": a.alert_id, "case_id": a.case_id, "tag_id": a.tag_id,
        "reader_id": a.reader_id, "first_ts": a.first_ts, "last_ts": a.last_ts, "lat": a.lat,
        "lon": a.lon, "h3_r9": f"{a.h3_r9:x}", "created_at": a.read_published_ms,
        "event_id": offset,
    }  # fmt: skip


_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def event_data(a: Alert, offset: int) -> str:
    """`json.dumps(alert_json(a, offset))`, written directly at a third of its cost: a burst of
    thousands of alerts is formatted on the API's event loop, ahead of the client's receipt."""
    lat, lon = a.lat, a.lon
    if type(lat) is not float or type(lon) is not float or not isfinite(lat + lon):
        return json.dumps(alert_json(a, offset))  # NaN/inf are spelled differently from repr
    return (
        f'{{"alert_id": {_json_str(a.alert_id)}, "case_id": {_json_str(a.case_id)}, '
        f'"tag_id": {a.tag_id:d}, "reader_id": {a.reader_id:d}, "first_ts": {a.first_ts:d}, '
        f'"last_ts": {a.last_ts:d}, "lat": {lat!r}, "lon": {lon!r}, "h3_r9": "{a.h3_r9:x}", '
        f'"created_at": {a.read_published_ms:d}, "event_id": {offset:d}}}'
    )


class AlertStream:
    """Open with `await start()`, then iterate `events()`; `close()` in a finally."""

    def __init__(self, bootstrap: str, topic: str, last_event_id: int | None) -> None:
        self.tp = TopicPartition(topic, 0)
        self.last_event_id = last_event_id
        self._counted = False
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
        )

    async def start(self) -> None:
        await self.consumer.start()
        SSE_CLIENTS.inc()
        self._counted = True
        self.consumer.assign([self.tp])
        if self.last_event_id is None:
            end = (await self.consumer.end_offsets([self.tp]))[self.tp]
            self.consumer.seek(self.tp, end)
        else:
            self.consumer.seek(self.tp, self.last_event_id + 1)

    async def events(self) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        idle_since = time.monotonic()
        while True:
            batches = await self.consumer.getmany(
                self.tp, timeout_ms=1000, max_records=EVENTS_PER_WRITE
            )
            msgs = batches.get(self.tp, [])
            if not msgs:
                if time.monotonic() - idle_since > KEEPALIVE_S:
                    idle_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            idle_since = time.monotonic()
            out = []
            for m, a in zip(msgs, decode_alerts([m.value for m in msgs]), strict=True):
                if a is None:
                    # Still advance the client's position past it, so a reconnect does not loop.
                    out.append(f"id: {m.offset}\nevent: invalid\ndata: {{}}\n\n")
                    continue
                out.append(f"id: {m.offset}\nevent: alert\ndata: {event_data(a, m.offset)}\n\n")
            SSE_EVENTS.inc(len(out))
            yield "".join(out)

    async def close(self) -> None:
        """Stop the consumer (idempotent; safe after a failed start)."""
        if self._counted:
            SSE_CLIENTS.dec()
            self._counted = False
        await self.consumer.stop()
