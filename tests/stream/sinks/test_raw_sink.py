"""The raw-read sink on the real broker and chdb: every accepted read stored exactly once, through
rebalances between two sinks of one group and a stop mid-stream; offsets committed only after."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from core.config import Settings
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher
from store.open import open_store
from store.runner import StoreRunner
from stream.followers.registry import RegistryFollower
from stream.kafka.groups import raw_group
from stream.kafka.progress import lag
from stream.kafka.topics import ensure_topics
from stream.sinks.raw_reads import RawReadSink, batch_token
from tests.stream.sinks.test_backfill import T0, readers
from tests.stream.test_exactness import register


def test_batch_token_names_the_offset_ranges() -> None:
    assert batch_token("reads", {3: (10, 12), 0: (5, 5)}) == "raw:reads:0:5-5,3:10-12"
    assert batch_token("reads", {0: (5, 6)}) != batch_token("reads", {0: (5, 5)})


def _reads(n: int, seed: int) -> Reads:
    rng = np.random.default_rng(seed)
    return Reads.from_columns(
        tag_id=rng.integers(1, 10**9, n),
        reader_id=rng.integers(1, 10, n),  # reader 9 is not registered: rejected, not stored
        ts_ms=T0 + rng.integers(0, 900_000, n),
        rssi_dbm=rng.integers(-90, -40, n),
    )


def _stored(store: object) -> list[tuple[int, int, int]]:
    rows = store.backend.execute(  # type: ignore[attr-defined]
        "SELECT tag_id, reader_id, ts_ms FROM raw_reads ORDER BY tag_id, reader_id, ts_ms"
    )
    return [(int(t), int(r), int(ts)) for t, r, ts in rows]


async def _wait_lag_zero(settings: Settings, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s / 0.25)):
        if await lag(settings.kafka, raw_group(settings), [settings.topic_reads]) == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("the raw-read sinks did not commit every message")


async def _run(settings: Settings) -> None:
    bootstrap = settings.kafka
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, readers())  # readers 1..8
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    registry = RegistryFollower(bootstrap, settings.topic_readers)
    await registry.start()
    failures: list[BaseException] = []
    parts = [_reads(3000, s) for s in range(6)]
    a = RawReadSink(settings, bootstrap, runner, registry, on_fatal=failures.append)
    b = RawReadSink(settings, bootstrap, runner, registry, on_fatal=failures.append)
    try:
        async with GatewayPublisher(bootstrap, settings.topic_reads) as pub:
            await a.start()
            for i, part in enumerate(parts):
                for chunk in np.array_split(np.arange(len(part)), 6):
                    await pub.publish(part.take(chunk), gateway_id=i)
                if i == 1:
                    await b.start()  # a rebalance: a's fetched messages are stored first
                if i == 3:
                    await a.stop()  # and another: b takes every partition
        await _wait_lag_zero(settings)
        assert not failures
        got = await runner.run(_stored)
        every = Reads.concat(parts)
        ok = every.reader_id <= 8
        want = sorted(
            zip(
                every.tag_id[ok].tolist(),
                every.reader_id[ok].tolist(),
                every.ts_ms[ok].tolist(),
                strict=True,
            )
        )
        assert got == want  # each accepted read once: none missing, none twice
        assert a.counters["raw_reads"] + b.counters["raw_reads"] == len(want)
    finally:
        await b.stop()
        await a.stop()
        await registry.stop()
        await asyncio.to_thread(runner.close)


def test_raw_reads_stored_once_through_rebalances(
    settings_factory: Callable[..., Settings],
) -> None:
    # Batches wait up to 3 s: the rebalances find fetched messages not yet stored.
    asyncio.run(
        _run(settings_factory(partitions=4, session_timeout_s=6.0, sink_flush_interval_s=3))
    )
