"""Exact sightings through real failures: worker processes killed with SIGKILL and restarted,
two workers rebalancing, the broker restarted — the store must equal the reference afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from core.config import Settings, load_settings
from core.records.alerts import Alert, HotlistEntry, alert_id, encode_hotlist
from core.records.readers import encode_reader
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher
from ingest.simulator import CityConfig, simulate
from ingest.wire import KIND_MESSAGE, KIND_READS, decode_dead_letter, decode_structure
from store.open import open_store
from store.queries import export_sightings
from store.runner import StoreRunner
from stream.followers.registry import RegistryFollower, registry_from_rows
from stream.kafka.cluster import topic_partitions
from stream.kafka.progress import lag, wait_drained
from stream.kafka.topics import ensure_topics
from stream.sessionize.reference import reference_sightings
from stream.sinks.sightings import build_sink
from tagtrail.broker.launcher import LocalKafka
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
        self.stopped: set[int] = set()  # pids this test ended on purpose
        self.crashes: list[int] = []  # exit statuses of workers that ended on their own
        self.log_path = settings.data_dir.parent / "workers.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115

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
        self.stopped.add(p.pid)
        p.send_signal(sig)
        p.wait(timeout=60)

    async def supervise(self) -> None:
        """Restart a worker that exited on its own, as a process supervisor would (compose's
        `restart: unless-stopped`): a worker that cannot continue exits non-zero for this."""
        while True:
            for p in list(self.procs):
                if p.pid in self.stopped or p.poll() is None:
                    continue
                self.stopped.add(p.pid)
                self.crashes.append(p.returncode)
                self.start()
            await asyncio.sleep(0.5)

    def report(self) -> str:
        """Exit statuses and the end of the workers' log, for a failure message."""
        tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        codes = [p.poll() for p in self.procs]
        return f"worker exits {codes}, crashes {self.crashes}; log tail:\n" + "\n".join(tail)

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


