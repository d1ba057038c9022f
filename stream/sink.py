"""The sink: sighting upserts and raw reads into the store, in large idempotent batches.

It runs as its own consumer group (`<group>-sink`), so any number of workers can feed one
embedded store, and acknowledges a batch only after the store has the rows: offsets are committed
only for durable data. A replayed batch is harmless: rows carry (identity, version) and the store
keeps one row per identity and version. A store that stays unavailable stops the sink without
acknowledging (Faust would acknowledge a failed batch).

Two agents: the sightings topic into `sightings`, and the reads topic into `raw_reads` (exactly
the reads the worker accepts: the same validation, `stream.processing.accepted_reads`, judged at
the message's Kafka timestamp). The sink owns the store, so it also hosts the late-read
backfiller (`stream.backfill_loop`), which `tagtrail backfill` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust

from ingest.exceptions import WireError
from ingest.reads import Reads
from ingest.wire import decode_structure
from store.runner import StoreRunner
from stream import metrics
from stream.faust_app import exit_now, faust_app
from stream.processing import accepted_reads
from stream.registry import RegistryFollower
from stream.sighting_codec import concat_upserts, decode_upserts
from tagtrail.config import Settings
from tagtrail.errors import TagtrailError

log = logging.getLogger(__name__)

RETRIES = 5


def sink_group(settings: Settings) -> str:
    return f"{settings.consumer_group}-sink"


def valid_reads(
    messages: list[tuple[bytes, float]], known_readers: Any, max_clock_skew_ms: int
) -> Reads:
    """The reads of (value, publish ms) gateway messages that the worker accepts, concatenated.

    Messages that do not decode are the worker's dead letters: skipped here, as there.
    """
    batches, published = [], []
    for value, published_ms in messages:
        try:
            batches.append(decode_structure(value))
        except WireError:
            continue  # dead-lettered by the worker, with its reason
        published.append(published_ms)
    return accepted_reads(batches, known_readers, published, max_clock_skew_ms)[0]


async def _with_retries(
    what: str, runner: StoreRunner, fn: Callable[..., object], *args: Any, **kwargs: Any
) -> None:
    for attempt in range(RETRIES):
        try:
            await runner.run(fn, *args, **kwargs)
            return
        except TagtrailError as e:
            # Same dedup token on each attempt: a retry after a lost ack is stored once.
            if not e.retriable or attempt == RETRIES - 1:
                raise
            log.warning("%s failed (%s); retrying", what, e)
            await asyncio.sleep(0.5 * 2**attempt)


def build_sink_app(
    settings: Settings,
    bootstrap: str,
    runner: StoreRunner,
    on_fatal: Callable[[BaseException], None] = exit_now,
    *,
    registry: RegistryFollower | None = None,
    backfill: bool = True,
) -> faust.App:
    """A Faust app whose agents write sightings and raw reads into the store behind `runner`.

    `registry`: the reader registry to validate reads with (a follower of its own if None).
    `backfill`: host the late-read backfiller (the store's owner should; see stream.backfill_loop).
    """
    from store.writes import insert_raw_reads, insert_sightings

    app = faust_app(settings, bootstrap, sink_group(settings))
    topic = app.topic(settings.topic_sightings, value_type=bytes)
    reads_topic = app.topic(settings.topic_reads, value_type=bytes)
    counters = {"rows": 0, "batches": 0, "raw_reads": 0, "raw_batches": 0}
    app.tagtrail_sink = counters  # type: ignore[attr-defined]
    own_registry = registry is None
    follower = registry or RegistryFollower(bootstrap, settings.topic_readers)

    async def insert(cols: dict, token: str) -> None:  # type: ignore[type-arg]
        await _with_retries("store insert", runner, insert_sightings, cols, dedup_token=token)

    @app.agent(reads_topic)
    async def raw_reads(stream: faust.StreamT[bytes]) -> None:
        if own_registry:
            await follower.start()
        try:
            await follower.caught_up.wait()
            await _raw_reads(stream)
        finally:
            if own_registry:
                await follower.stop()

    async def _raw_reads(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(
            settings.sink_batch_max_rows // 100 or 1, within=settings.sink_flush_interval_s
        ):
            try:
                msgs = [(bytes(e.value), float(e.message.timestamp) * 1000) for e in events]
                reads = await loop.run_in_executor(
                    None,
                    valid_reads,
                    msgs,
                    follower.registry.reader_id,
                    settings.max_clock_skew_ms,
                )
                first, last = events[0].message, events[-1].message
                token = f"raw:{first.topic}:{first.partition}:{first.offset}:{last.offset}"
                token += f":{len(events)}"
                if len(reads):
                    await _with_retries(
                        "raw-read insert", runner, insert_raw_reads, reads, dedup_token=token
                    )
            except Exception as e:
                on_fatal(e)
                raise
            counters["raw_reads"] += len(reads)
            counters["raw_batches"] += 1
            # Leaving this iteration acknowledges `events`: only now may their offsets commit.

    if backfill:

        @app.task
        async def host_backfill() -> None:
            from stream.backfill_loop import Backfiller

            try:
                await Backfiller(settings, bootstrap, runner).run(follow=True)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                on_fatal(e)
                raise

    @app.agent(topic)
    async def sink(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(
            settings.sink_batch_max_rows // 100 or 1, within=settings.sink_flush_interval_s
        ):
            t0 = time.perf_counter()
            try:
                cols = concat_upserts([decode_upserts(bytes(e.value)) for e in events])
                first, last = events[0].message, events[-1].message
                token = (
                    f"{first.topic}:{first.partition}:{first.offset}:{last.offset}:{len(events)}"
                )
                await insert(cols, token)
            except Exception as e:
                on_fatal(e)
                raise
            n = len(cols["tag_id"])
            metrics.SINK_SECONDS.observe(time.perf_counter() - t0)
            metrics.SINK_BATCH_ROWS.observe(n)
            metrics.SIGHTINGS_WRITTEN.inc(n)
            counters["rows"] += n
            counters["batches"] += 1
            # Leaving this iteration acknowledges `events`: only now may their offsets commit.

    return app
