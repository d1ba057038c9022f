"""Late reads through the real pipeline (broker, worker, sink, chdb): after a backfill the stored
sightings equal the reference of every valid read, retractions included, and a second backfill
changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher
from store.open import open_store
from store.queries import export_sightings, sightings_in_area, track
from store.runner import StoreRunner
from stream.followers.registry import RegistryFollower, registry_from_rows
from stream.kafka.groups import backfill_group
from stream.kafka.progress import wait_drained
from stream.kafka.topics import ensure_topics
from stream.sessionize.reference import reference_sightings
from stream.sinks.backfiller import Backfiller
from stream.sinks.late_merge import merge, watermark_floors
from stream.sinks.sightings import build_sink
from stream.worker.worker import Worker
from tagtrail.up import Pipeline
from tests.stream.test_exactness import register

REPO = Path(__file__).resolve().parents[3]
# Recent: raw reads older than raw_reads_ttl_days are dropped by their TTL at once.
T0 = (int(time.time()) // 60 - 120) * 60_000
LATENESS_MS = 60_000
MERGE_TAG, MERGE_READER = 999, 1  # two sightings 50 s apart that a late read at +25 s joins


def readers() -> list[dict[str, object]]:
    return [
        {"reader_id": r, "lat": 25.0 + r * 0.01, "lon": 102.7 + r * 0.01, "kind": "fixed"}
        for r in range(1, 9)
    ]


def city() -> tuple[Reads, Reads, Reads]:
    """(in time, late, near the horizon): 15 min of reads from 8 readers (two per partition);
    the late ones are taken from the first 10 min and sent after everything else."""
    rng = np.random.default_rng(21)
    n = 6000
    reads = Reads.from_columns(
        tag_id=rng.integers(1, 120, n),
        reader_id=rng.integers(1, 9, n),
        ts_ms=T0 + rng.integers(0, 900_000, n),
        rssi_dbm=rng.integers(-90, -40, n),
    )
    merge_pair = Reads.from_columns(
        tag_id=[MERGE_TAG] * 3,
        reader_id=[MERGE_READER] * 3,
        ts_ms=[T0 + 100_000, T0 + 150_000, T0 + 125_000],
        rssi_dbm=[-60, -50, -70],
    )
    reads = Reads.concat([reads, merge_pair])
    early = (reads.ts_ms < T0 + 600_000) & (rng.random(len(reads)) < 0.12)
    early[-3:] = [False, False, True]  # the joining read is late
    late = reads.take(np.flatnonzero(early))
    late = Reads.concat([late, late.take(np.arange(20))])  # redelivered duplicates
    # Just behind the horizon at the end: merged only once the stream has moved on.
    edge = Reads.from_columns(
        tag_id=[5, 6], reader_id=[2, 3], ts_ms=[T0 + 900_000 - LATENESS_MS - 20_000] * 2
    )
    in_time = reads.take(np.flatnonzero(~early))
    order = np.argsort(in_time.ts_ms, kind="stable")
    return in_time.take(order), late, edge


def advance() -> Reads:
    """Reads 20 min after the start on every reader: every partition's watermark moves on."""
    return Reads.from_columns(
        tag_id=np.arange(2000, 2008), reader_id=np.arange(1, 9), ts_ms=[T0 + 1_200_000] * 8
    )


