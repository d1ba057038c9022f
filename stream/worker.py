"""The Faust worker: gateway batches in; dead letters, late reads and sighting upserts out.

One agent consumes the reads topic. Each message is a whole gateway batch: it is decoded and
validated (bad input goes to the dead-letter topic with its reason), sessionized by the state of its
partition (numba kernels, run off the event loop), and the resulting sighting upserts are published
to the sightings topic before the input offset is acknowledged — so a crash replays, never loses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust

from ingest.exceptions import WireError
from ingest.reads import Reads
from ingest.validate import split_invalid
from ingest.wire import dead_letters_for, decode_structure, encode_batch, encode_dead_letter
from stream import metrics
from stream.registry import RegistryFollower
from stream.sessionize import Sessionizer
from stream.sighting_codec import encode_upserts
from tagtrail.config import Settings

log = logging.getLogger(__name__)

# Gateway messages handled per step: one kernel call per partition amortises the per-call cost
# over many small gateway batches; the short window bounds the latency it adds.
MAX_MESSAGES_PER_STEP = 2000
STEP_WITHIN_S = 0.02


@dataclass
class WorkerState:
    """Per-partition sessionizers and counters of one worker process."""

    sessionizers: dict[int, Sessionizer] = field(default_factory=dict)
    registry_versions: dict[int, int] = field(default_factory=dict)
    messages: int = 0
    reads: int = 0
    upserts: int = 0


@dataclass
class Outcome:
    """What one input message produced, ready to publish."""

    dead: list[tuple[Any, bytes]] = field(default_factory=list)
    dead_reasons: list[tuple[str, int]] = field(default_factory=list)
    late: list[bytes] = field(default_factory=list)
    upserts: list[bytes] = field(default_factory=list)
    n_reads: int = 0
    n_late: int = 0
    n_upserts: int = 0


def exit_now(exc: BaseException) -> None:
    """Leave the process at once, without running `finally` blocks.

    Faust acknowledges a step's events in a `finally` even when the step failed, which would
    commit offsets of reads that produced nothing. Exiting before that keeps them uncommitted,
    so a restarted worker processes them again: nothing is lost.
    """
    log.critical("worker step failed; exiting without committing: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def build_worker_app(
    settings: Settings,
    bootstrap: str,
    registry: RegistryFollower,
    on_fatal: Callable[[BaseException], None] = exit_now,
) -> faust.App:
    """A Faust app whose agent turns the reads topic into sighting upserts."""
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # stream.topics declares every topic with its policy
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    state = WorkerState()
    app.tagtrail_state = state  # type: ignore[attr-defined]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernels")

    reads_topic = app.topic(settings.topic_reads, value_type=bytes)
    dlq_topic = app.topic(settings.topic_dead_letter, value_type=bytes)
    late_topic = app.topic(settings.topic_late, value_type=bytes)
    sightings_topic = app.topic(settings.topic_sightings, value_type=bytes)

    def sessionizer(partition: int) -> Sessionizer:
        s = state.sessionizers.get(partition)
        if s is None:
            s = state.sessionizers[partition] = Sessionizer(
                gap_ms=settings.gap_ms,
                max_lateness_ms=settings.max_lateness_ms,
                registry=registry.registry,
            )
            state.registry_versions[partition] = registry.version
        elif state.registry_versions.get(partition) != registry.version:
            s.set_registry(registry.registry)
            state.registry_versions[partition] = registry.version
        return s

    def handle(messages: list[tuple[bytes, str, int, int]]) -> Outcome:
        """CPU part of a group of messages, run on the kernel thread (numba releases the GIL).

        Valid reads are gathered per partition and sessionized in one call each; the version is
        the partition's highest input offset, which only grows, so later rows always win.
        """
        out = Outcome()
        reg = registry.registry
        now_ms = int(time.time() * 1000)
        per_partition: dict[int, list[Reads]] = {}
        top_offset: dict[int, int] = {}
        gateway_of: dict[int, tuple[int, int]] = {}
        for data, topic, partition, offset in messages:
            where = {"topic": topic, "partition": partition, "offset": offset}
            try:
                batch = decode_structure(data)
            except WireError as e:
                out.dead.append(encode_dead_letter(e.reason, str(e), data, **where))
                out.dead_reasons.append((e.reason, 0))
                continue
            valid, rejected = split_invalid(
                batch, reg.reader_id, now_ms, settings.max_clock_skew_ms
            )
            out.dead.extend(dead_letters_for(batch, rejected, **where))
            out.dead_reasons.extend((reason, len(bad)) for reason, bad in rejected)
            per_partition.setdefault(partition, []).append(valid)
            top_offset[partition] = max(top_offset.get(partition, -1), offset)
            gateway_of[partition] = (batch.gateway_id, batch.batch_seq)
            out.n_reads += len(valid)
        for partition, parts in per_partition.items():
            reads = Reads.concat(parts)
            if not len(reads):
                continue
            changes = sessionizer(partition).process(reads, version=top_offset[partition] + 1)
            if len(changes.late):
                gw, seq = gateway_of[partition]
                out.late.append(encode_batch(changes.late, gw, seq))
                out.n_late += len(changes.late)
            n = len(changes.rows["tag_id"])
            if n:
                out.upserts.append(encode_upserts(changes.rows))
                out.n_upserts += n
        return out

    @app.agent(reads_topic)
    async def process_reads(stream: faust.StreamT[bytes]) -> None:
        await registry.caught_up.wait()
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(MAX_MESSAGES_PER_STEP, within=STEP_WITHIN_S):
            t0 = time.perf_counter()
            work = [
                (bytes(e.value), e.message.topic, e.message.partition, e.message.offset)
                for e in events
            ]
            try:
                res = await loop.run_in_executor(pool, handle, work)
            except Exception as e:  # a bug, not bad input (bad input is dead-lettered)
                on_fatal(e)
                raise
            sends: list[Awaitable[Any]] = []
            for headers, value in res.dead:
                sends.append(await dlq_topic.send(value=value, headers=headers))
            for reason, n_bad in res.dead_reasons:
                metrics.DEAD_LETTERS.labels(reason=reason).inc()
                metrics.INVALID_READS.labels(reason=reason).inc(n_bad)
            for value in res.late:
                sends.append(await late_topic.send(value=value))
            for value in res.upserts:
                sends.append(await sightings_topic.send(value=value))
            # Outputs are durable before these inputs are acknowledged (when the next step is
            # taken), so at worst a crash re-publishes upserts that the store deduplicates.
            if sends:
                await asyncio.gather(*sends)
            state.messages += len(events)
            state.reads += res.n_reads
            state.upserts += res.n_upserts
            metrics.READS_IN.inc(res.n_reads)
            metrics.LATE_READS.inc(res.n_late)
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)

    return app
