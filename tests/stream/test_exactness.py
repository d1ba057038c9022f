"""Exact sightings through real failures: worker processes killed with SIGKILL and restarted,
two workers rebalancing, the broker restarted — the store must equal the reference afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from deploy.kafka.broker import LocalKafka
from ingest.publisher import GatewayPublisher
from ingest.reads import Reads
from ingest.simulator import CityConfig, simulate
from store.open import open_store
from store.queries import export_sightings
from store.runner import StoreRunner
from stream.dedup import reference_sightings
from stream.progress import lag, wait_drained
from stream.registry import encode_reader, registry_from_rows
from stream.sink import build_sink_app
from stream.topics import ensure_topics
from tagtrail.config import Settings
from tagtrail.demo import yesterday_rush_hour_ms

REPO = Path(__file__).resolve().parents[2]


def city() -> tuple[Reads, np.ndarray, list[dict[str, object]]]:
    """Reads in send order (with retries, duplicates, skew), their gateways, and the registry."""
    sim = simulate(
        CityConfig(scale=0.02, duration_s=600, seed=11, start_ms=yesterday_rush_hour_ms())
    )
    reg = sim.readers
    rows = [
        {"reader_id": int(r), "lat": float(la), "lon": float(lo), "kind": str(k)}
        for r, la, lo, k in zip(reg["reader_id"], reg["lat"], reg["lon"], reg["kind"], strict=True)
    ]
    return sim.reads, sim.gateway_id, rows


def batches(
    reads: Reads, gateway: np.ndarray, parts: int, seed: int
) -> list[list[tuple[Reads, int]]]:
    """Gateway batches in `parts` rounds, shuffled within each round (out-of-order arrival)."""
    bounds = np.flatnonzero(np.diff(gateway.astype(np.int64)) != 0) + 1
    groups = np.split(np.arange(len(reads)), bounds)
    items = [(reads.take(g), int(gateway[g[0]])) for g in groups]
    rng = np.random.default_rng(seed)
    rounds = np.array_split(np.arange(len(items)), parts)
    return [[items[i] for i in rng.permutation(r)] for r in rounds]


WORKER_SETTINGS = {
    "kafka",
    "data_dir",
    "consumer_group",
    "checkpoint_interval_s",
    "gap_ms",
    "session_timeout_s",
    "log_level",
}


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGTRAIL_")}
    for name, value in settings.model_dump().items():
        if name in WORKER_SETTINGS or name.startswith("topic_"):
            env[f"TAGTRAIL_{name.upper()}"] = str(value)
    return env


class Workers:
    """`tagtrail worker` processes, started and killed for real."""

    def __init__(self, settings: Settings) -> None:
        self.env = worker_env(settings)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = open(settings.data_dir.parent / "workers.log", "ab")  # noqa: SIM115

    def start(self) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "tagtrail.cli", "worker"],
            env=self.env,
            cwd=REPO,
            # A file, not a pipe: an unread pipe fills up with broker-outage logs and blocks.
            stdout=self.log,
            stderr=self.log,
        )
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        p.send_signal(sig)
        p.wait(timeout=60)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        self.log.close()


async def register(settings: Settings, bootstrap: str, rows: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for r in rows:
            key, value = encode_reader(
                int(r["reader_id"]),
                float(r["lat"]),
                float(r["lon"]),  # type: ignore[arg-type]
                str(r["kind"]),
            )
            await producer.send(settings.topic_readers, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def scenario(
    settings: Settings,
    bootstrap: str,
    between: Callable[[int, Workers], object],
    parts: int = 4,
    broker: LocalKafka | None = None,
) -> None:
    reads, gateway, rows = city()
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, rows)
    failures: list[BaseException] = []
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    sink = build_sink_app(settings, bootstrap, runner, on_fatal=failures.append)
    await sink.start()
    workers = Workers(settings)
    try:
        workers.start()
        for i, round_ in enumerate(batches(reads, gateway, parts, seed=5)):
            async with GatewayPublisher(bootstrap, settings.topic_reads) as pub:
                await pub.publish_many(round_)
            await asyncio.sleep(1.5)  # let the workers get into the middle of it
            res = between(i, workers)
            if asyncio.iscoroutine(res):
                await res
        await wait_drained(settings, bootstrap, timeout_s=180)
        got = await runner.run(export_sightings)
    finally:
        workers.close()
        await sink.stop()
        await asyncio.to_thread(runner.close)
    assert not failures, failures
    want = reference_sightings(
        reads, settings.gap_ms, registry_from_rows({int(r["reader_id"]): r for r in rows})
    )  # type: ignore[misc]
    order = np.lexsort((want["reader_id"], want["first_ts"], want["tag_id"]))
    assert len(got["tag_id"]) == len(want["tag_id"])
    for col, values in want.items():
        np.testing.assert_array_equal(got[col], values[order], err_msg=col)


async def committed(settings: Settings, bootstrap: str) -> None:
    """Wait until the workers have committed every published read."""
    while await lag(bootstrap, settings.consumer_group, [settings.topic_reads]) > 0:
        await asyncio.sleep(0.2)


def test_sigkill_workers_mid_replay(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    settings = settings_factory(checkpoint_interval_s=0.5, session_timeout_s=6)

    async def between(i: int, workers: Workers) -> None:
        # Kill the live worker hard (no checkpoint on the way out) and start a fresh one: after
        # its offsets are committed (the new one must restore state), or in the middle of work.
        if i % 2 == 0:
            await committed(settings, kafka_bootstrap)
        for p in [p for p in workers.procs if p.poll() is None]:
            workers.kill(p)
        workers.start()

    asyncio.run(scenario(settings, kafka_bootstrap, between))


def test_two_workers_rebalance(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    settings = settings_factory(checkpoint_interval_s=0.5, session_timeout_s=6)

    def between(i: int, workers: Workers) -> None:
        live = [p for p in workers.procs if p.poll() is None]
        if i == 0:
            workers.start()  # a second worker joins: partitions move
        elif i == 1 and len(live) > 1:
            workers.kill(live[0], signal.SIGTERM)  # one leaves cleanly: they move back

    asyncio.run(scenario(settings, kafka_bootstrap, between))


pytestmark = pytest.mark.kafka