async def publish(bootstrap: str, topic: str, reads: Reads, gateway: int) -> None:
    async with GatewayPublisher(bootstrap, topic) as pub:
        for chunk in np.array_split(np.arange(len(reads)), max(len(reads) // 500, 1)):
            await pub.publish(reads.take(chunk), gateway_id=gateway)


def reference(reads: list[Reads]) -> dict[str, np.ndarray]:
    want = reference_sightings(
        Reads.concat(reads),
        30_000,
        registry_from_rows({int(r["reader_id"]): r for r in readers()}),  # type: ignore[misc]
    )
    order = np.lexsort((want["reader_id"], want["first_ts"], want["tag_id"]))
    return {k: v[order] for k, v in want.items()}


def assert_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert len(got["tag_id"]) == len(want["tag_id"])
    for col, values in want.items():
        np.testing.assert_array_equal(got[col], values, err_msg=col)


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGTRAIL_")}
    for name in ("kafka", "data_dir", "consumer_group", "max_lateness_ms"):
        env[f"TAGTRAIL_{name.upper()}"] = str(getattr(settings, name))
    for name, value in settings.model_dump().items():
        if name.startswith("topic_"):
            env[f"TAGTRAIL_{name.upper()}"] = str(value)
    return env


def cli_backfill(settings: Settings) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "tagtrail.cli", "backfill", "--timeout-s", "120"],
        env=cli_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.replace("\n", " ")


async def _through_running_sink(settings: Settings) -> None:
    bootstrap = settings.kafka
    in_time, late, edge = city()
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, readers())
    async with Pipeline(settings) as p:
        await publish(bootstrap, settings.topic_reads, in_time, 1)
        await publish(bootstrap, settings.topic_reads, Reads.concat([late, edge]), 2)
        await wait_drained(settings, bootstrap, timeout_s=120)
        assert p.app.state.reads == len(in_time) + len(late) + len(edge)

        # The sink hosts the backfiller; the command waits for it and reports.
        out = await asyncio.to_thread(cli_backfill, settings)
        assert "deferred" in out, out  # the edge reads (and others near the horizon)

        # The stream moves on: the deferred reads are merged; the store equals the reference.
        await publish(bootstrap, settings.topic_reads, advance(), 3)
        await wait_drained(settings, bootstrap, timeout_s=120)
        out = await asyncio.to_thread(cli_backfill, settings)
        assert "deferred" not in out, out
        got = await p.runner.run(export_sightings)
        assert_equal(got, reference([in_time, late, edge, advance()]))

        # The merged pair: one sighting, the two stored ones retracted everywhere readers look.
        rows = await p.runner.run(track, MERGE_TAG, T0, T0 + 900_000)
        assert rows["first_ts"].tolist() == [T0 + 100_000]
        assert rows["n_reads"].tolist() == [3]
        cell = int(rows["h3_r9"][0])
        area = await p.runner.run(sightings_in_area, T0, T0 + 900_000, cells=[cell])
        assert area["first_ts"][area["tag_id"] == MERGE_TAG].tolist() == [T0 + 100_000]

        # Twice: nothing left to merge, nothing changes.
        out = await asyncio.to_thread(cli_backfill, settings)
        assert "late reads merged: 0" in out, out
        assert_equal(
            await p.runner.run(export_sightings), reference([in_time, late, edge, advance()])
        )


def test_backfill_through_the_running_sink_gives_the_reference(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_lateness_ms=LATENESS_MS, checkpoint_interval_s=1.0)
    asyncio.run(_through_running_sink(settings))


async def _standalone(settings: Settings) -> None:
    bootstrap = settings.kafka
    in_time, late, _ = city()
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, readers())
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    registry = RegistryFollower(bootstrap, settings.topic_readers)
    await registry.start()
    failures: list[BaseException] = []
    worker = Worker(settings, bootstrap, registry, on_fatal=failures.append)
    sink = build_sink(settings, bootstrap, runner, on_fatal=failures.append, backfill=False)
    await worker.start()
    await sink.start()
    try:
        await publish(bootstrap, settings.topic_reads, in_time, 1)
        await publish(bootstrap, settings.topic_reads, Reads.concat([late, advance()]), 2)
        await wait_drained(settings, bootstrap, timeout_s=120)
        summary = await Backfiller(settings, bootstrap, runner).run(follow=False)
        # More than `late`: a step's reads older than its newest minus 60 s are late too.
        assert summary.deferred == 0 and summary.reads_merged >= len(late)
        assert summary.retractions >= 1  # the merged pair
        want = reference([in_time, late, advance()])
        assert_equal(await runner.run(export_sightings), want)
        # A redelivered round (the same late reads merged again) changes nothing.
        floors = await runner.run(watermark_floors, late, settings.partitions, LATENESS_MS)
        again = await runner.run(merge, late, floors, settings, registry.registry, 4)
        assert len(again.merged) == len(late) and len(again.deferred) == 0
        assert_equal(await runner.run(export_sightings), want)
        # The raw reads are exactly the accepted ones (the late ones once more, as merged).
        n_raw = await runner.run(
            lambda st: st.backend.execute("SELECT count() FROM raw_reads")[0][0]
        )
        assert n_raw >= len(in_time) + len(late) + len(advance())
    finally:
        await sink.stop()
        await worker.stop()
        await registry.stop()
        await asyncio.to_thread(runner.close)
    assert not failures, failures
    assert backfill_group(settings).endswith("-backfill")


def test_standalone_backfill_gives_the_reference_and_repeats_harmlessly(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_lateness_ms=LATENESS_MS)
    asyncio.run(_standalone(settings))


pytestmark = pytest.mark.kafka
