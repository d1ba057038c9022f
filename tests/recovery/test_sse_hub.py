"""Live streams through the AlertHub, on the real broker: a stream behind the hub catches up from
the topic, joins the hub without a gap or a repeat, and a stream that falls too far behind leaves
the hub and reads on from the topic, still missing nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer

from core.records.alerts import Alert, decode_alerts
from recovery import sse
from recovery.sse import AlertHub, AlertStream

NOW = 1_790_000_000_000


def alert(i: int) -> Alert:
    return Alert(
        f"{i:024x}", f"case-{i % 3}", 5000 + i, 7, NOW + i, NOW + i + 1, 52.5, 13.4, 1, NOW
    )


async def produce(bootstrap: str, topic: str, ids: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in ids:
            await producer.send(topic, alert(i).encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def publish_from_thread(hub: AlertHub, ids: range, per_fetch: int) -> None:
    """As the alert feed does: fetches published from another thread, in offset order."""

    def run() -> None:
        for lo in range(ids.start, ids.stop, per_fetch):
            offsets = list(range(lo, min(lo + per_fetch, ids.stop)))
            hub.publish(offsets, decode_alerts([alert(i).encode() for i in offsets]))

    t = threading.Thread(target=run)
    t.start()
    t.join()


async def read_ids(stream: AlertStream, until: int, timeout_s: float = 30.0) -> list[int]:
    """Event ids the stream writes, until `until` (checking each is the alert of its offset)."""
    got: list[int] = []

    async def run() -> None:
        async for chunk in stream.events():
            for block in chunk.split("\n\n"):
                lines = dict(ln.split(": ", 1) for ln in block.splitlines() if ": " in ln)
                if "id" not in lines:
                    continue
                i = int(lines["id"])
                assert lines["data"] == sse.event_data(alert(i), i)
                got.append(i)
                if i >= until:
                    return

    await asyncio.wait_for(run(), timeout_s)
    return got


@asynccontextmanager
async def hub_stream(
    bootstrap: str, topic: str, produced: int, hub_at: int, last_event_id: int | None
) -> AsyncIterator[tuple[AlertHub, AlertStream]]:
    """`produced` alerts on the topic, a hub that has published up to `hub_at`, and a stream
    resuming after `last_event_id` (None: from the end of the log), closed afterwards."""
    await produce(bootstrap, topic, range(produced))
    hub = AlertHub(asyncio.get_running_loop(), hub_at)
    stream = AlertStream(bootstrap, topic, last_event_id, hub)
    await stream.start()
    try:
        yield hub, stream
    finally:
        await stream.close()


def test_a_resumed_stream_catches_up_then_joins_the_hub(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("alerts")

    async def main() -> None:
        # The feed has published 0-19; the client resumes after 4.
        async with hub_stream(kafka_bootstrap, topic, 30, 20, 4) as (hub, stream):
            reader = asyncio.create_task(read_ids(stream, 29))
            await asyncio.sleep(0.5)  # subscribed, catching up from the topic
            await asyncio.to_thread(publish_from_thread, hub, range(20, 30), 4)
            assert await reader == list(range(5, 30))

    asyncio.run(main())


def test_a_new_stream_starts_at_the_end_of_the_log(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("alerts")

    async def main() -> None:
        async with hub_stream(kafka_bootstrap, topic, 10, 10, None) as (hub, stream):
            reader = asyncio.create_task(read_ids(stream, 14))
            await asyncio.sleep(0.3)
            await produce(kafka_bootstrap, topic, range(10, 15))
            await asyncio.to_thread(publish_from_thread, hub, range(10, 15), 2)
            assert await reader == list(range(10, 15))
            assert stream._consumer is None  # live from the hub, no consumer of its own

    asyncio.run(main())


def test_a_stream_too_far_behind_leaves_the_hub_and_misses_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_name("alerts")
    monkeypatch.setattr(sse, "MAX_QUEUED_EVENTS", 5)

    async def main() -> None:
        async with hub_stream(kafka_bootstrap, topic, 40, 0, -1) as (hub, stream):
            events = stream.events()
            await anext(events)  # "connected": subscribed on the first read below
            first = asyncio.create_task(anext(events))
            await asyncio.sleep(0.3)
            # 40 events while the client reads nothing: more than it may have queued.
            await asyncio.to_thread(publish_from_thread, hub, range(40), 3)
            chunk = await asyncio.wait_for(first, 10)
            assert chunk.startswith("id: 0\n")
            dropped = stream._sub
            assert dropped is not None and dropped.dropped  # the hub let it go
            rest = await read_ids(stream, 39)
            seen = [int(b.split("\n", 1)[0][4:]) for b in chunk.split("\n\n") if b] + rest
            assert seen == list(range(40))
            # Read on from the topic, caught up, and back on the hub with no consumer of its own.
            assert stream._sub is not dropped and hub._subs == {stream._sub}
            assert stream._consumer is None

    asyncio.run(main())
