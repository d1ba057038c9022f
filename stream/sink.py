"""The sink: sighting upserts from the sightings topic into the store, in large idempotent batches.

The agent acknowledges a batch only after the store has the rows, so offsets are committed only for
durable data. A replayed batch is harmless: rows carry (identity, version), and the store keeps one
row per identity and version.
"""

from __future__ import annotations

import logging
import time

import faust

from store.runner import StoreRunner
from stream import metrics
from stream.sighting_codec import concat_upserts, decode_upserts
from tagtrail.config import Settings

log = logging.getLogger(__name__)


def add_sink_agent(app: faust.App, settings: Settings, runner: StoreRunner) -> None:
    """Attach the sink agent to `app` (the worker's app in `tagtrail up`, or a sink-only app)."""
    from store.writes import insert_sightings

    topic = app.topic(settings.topic_sightings, value_type=bytes)
    counters = {"rows": 0, "batches": 0}
    app.tagtrail_sink = counters  # type: ignore[attr-defined]

    @app.agent(topic)
    async def sink(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(
            settings.sink_batch_max_rows // 100 or 1, within=settings.sink_flush_interval_s
        ):
            parts = [decode_upserts(bytes(e.value)) for e in events]
            cols = concat_upserts(parts)
            n = len(cols["tag_id"])
            t0 = time.perf_counter()
            first, last = events[0].message, events[-1].message
            token = f"{first.topic}:{first.partition}:{first.offset}:{last.offset}:{len(events)}"
            await runner.run(insert_sightings, cols, dedup_token=token)
            metrics.SINK_SECONDS.observe(time.perf_counter() - t0)
            metrics.SINK_BATCH_ROWS.observe(n)
            metrics.SIGHTINGS_WRITTEN.inc(n)
            counters["rows"] += n
            counters["batches"] += 1
            # Leaving this iteration acknowledges `events`: only now may their offsets commit.
