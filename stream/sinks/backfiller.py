"""The backfill consumer: the late-reads topic, in rounds, through `stream.sinks.late_merge.merge`.

One backfiller per pipeline, in consumer group `stream.kafka.groups.backfill_group`. The sink
hosts it (inside `tagtrail up` or `tagtrail sink`: the process that owns the store), so late reads
are merged continuously; `tagtrail backfill` then waits for it (`wait_for_host`), or, when no sink
runs, runs it itself until the topic is drained (`Backfiller.run`). Offsets are committed only
after a round's writes; messages with deferred reads stay uncommitted (retried as the stream moves
on), and each commit carries the round counters as metadata, which is how the command reports
them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from core.config import Settings
from core.errors import TagtrailError
from core.records.reads import Reads
from core.runtime import stop_event_on_signals
from ingest.exceptions import WireError
from ingest.wire import decode_structure
from store.runner import StoreRunner
from stream.followers.registry import RegistryFollower
from stream.kafka.cluster import committed_offset, offset_clients, topic_partitions
from stream.kafka.group_member import PartitionsListener
from stream.kafka.groups import backfill_group, drain_stages
from stream.sinks.late_merge import key_mask, merge, watermark_floors

log = logging.getLogger(__name__)

ROUND_MAX_READS = 500_000  # late reads merged per round: one set of store queries for all
RETRY_S = 5.0  # how often deferred reads are tried again in follow mode
CATCH_UP_TIMEOUT_S = 120.0


class NotCaughtUp(TagtrailError):
    """The worker or the sinks did not catch up with the reads topic in time."""

    retriable = True


@dataclass
class Summary:
    """Counters of a backfiller since it started (`since_ms`), as committed with its offsets."""

    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    host: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    reads_merged: int = 0
    rows_written: int = 0
    retractions: int = 0
    deferred: int = 0  # reads waiting now (their sessions may still change in the live stream)
    unmergeable: int = 0  # reads whose stored sightings' raw reads are gone (left as stored)
    rounds: int = 0

    def line(self) -> str:
        return (
            f"late reads merged: {self.reads_merged:,}; sighting rows written: "
            f"{self.rows_written:,} ({self.retractions:,} retractions)"
            + (
                f"; {self.deferred:,} reads deferred (still open in the live stream)"
                if self.deferred
                else ""
            )
            + (
                f"; {self.unmergeable:,} reads NOT merged (raw reads of their sightings gone)"
                if self.unmergeable
                else ""
            )
        )


@dataclass
class _Pending:
    """A consumed late message whose reads are not all merged yet."""

    partition: int
    offset: int
    reads: Reads


async def caught_up(settings: Settings, bootstrap: str, timeout_s: float) -> None:
    """Wait until the worker and both sinks (raw reads, sightings) have processed every read
    published so far.

    Reads first (the worker publishes its outputs before committing), then the sighting rows the
    worker had published by then. Raises NotCaughtUp after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    async with offset_clients(bootstrap) as (admin, consumer):
        # One target per topic (its end offsets now), for every group that consumes it.
        for topic, stages in groupby(drain_stages(settings), key=lambda stage: stage[1]):
            tps = await topic_partitions(consumer, [topic])
            target = await consumer.end_offsets(tps)
            for group, _ in stages:
                while True:
                    got = await admin.list_consumer_group_offsets(group, partitions=tps)
                    behind = [
                        tp for tp in tps if target[tp] > max(committed_offset(got.get(tp)), 0)
                    ]
                    if not behind:
                        break
                    if time.monotonic() > deadline:
                        raise NotCaughtUp(
                            f"consumer group {group} has not processed {topic} up to the reads "
                            f"published {timeout_s:.0f} s ago; a backfill needs the worker and "
                            "the sink running and caught up"
                        )
                    await asyncio.sleep(0.25)


