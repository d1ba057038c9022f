"""The Faust worker: gateway batches in; dead letters, late reads, sighting upserts, alerts out.

One agent consumes the reads topic, many gateway messages per step; `stream.processing` does the
CPU work off the event loop. Outputs are published before the inputs are acknowledged, so a crash
replays, never loses. Partition state is checkpointed to the data folder and, on assignment,
restored and caught up to the committed offset, so sightings stay exact across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import Producer as FaustKafkaProducer

from stream import metrics
from stream.alert_history import alert_ids_since
from stream.checkpoint import CheckpointStore
from stream.hotlist import HotlistFollower
from stream.processing import Outcome, Processor
from stream.registry import RegistryFollower
from tagtrail.config import Settings

log = logging.getLogger(__name__)

# Gateway messages handled per step: one kernel call per partition amortises the per-call cost
# over many small gateway batches; the short window bounds the latency it adds.
MAX_MESSAGES_PER_STEP = 2000
STEP_WITHIN_S = 0.02
METADATA_MAX_AGE_MS = 5000


@dataclass
class WorkerState:
    """Counters of one worker process."""

    messages: int = 0
    reads: int = 0
    upserts: int = 0
    alerts: int = 0


def exit_now(exc: BaseException) -> None:
    """Leave the process at once, without running `finally` blocks.

    Faust acknowledges a step's events in a `finally` even when the step failed, which would
    commit offsets of reads that produced nothing. Exiting before that keeps them uncommitted,
    so a restarted worker processes them again: nothing is lost.
    """
    log.critical("worker step failed; exiting without committing: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class IdempotentProducer(FaustKafkaProducer):
    """Faust's producer with Kafka idempotence: a send that aiokafka retries because a broker
    restart lost its acknowledgement is written once, so an alert is never published twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "enable_idempotence": True}


def faust_app(settings: Settings, bootstrap: str, group: str) -> faust.App:
    """A Faust app for raw-bytes topics that stream.topics has declared."""
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(settings.data_dir / "faust"),  # not the working directory
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # stream.topics declares every topic with its policy
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # A killed worker's partitions move to the others after this long without heartbeats.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # A rebalance while a restarted broker has not yet led its partitions assigns none of a
        # topic's partitions; the consumer rejoins when its metadata shows them again, which
        # without this waits for the 5-minute default refresh.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )
    app.transport.Producer = IdempotentProducer  # before the producer is created (app.start)
    return app


