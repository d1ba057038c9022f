"""The sink: sighting upserts from the sightings topic into the store, in large idempotent batches.

It runs as its own consumer group (`<group>-sink`), so any number of workers can feed one
embedded store, and acknowledges a batch only after the store has the rows: offsets are committed
only for durable data. A replayed batch is harmless: rows carry (identity, version) and the store
keeps one row per identity and version. A store that stays unavailable stops the sink without
acknowledging (Faust would acknowledge a failed batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import faust

from store.runner import StoreRunner
from stream import metrics
from stream.sighting_codec import concat_upserts, decode_upserts
from stream.worker import exit_now, faust_app
from tagtrail.config import Settings
from tagtrail.errors import TagtrailError

log = logging.getLogger(__name__)

RETRIES = 5


def sink_group(settings: Settings) -> str:
    return f"{settings.consumer_group}-sink"


def build_sink_app(
    settings: Settings,
    bootstrap: str,
    runner: StoreRunner,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> faust.App:
    """A Faust app whose agent writes the sightings topic into the store behind `runner`."""
    from store.writes import insert_sightings

    app = faust_app(settings, bootstrap, sink_group(settings))
    topic = app.topic(settings.topic_sightings, value_type=bytes)
    counters = {"rows": 0, "batches": 0}
    app.tagtrail_sink = counters  # type: ignore[attr-defined]

    async def insert(cols: dict, token: str) -> None:  # type: ignore[type-arg]
        for attempt in range(RETRIES):
            try:
                await runner.run(insert_sightings, cols, dedup_token=token)
                return
            except TagtrailError as e:
                # Same token: a retry after a lost acknowledgement is stored once.
                if not e.retriable or attempt == RETRIES - 1:
                    raise
                log.warning("store insert failed (%s); retrying", e)
                await asyncio.sleep(0.5 * 2**attempt)

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
