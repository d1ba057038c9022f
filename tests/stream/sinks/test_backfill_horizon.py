"""Late reads far behind a stream that has moved on are merged, not deferred for good (lateness at
its default, 48 h): whether the stream's reads are recent or older than raw-read retention (a
replay of old data, whose raw reads the store drops on arrival)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from core.config import Settings
from core.records.reads import Reads
from store.queries import export_sightings
from stream.kafka.progress import wait_drained
from stream.kafka.topics import ensure_topics
from tagtrail.up import Pipeline
from tests.stream.sinks.test_backfill import assert_equal, cli_backfill, publish, readers, reference
from tests.stream.test_exactness import register

H = 3_600_000
LATE_READER = 3
CROSSING = (500, 501)  # tags whose sightings at LATE_READER start late and go on in time


def stream(t0: int) -> tuple[Reads, Reads]:
    """(in time, late): 54 h of reads on 8 readers from t0; reader 3's first 3 h are sent at the
    end (51-54 h late), among them the start of sightings whose later reads come in time."""
    rng = np.random.default_rng(5)
    n = 8000
    reads = Reads.from_columns(
        tag_id=rng.integers(1, 200, n),
        reader_id=rng.integers(1, 9, n),
        ts_ms=t0 + rng.integers(0, 54 * H, n),
        rssi_dbm=rng.integers(-90, -40, n),
    )
    crossing = Reads.from_columns(
        tag_id=[CROSSING[0]] * 13 + [CROSSING[1]] * 7,
        reader_id=[LATE_READER] * 20,
        ts_ms=[t0 + 3 * H + k * 10_000 for k in range(-6, 7)]
        + [t0 + 3 * H + k * 20_000 for k in range(-3, 4)],
        rssi_dbm=[-50] * 20,
    )
    reads = Reads.concat([reads, crossing])
    early = (reads.reader_id == LATE_READER) & (reads.ts_ms < t0 + 3 * H)
    in_time = reads.take(np.flatnonzero(~early))
    in_time = in_time.take(np.argsort(in_time.ts_ms, kind="stable"))
    return in_time, reads.take(np.flatnonzero(early))


def without(cols: dict[str, np.ndarray], tags: tuple[int, ...]) -> dict[str, np.ndarray]:
    keep = ~np.isin(cols["tag_id"], tags)
    return {k: v[keep] for k, v in cols.items()}


async def _scenario(settings: Settings, t0: int, raw_gone: bool) -> None:
    bootstrap = settings.kafka
    in_time, late = stream(t0)
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, readers())
    async with Pipeline(settings) as p:
        await publish(bootstrap, settings.topic_reads, in_time, 1)
        await publish(bootstrap, settings.topic_reads, late, 2)
        await wait_drained(settings, bootstrap, timeout_s=120)
        out = await asyncio.to_thread(cli_backfill, settings)
        # The stream is 51 h past every late read: none of their sessions is open any more.
        assert "deferred" not in out, out
        got, want = await p.runner.run(export_sightings), reference([in_time, late])
        if raw_gone:
            # The stored sightings the late reads would extend have lost their raw reads: they
            # are left as stored (the backfiller logs and counts them as not merged); every
            # other late read is merged.
            got, want = without(got, CROSSING), without(want, CROSSING)
        assert_equal(got, want)


def test_late_reads_of_a_stream_far_ahead_are_merged(
    settings_factory: Callable[..., Settings],
) -> None:
    t0 = (int(time.time()) // 60) * 60_000 - 56 * H  # ends 2 h ago
    asyncio.run(_scenario(settings_factory(), t0, raw_gone=False))


def test_late_reads_older_than_raw_retention_are_not_left_deferred(
    settings_factory: Callable[..., Settings],
) -> None:
    """The watermark floors used to come from raw_reads alone: with the stream's raw reads
    dropped by their retention, no progress was seen and the late reads waited for good
    ("late reads merged: 0 ... reads deferred (still open in the live stream)")."""
    t0 = (int(time.time()) // 60) * 60_000 - 20 * 24 * H  # older than raw_reads_ttl_days
    asyncio.run(_scenario(settings_factory(), t0, raw_gone=True))


pytestmark = pytest.mark.kafka