async def list_stolen(settings: Settings, bootstrap: str, cases: list[HotlistEntry]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for case in cases:
            key, value = encode_hotlist(case)
            await producer.send(settings.topic_hotlist, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def stolen_cases(reads: Reads) -> list[HotlistEntry]:
    """Cases for the most-read tags, stolen halfway through: earlier sightings raise nothing."""
    tags, counts = np.unique(reads.tag_id, return_counts=True)
    busiest = tags[np.argsort(-counts, kind="stable")[:25]]
    stolen_at = int(np.median(reads.ts_ms))
    return [HotlistEntry(f"case-{int(t)}", int(t), stolen_at) for t in busiest]


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """Every record of `topic` from the beginning to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, [topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []  # type: ignore[type-arg]
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


def identities(reads: Reads) -> set[tuple[int, int, int]]:
    return set(
        zip(reads.tag_id.tolist(), reads.reader_id.tolist(), reads.ts_ms.tolist(), strict=True)
    )


async def check_alerts_and_reads(
    settings: Settings,
    bootstrap: str,
    reads: Reads,
    got: dict[str, np.ndarray],
    cases: list[HotlistEntry],
) -> None:
    """Zero duplicate alert ids, an alert for every final sighting of a stolen tag, and every
    distinct read sent is in a stored sighting, a dead letter or the late-reads topic."""
    alerts = [
        Alert.decode(bytes(r.value)) for r in await read_topic(bootstrap, settings.topic_alerts)
    ]
    ids = [a.alert_id for a in alerts]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate alerts"
    stolen = {c.tag_id: c for c in cases}
    want = {
        alert_id(stolen[t].case_id, t, r, f)
        for t, r, f, last in zip(
            got["tag_id"].tolist(),
            got["reader_id"].tolist(),
            got["first_ts"].tolist(),
            got["last_ts"].tolist(),
            strict=True,
        )
        if t in stolen and last >= stolen[t].stolen_at_ms
    }
    assert want and want <= set(ids), f"{len(want - set(ids))} sightings of stolen tags unalerted"
    dead = [
        decode_dead_letter(list(r.headers), bytes(r.value))
        for r in await read_topic(bootstrap, settings.topic_dead_letter)
    ]
    late = [bytes(r.value) for r in await read_topic(bootstrap, settings.topic_late)]
    parked: set[tuple[int, int, int]] = set()
    for value in [d.value for d in dead if d.kind == KIND_READS] + late:
        parked |= identities(decode_structure(value).reads)
    assert not any(d.kind == KIND_MESSAGE for d in dead)  # every message sent was well formed
    assert int(got["n_reads"].sum()) + len(parked) == len(identities(reads))


async def scenario(
    settings: Settings,
    bootstrap: str,
    between: Callable[[int, Workers], object],
    parts: int = 4,
    with_alerts: bool = False,
    settle_s: float = 1.5,
    supervised: bool = False,
    drain_timeout_s: float = 180,
) -> Workers:
    reads, gateway, rows = city()
    cases = stolen_cases(reads) if with_alerts else []
    await ensure_topics(settings, bootstrap)
    await register(settings, bootstrap, rows)
    await list_stolen(settings, bootstrap, cases)
    failures: list[BaseException] = []
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    sink = build_sink(settings, bootstrap, runner, on_fatal=failures.append)
    await sink.start()
    workers = Workers(settings)
    supervisor = asyncio.create_task(workers.supervise()) if supervised else None
    try:
        workers.start()
        for i, round_ in enumerate(batches(reads, gateway, parts, seed=5)):
            async with GatewayPublisher(bootstrap, settings.topic_reads) as pub:
                await pub.publish_many(round_)
            await asyncio.sleep(settle_s)  # let the workers get into the middle of it
            res = between(i, workers)
            if asyncio.iscoroutine(res):
                await res
        try:
            await wait_drained(settings, bootstrap, timeout_s=drain_timeout_s)
        except TimeoutError as e:
            raise AssertionError(f"{e}; {workers.report()}") from None
        got = await runner.run(export_sightings)
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
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
    if with_alerts:
        await check_alerts_and_reads(settings, bootstrap, reads, got, cases)
    return workers


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

    # Alerts too: a killed worker's alerts since its last checkpoint are not sent again.
    asyncio.run(scenario(settings, kafka_bootstrap, between, with_alerts=True))


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

    asyncio.run(scenario(settings, kafka_bootstrap, between, with_alerts=True))


@pytest.mark.parametrize("seed", [1, 2])
def test_two_workers_sigkilled_at_random_moments(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, seed: int
) -> None:
    """Two workers, each killed with SIGKILL at random moments of the replay (mid-step, between
    a step's outputs and its checkpoint) and restarted: rows a killed worker published after its
    last checkpoint must not outlive the replay of its reads in other batches."""
    settings = settings_factory(checkpoint_interval_s=0.5, session_timeout_s=6)
    rng = np.random.default_rng(seed)

    async def between(i: int, workers: Workers) -> None:
        if i == 0:
            workers.start()  # the second worker
        for _ in range(2):
            await asyncio.sleep(float(rng.uniform(0.0, 1.0)))
            live = [p for p in workers.procs if p.poll() is None]
            if live:
                workers.kill(live[int(rng.integers(len(live)))])
                workers.start()

    asyncio.run(
        scenario(settings, kafka_bootstrap, between, parts=6, with_alerts=True, settle_s=0.2)
    )


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for one test alone: it gets stopped and restarted under the pipeline."""
    broker = LocalKafka(tmp_path / "kafka", load_settings().kafka_cache_dir, partitions=4)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)
        broker.kill()


def test_broker_restarts_mid_replay(
    own_broker: LocalKafka, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data",
        kafka=own_broker.bootstrap,
        consumer_group=unique_name("group"),
        checkpoint_interval_s=0.5,
        session_timeout_s=6,
    )
    bootstrap = own_broker.bootstrap
    follower = RegistryFollower(bootstrap, settings.topic_readers)

    async def between(i: int, workers: Workers) -> None:
        # Mid-replay (a round just published, the worker busy with it) the broker goes away
        # under the live worker, the sink and a follower, and comes back on the same data,
        # cluster id and port: first after a clean shutdown, then after a SIGKILL of the JVM.
        if i == 0:
            await committed(settings, bootstrap)  # the worker is up and working
            await follower.start()
        elif i in (1, 2):
            await asyncio.to_thread(own_broker.restart, hard=i == 2)
        else:
            # The compacted-topic followers (registry, hotlist) resume after the outages.
            spare = 2**31 - 1  # a reader without reads: changes no sighting
            await register(
                settings,
                bootstrap,
                [{"reader_id": spare, "lat": 25.0, "lon": 102.7, "kind": "fixed"}],
            )
            async with asyncio.timeout(30):
                while spare not in follower.registry.reader_id:
                    await asyncio.sleep(0.1)

    async def main() -> Workers:
        try:
            return await scenario(
                settings,
                bootstrap,
                between,
                with_alerts=True,
                settle_s=0.3,
                supervised=True,
                drain_timeout_s=90,
            )
        finally:
            await follower.stop()

    workers = asyncio.run(main())
    # A worker that cannot go on exits non-zero and the supervisor restarts it; say how often.
    print(f"worker processes: {len(workers.procs)}, restarted after exiting: {workers.crashes}")


pytestmark = pytest.mark.kafka
