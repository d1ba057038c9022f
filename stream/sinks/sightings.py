"""The sink: sighting upserts and raw reads into the store, in large idempotent batches.

Sightings run as their own consumer group (`stream.kafka.groups.sink_group`), so any number of
workers can feed one embedded store, and a batch is acknowledged only after the store has the
rows: offsets are committed only for durable data. A replayed batch is harmless: rows carry
(identity, version) and the store keeps one row per identity and version. A store that stays
unavailable stops the sink without acknowledging (Faust would acknowledge a failed batch).

`Sink` is the two halves: a Faust agent for the sightings topic (a few messages per worker step),
and `stream.sinks.raw_reads` for the reads topic into `raw_reads` (every gateway message: consumed
in whole fetches, see there why not through Faust). The sink owns the store, so it also hosts the
late-read backfiller (`stream.sinks.backfiller`), which `tagtrail backfill` waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import faust

from core.config import Settings
from core.records.sightings import concat_upserts, decode_upserts
from store.runner import StoreRunner
from stream import metrics
from stream.faust_app import exit_now, faust_app
from stream.followers.registry import RegistryFollower
from stream.kafka.groups import sink_group
from stream.sinks.backfiller import Backfiller
from stream.sinks.raw_reads import RawReadSink
from stream.sinks.store_retry import with_retries


class Sink:
    """The sightings agent's Faust app and the raw-read sink: `start()`, then `stop()`."""

    def __init__(
        self,
        app: faust.App,
        raw: RawReadSink,
        registry: RegistryFollower,
        own_registry: bool,
        counters: dict[str, int],
    ) -> None:
        self.app = app
        self.raw = raw
        self.registry = registry
        self._own_registry = own_registry
        self._counters = counters

    @property
    def counters(self) -> dict[str, int]:
        """Rows and batches written so far, sightings and raw reads."""
        return self._counters | self.raw.counters

    async def start(self) -> None:
        if self._own_registry:
            await self.registry.start()
        await self.app.start()
        await self.raw.start()

    async def stop(self) -> None:
        await self.raw.stop()
        await self.app.stop()
        if self._own_registry:
            await self.registry.stop()


def build_sink(
    settings: Settings,
    bootstrap: str,
    runner: StoreRunner,
    on_fatal: Callable[[BaseException], None] = exit_now,
    *,
    registry: RegistryFollower | None = None,
    backfill: bool = True,
) -> Sink:
    """The sink writing sightings and raw reads into the store behind `runner`.

    `registry`: the reader registry to validate reads with (a follower of its own if None).
    `backfill`: host the late-read backfiller (the store's owner should; see
    stream.sinks.backfiller).
    """
    from store.writes import insert_sightings

    app = faust_app(settings, bootstrap, sink_group(settings))
    topic = app.topic(settings.topic_sightings, value_type=bytes)
    counters = {"rows": 0, "batches": 0}
    follower = registry or RegistryFollower(bootstrap, settings.topic_readers)
    raw = RawReadSink(settings, bootstrap, runner, follower, on_fatal)

    if backfill:

        @app.task
        async def host_backfill() -> None:
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
                await with_retries(
                    "store insert", runner, insert_sightings, cols, dedup_token=token
                )
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

    return Sink(app, raw, follower, registry is None, counters)