def build_worker_app(
    settings: Settings,
    bootstrap: str,
    registry: RegistryFollower,
    hotlist: HotlistFollower | None = None,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> faust.App:
    """A Faust app whose agent turns the reads topic into sighting upserts and alerts."""
    app = faust_app(settings, bootstrap, settings.consumer_group)
    state = WorkerState()
    proc = Processor(settings, registry, hotlist)
    checkpoints = CheckpointStore(settings.data_dir / "state" / settings.consumer_group)
    app.tagtrail_state = state  # type: ignore[attr-defined]
    app.tagtrail_processor = proc  # type: ignore[attr-defined]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernels")
    lock = asyncio.Lock()  # one step, adoption or checkpoint at a time
    last_checkpoint = {"at": time.monotonic()}

    reads_topic = app.topic(settings.topic_reads, value_type=bytes)
    dlq_topic = app.topic(settings.topic_dead_letter, value_type=bytes)
    late_topic = app.topic(settings.topic_late, value_type=bytes)
    sightings_topic = app.topic(settings.topic_sightings, value_type=bytes)
    alerts_topic = app.topic(settings.topic_alerts, value_type=bytes)

    async def publish(res: Outcome) -> None:
        sends: list[Awaitable[Any]] = []
        # Alerts first: a police officer waits for them; upserts can be megabytes.
        for alert in res.alerts:
            sends.append(await alerts_topic.send(key=alert.case_id.encode(), value=alert.encode()))
        for headers, value in res.dead:
            sends.append(await dlq_topic.send(value=value, headers=headers))
        for reason, n_bad in res.dead_reasons:
            metrics.DEAD_LETTERS.labels(reason=reason).inc()
            metrics.INVALID_READS.labels(reason=reason).inc(n_bad)
        for value, p in zip(res.late, res.late_partitions, strict=True):
            # The late batch keeps its reads' partition, so one backfiller owns each key.
            sends.append(await late_topic.send(value=value, partition=p))
        for value in res.upserts:
            sends.append(await sightings_topic.send(value=value))
        if sends:
            await asyncio.gather(*sends)
        now_ms = time.time() * 1000
        for alert in res.alerts:
            metrics.ALERTS.inc()
            if alert.read_published_ms:
                metrics.ALERT_LATENCY.observe(max(now_ms - alert.read_published_ms, 0) / 1000)
        state.alerts += len(res.alerts)

    def save_checkpoints(partitions: list[int]) -> None:
        for p in partitions:
            if p in proc.partitions:
                checkpoints.save(settings.topic_reads, p, proc.checkpoint(p))

    async def catch_up(partition: int, start: int) -> None:
        """Re-apply messages [start, committed) that a checkpoint does not cover."""
        tp = TopicPartition(settings.topic_reads, partition)
        side = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=settings.consumer_group, enable_auto_commit=False
        )
        await side.start()
        try:
            side.assign([tp])
            committed = await side.committed(tp)
            if committed is None or committed <= start:
                return
            side.seek(tp, start)
            loop = asyncio.get_running_loop()
            while True:
                batch = (await side.getmany(tp, timeout_ms=1000, max_records=2000)).get(tp, [])
                msgs = [
                    (bytes(m.value), tp.topic, partition, m.offset, float(m.timestamp))
                    for m in batch
                    if m.offset < committed
                ]
                if msgs:
                    await publish(await loop.run_in_executor(pool, proc.step, msgs))
                if not batch or batch[-1].offset + 1 >= committed:
                    break
        finally:
            await side.stop()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.topic_reads)
        async with lock:
            loop = asyncio.get_running_loop()
            adopted: dict[int, int] = {}
            since_ms = int(time.time() * 1000)
            for p in mine:
                if p in proc.partitions:
                    continue  # kept across this rebalance: the state is current
                ckpt = await loop.run_in_executor(pool, checkpoints.load, settings.topic_reads, p)
                adopted[p] = proc.adopt(p, ckpt)
                since_ms = min(since_ms, ckpt.saved_ms if ckpt is not None else 0)
            if adopted:
                # Alerts the previous owner sent after its last checkpoint: never send them again.
                sent = await alert_ids_since(bootstrap, settings.topic_alerts, since_ms)
                for p, offset in adopted.items():
                    proc.partitions[p].alerted |= sent
                    await catch_up(p, offset + 1)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        gone = sorted(tp.partition for tp in revoked if tp.topic == settings.topic_reads)
        async with lock:
            await asyncio.get_running_loop().run_in_executor(pool, save_checkpoints, gone)
            for p in gone:
                proc.partitions.pop(p, None)

    @app.agent(reads_topic)
    async def process_reads(stream: faust.StreamT[bytes]) -> None:
        await registry.caught_up.wait()
        if hotlist is not None:
            await hotlist.caught_up.wait()
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(MAX_MESSAGES_PER_STEP, within=STEP_WITHIN_S):
            t0 = time.perf_counter()
            work = [
                (
                    bytes(e.value),
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    float(e.message.timestamp) * 1000,
                )
                for e in events
            ]
            async with lock:
                try:
                    res = await loop.run_in_executor(pool, proc.step, work)
                    await publish(res)
                    if time.monotonic() - last_checkpoint["at"] >= settings.checkpoint_interval_s:
                        last_checkpoint["at"] = time.monotonic()
                        await loop.run_in_executor(pool, save_checkpoints, list(proc.partitions))
                except Exception as e:  # a bug or a broker failure: never ack what failed
                    on_fatal(e)
                    raise
            # Outputs are durable before these inputs are acknowledged (when the next step is
            # taken), so at worst a crash re-publishes upserts that the store deduplicates.
            state.messages += len(events)
            state.reads += res.n_reads
            state.upserts += res.n_upserts
            metrics.READS_IN.inc(res.n_reads)
            metrics.LATE_READS.inc(res.n_late)
            metrics.DUPLICATE_READS.inc(res.n_duplicates)
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)

    return app