class Backfiller:
    """Consumes the late-reads topic and merges it in rounds into the store behind `runner`."""

    def __init__(self, settings: Settings, bootstrap: str, runner: StoreRunner) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.runner = runner
        self.summary = Summary()
        self._pending: list[_Pending] = []

    async def run(self, *, follow: bool, stop: asyncio.Event | None = None) -> Summary:
        """Merge until the late topic (as of the start) is consumed, or, with `follow`, until
        `stop` is set. Messages with deferred reads stay uncommitted for a later run."""
        s = self.settings
        registry = RegistryFollower(self.bootstrap, s.topic_readers)
        await registry.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=backfill_group(s),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
        )
        await consumer.start()
        try:
            await registry.caught_up.wait()
            n_parts = len(await topic_partitions(consumer, [s.topic_reads]))
            if n_parts == 0:
                raise TagtrailError(f"topic {s.topic_reads} does not exist on {self.bootstrap}")
            # Subscribed, not assigned: the group then shows a member, which is how the command
            # finds a running backfiller (one per pipeline: see the module docstring).
            consumer.subscribe([s.topic_late], listener=PartitionsListener(revoked=self._drop))
            first: list[_Pending] = []
            join_by = time.monotonic() + CATCH_UP_TIMEOUT_S
            while not consumer.assignment():  # polling joins the group
                first += self._decode(await consumer.getmany(timeout_ms=200, max_records=2000))
                if not follow and time.monotonic() > join_by:
                    raise TagtrailError(
                        f"no partition of {s.topic_late} assigned to this backfiller within "
                        f"{CATCH_UP_TIMEOUT_S:.0f} s (is another one holding them?)"
                    )
            ends = await consumer.end_offsets(list(consumer.assignment()))
            last_try = 0.0
            while stop is None or not stop.is_set():
                new, first = first + await self._fetch(consumer), []
                due = self._pending and time.monotonic() - last_try >= RETRY_S
                if new or due:
                    last_try = time.monotonic()
                    try:
                        await self._round(consumer, new, registry, n_parts, final=not follow)
                    except TagtrailError as e:
                        if not (follow and e.retriable):
                            raise
                        log.warning("backfill round failed (%s); retried in %s s", e, RETRY_S)
                        self._pending += new
                drained = True
                for tp, end in ends.items():
                    drained = drained and await self._position(consumer, tp) >= end
                if not follow and drained and not new:
                    break
                if not new:
                    await asyncio.sleep(0.2 if follow else 0)
        finally:
            await consumer.stop()
            await registry.stop()
        self.summary.deferred = sum(len(p.reads) for p in self._pending)
        return self.summary

    async def _drop(self, revoked: set[TopicPartition]) -> None:
        """Forget deferred reads of partitions another member now owns (it re-reads them)."""
        gone = {tp.partition for tp in revoked}
        self._pending = [p for p in self._pending if p.partition not in gone]

    async def _position(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        return int(await consumer.position(tp))

    async def _fetch(self, consumer: AIOKafkaConsumer) -> list[_Pending]:
        out: list[_Pending] = []
        while sum(len(p.reads) for p in out) < ROUND_MAX_READS:
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            if not batch:
                break
            out += self._decode(batch)
        return out

    @staticmethod
    def _decode(batch: dict[TopicPartition, list[Any]]) -> list[_Pending]:
        out = []
        for tp, msgs in batch.items():
            for m in msgs:
                try:
                    reads = decode_structure(bytes(m.value)).reads
                except WireError as e:  # the worker wrote it: a corrupt log, not bad input
                    raise TagtrailError(
                        f"late-reads message {tp.topic}/{tp.partition}@{m.offset} does not "
                        f"decode: {e}"
                    ) from None
                out.append(_Pending(tp.partition, m.offset, reads))
        return out

    async def _round(
        self,
        consumer: AIOKafkaConsumer,
        new: list[_Pending],
        registry: RegistryFollower,
        n_parts: int,
        *,
        final: bool,
    ) -> None:
        s = self.settings
        todo = self._pending + new
        late = Reads.concat([p.reads for p in todo])
        try:
            # Twice: first so that the floors see the raw reads published so far, then so that
            # the worker has processed every raw read the floors saw (see stream.sinks.late_merge).
            await caught_up(s, self.bootstrap, CATCH_UP_TIMEOUT_S)
            floors = await self.runner.run(watermark_floors, late, n_parts, s.max_lateness_ms)
            await caught_up(s, self.bootstrap, CATCH_UP_TIMEOUT_S)
        except NotCaughtUp:
            if final:
                raise
            log.warning("backfill: pipeline not caught up; late reads retried later")
            self._pending = todo
            return
        res = await self.runner.run(merge, late, floors, s, registry.registry, n_parts)
        keys = {"tag_id": res.deferred.tag_id, "reader_id": res.deferred.reader_id}
        self._pending = []
        if len(res.deferred):
            for p in todo:
                keep = np.flatnonzero(key_mask(p.reads, keys))
                if len(keep):
                    self._pending.append(_Pending(p.partition, p.offset, p.reads.take(keep)))
        sm = self.summary
        sm.reads_merged += len(res.merged)
        sm.rows_written += res.rows
        sm.retractions += res.retractions
        if len(res.unmergeable):
            sm.unmergeable += len(res.unmergeable)
            log.warning(
                "backfill: %d late reads not merged: their sightings' raw reads are gone "
                "(older than raw_reads_ttl_days, or stored before raw reads were kept)",
                len(res.unmergeable),
            )
        sm.deferred = sum(len(p.reads) for p in self._pending)
        sm.rounds += 1
        await self._commit(consumer)
        log.info("backfill round: %s", sm.line())

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {}
        for tp in consumer.assignment():
            pos = await self._position(consumer, tp)
            held = [p.offset for p in self._pending if p.partition == tp.partition]
            meta = {"seen": pos, "summary": asdict(self.summary)}
            offsets[tp] = OffsetAndMetadata(min([pos, *held]), json.dumps(meta))
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as e:
                # E.g. a rebalance: the next owner re-reads these messages and merges them again,
                # which writes the same sightings. Not worth stopping the sink for.
                log.warning("backfill: offsets not committed (%r); they will be re-merged", e)


async def host_running(settings: Settings, bootstrap: str) -> bool:
    """True if a backfiller (a sink's, or another `tagtrail backfill`) is in the group now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.describe_consumer_groups([backfill_group(settings)])
    finally:
        await admin.close()
    for r in resp:
        for group in r.to_object()["groups"]:
            if group["members"]:
                return True
    return False


def _summary_of(om: OffsetAndMetadata | None) -> tuple[int, Summary | None]:
    """(seen offset, counters) from a committed offset's metadata."""
    if om is None or om.offset < 0:
        return -1, None
    try:
        meta = json.loads(om.metadata or "{}")
        return int(meta.get("seen", om.offset)), Summary(**meta["summary"])
    except (ValueError, KeyError, TypeError):
        return int(om.offset), None  # committed by something else: offsets only


async def wait_for_host(settings: Settings, bootstrap: str, timeout_s: float) -> Summary:
    """Wait until the running backfiller has processed every late read published so far.

    Returns what it merged meanwhile (its counters since the wait began, or since it started if
    it restarted meanwhile), with the reads it defers now. Raises TagtrailError on timeout.
    """
    group = backfill_group(settings)
    async with offset_clients(bootstrap) as (admin, consumer):
        tps = await topic_partitions(consumer, [settings.topic_late])
        ends = await consumer.end_offsets(tps)
        before = _latest(await admin.list_consumer_group_offsets(group, partitions=tps))
        deadline = time.monotonic() + timeout_s
        while True:
            got = await admin.list_consumer_group_offsets(group, partitions=tps)
            now = _latest(got)
            # Reads it deferred before we came are retried every RETRY_S: wait for that round.
            retried = (
                before is None
                or before.deferred == 0
                or (now is not None and (now.host, now.since_ms) != (before.host, before.since_ms))
                or (now is not None and now.rounds > before.rounds)
            )
            if retried and all(
                _summary_of(got.get(tp))[0] >= ends[tp] for tp in tps if ends[tp] > 0
            ):
                break
            if time.monotonic() > deadline:
                raise TagtrailError(
                    f"the running backfiller (group {group}) did not reach the end of "
                    f"{settings.topic_late} within {timeout_s:.0f} s"
                )
            await asyncio.sleep(0.5)
    after = _latest(got) or Summary(reads_merged=0)
    if before is None or (before.host, before.since_ms) != (after.host, after.since_ms):
        return after
    return Summary(
        since_ms=after.since_ms,
        host=after.host,
        reads_merged=after.reads_merged - before.reads_merged,
        rows_written=after.rows_written - before.rows_written,
        retractions=after.retractions - before.retractions,
        deferred=after.deferred,
        unmergeable=after.unmergeable - before.unmergeable,
        rounds=after.rounds - before.rounds,
    )


def _latest(got: dict[TopicPartition, OffsetAndMetadata]) -> Summary | None:
    """The newest counters among the partitions' commit metadata (most rounds)."""
    found = [s for s in (_summary_of(om)[1] for om in got.values()) if s is not None]
    return max(found, key=lambda s: (s.since_ms, s.rounds)) if found else None


def run_backfill_command(
    settings: Settings, bootstrap: str, *, follow: bool, timeout_s: float
) -> str:
    """`tagtrail backfill`: wait for the sink's backfiller, or run one here; the summary line."""
    return asyncio.run(_command(settings, bootstrap, follow=follow, timeout_s=timeout_s))


async def _command(settings: Settings, bootstrap: str, *, follow: bool, timeout_s: float) -> str:

    from store.open import open_store

    if await host_running(settings, bootstrap):
        if follow:
            raise TagtrailError(
                "a backfiller is already running (the sink of `tagtrail up` or `tagtrail sink` "
                "merges late reads continuously); run `tagtrail backfill` without --follow to "
                "wait for it"
            )
        summary = await wait_for_host(settings, bootstrap, timeout_s)
        return summary.line() + " (by the running sink)"
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    stop = stop_event_on_signals()
    try:
        summary = await Backfiller(settings, bootstrap, runner).run(follow=follow, stop=stop)
    finally:
        await asyncio.to_thread(runner.close)
    return summary.line()
