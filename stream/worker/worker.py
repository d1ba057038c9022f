"""The worker: gateway batches in; dead letters, late reads, sighting upserts, alerts out.

One consumer-group member takes every message the broker has for its partitions in one fetch
and hands them to `stream.worker.processing` off the event loop, one kernel call per partition; the
reads of hotlisted tags are applied first and their alerts sent while the rest is applied.
Outputs are published, then the inputs' offsets committed, so a crash replays, never loses.
Partition state is checkpointed to the data folder and, on assignment, restored and caught up to
the committed offset, so sightings stay exact across restarts and rebalances.

It consumes with aiokafka, not a Faust agent: Faust hands a stream its messages one by one
(per message: a fetch-thread hop, tasks, a queue, an ack), which at 1,600 gateway messages/s
costs 0.4-1.6 s before a message reaches the agent even on an idle machine (measured; see
docs/operations.md). A fetch here is one call, so an alert leaves within one step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from core.config import Settings
from core.records.alerts import Alert
from stream import metrics
from stream.exceptions import CheckpointStopped
from stream.faust_app import exit_now
from stream.followers.hotlist import HotlistFollower
from stream.followers.registry import RegistryFollower
from stream.kafka.group_member import MAX_MESSAGE_BYTES, group_consumer
from stream.worker.alert_history import alert_ids_since
from stream.worker.checkpoint import CheckpointStore, PendingCheckpoint
from stream.worker.gc_pause import freeze_long_lived
from stream.worker.processing import Message, Outcome, Processor, warm_up

log = logging.getLogger(__name__)

# Gateway messages handled per step: one kernel call per partition amortises the per-call cost
# over many small gateway batches; a step takes what one fetch has, up to this many.
MAX_MESSAGES_PER_STEP = 2000
IDLE_POLL_MS = 200
COMMIT_INTERVAL_S = 1.0
# Producer batches: aiokafka has one request in flight per broker and adds a partition's next
# batch only once the previous one left, so with the default 16 KB a burst of 10 k alerts (one
# partition, ~300 B each) waited ~200 round trips: 0.2-0.4 s measured. 8 MB takes ~27 k alerts;
# batch buffers grow as filled, so the limit costs no memory. (Half the broker's message limit.)
MAX_BATCH_BYTES = 8 * 1024 * 1024
# A checkpoint not written for this many of its turns is written even if the worker never idles.
CHECKPOINT_OVERDUE_TURNS = 3
# A step with this many alerts is a burst: checkpoint turns wait until a burst has been over for
# BURST_QUIET_S (up to CHECKPOINT_OVERDUE_TURNS). Late in a day the fork of a 300 MB partition
# and the copy-on-write faults while its writer runs slowed the steps after it: an evening
# burst that met one waited ~300 ms (in-process stack sampling over a paced day). A burst that
# starts while a writer is alive stops it (steps took 1.5-1.6x as long per message with one
# alive: copy-on-write faults), unless that partition's previous writer was stopped too: that
# one is let finish, so a restart's catch-up stays bounded.
ALERT_BURST = 50
BURST_QUIET_S = 1.0


@dataclass
class WorkerState:
    """Counters of one worker process."""

    messages: int = 0
    reads: int = 0
    upserts: int = 0
    alerts: int = 0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker._guard(self.worker._on_revoked(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker._guard(self.worker._on_assigned(assigned))


class Worker:
    """One member of the worker consumer group: `start()`, then `stop()`."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        registry: RegistryFollower,
        hotlist: HotlistFollower | None = None,
        on_fatal: Callable[[BaseException], None] = exit_now,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.registry = registry
        self.hotlist = hotlist
        self.on_fatal = on_fatal
        self.state = WorkerState()
        self.processor = Processor(settings, registry, hotlist)
        self.checkpoints = CheckpointStore(settings.data_dir / "state" / settings.consumer_group)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernels")
        # Checkpoint files are flushed to disk here, while the next steps run.
        self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-sync")
        self._syncing: asyncio.Future[bool] | None = None  # True: durable, False: stopped
        self._writing: tuple[int, PendingCheckpoint] | None = None  # what _syncing commits
        self._stopped: set[int] = set()  # partitions whose last writer was stopped by a burst
        self._lock = asyncio.Lock()  # one step, rebalance or checkpoint at a time
        self._owned: set[int] = set()  # partitions whose state is adopted and current
        self._done: dict[int, int] = {}  # partition -> next offset to commit (outputs durable)
        self._last_commit = self._last_checkpoint = time.monotonic()
        self._burst_at = float("-inf")  # when a step last had ALERT_BURST alerts or more
        self._last_saved = -1  # partition checkpointed last (they take turns)
        self._dirty: set[int] = set()  # partitions changed since their last checkpoint
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            # A send retried because a broker restart lost its acknowledgement is written once,
            # so an alert is never published twice.
            enable_idempotence=True,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        consumer = group_consumer(s, self.bootstrap, s.consumer_group)
        await producer.start()
        # Set before the consumer starts: its first rebalance may already publish and commit.
        self._producer, self._consumer = producer, consumer
        try:
            consumer.subscribe([s.topic_reads], listener=_Rebalance(self))
            await consumer.start()
        except BaseException:
            self._consumer = None
            await producer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="tagtrail-worker")

    async def stop(self) -> None:
        """Finish the step in flight, checkpoint and commit, then leave the group."""
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=60)
            if not self._task.done():
                self._task.cancel()
        if self._consumer is not None:
            async with self._lock:
                await self._synced()
                await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._save_checkpoints, sorted(self._owned)
                )
                await self._commit(sorted(self._owned))
                self._owned.clear()
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._pool.shutdown(wait=True)
        self._sync_pool.shutdown(wait=True)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        await self.registry.caught_up.wait()
        if self.hotlist is not None:
            await self.hotlist.caught_up.wait()
        assert self._consumer is not None
        await asyncio.get_running_loop().run_in_executor(self._pool, warm_up)
        freeze_long_lived()
        warm = False
        try:
            while not self._stopping:
                due = self._checkpoint_due()
                fetched = await self._consumer.getmany(
                    timeout_ms=0 if due else IDLE_POLL_MS, max_records=MAX_MESSAGES_PER_STEP
                )
                if fetched:
                    await self._step(fetched)
                    if not warm:
                        # The first step loaded more of the kernels, whose objects live on. A
                        # full collection here held the next steps ~60 ms in a burst of
                        # alerts: the young generations only.
                        freeze_long_lived(young_only=True)
                        warm = True
                    if self._checkpoint_due(overdue=True):
                        await self._checkpoint_next()
                elif due:  # nothing waiting: the write delays no read
                    await self._checkpoint_next()
                if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                    async with self._lock:
                        await self._commit(sorted(self._owned))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or a broker failure: never commit what failed
            self.on_fatal(e)
            raise

    async def _step(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        async with self._lock:
            # Records fetched before a rebalance took their partition away belong to its new
            # owner now: they are neither processed nor committed here.
            work: list[Message] = [
                (m.value, tp.topic, tp.partition, m.offset, float(m.timestamp))
                for tp, records in fetched.items()
                if tp.partition in self._owned
                for m in records
            ]
            if not work:
                return
            oldest_ms = min(w[4] for w in work)
            metrics.QUEUE_SECONDS.observe(max(time.time() - oldest_ms / 1000, 0.0))
            # Alerts and upserts of hotlisted tags leave while the bulk of the batch is applied.
            t_begin = time.perf_counter()
            pending = await loop.run_in_executor(self._pool, self.processor.begin, work)
            if len(pending.first.alerts) >= ALERT_BURST:
                self._burst_at = time.monotonic()
                self._stop_writer()
            t_send = time.perf_counter()
            first = await self._send(pending.first)
            t_finish = time.perf_counter()
            res = await loop.run_in_executor(self._pool, self.processor.finish, pending)
            await self._acked(pending.first, first)
            await self._publish(res)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "step: %d messages, oldest %.0f ms old; begin %.3f s, first sends %.3f s, "
                    "rest %.3f s; %d alerts",
                    len(work), (time.time() * 1000 - oldest_ms) - (time.perf_counter() - t0) * 1000,
                    t_send - t_begin, t_finish - t_send, time.perf_counter() - t_finish,
                    len(pending.first.alerts),
                )  # fmt: skip
            res.extend(pending.first)
            for tp, records in fetched.items():
                if tp.partition in self._owned and records:
                    self._done[tp.partition] = records[-1].offset + 1
                    self._dirty.add(tp.partition)
        self.state.messages += len(work)
        self.state.reads += res.n_reads
        self.state.upserts += res.n_upserts
        metrics.READS_IN.inc(res.n_reads)
        metrics.LATE_READS.inc(res.n_late)
        metrics.DUPLICATE_READS.inc(res.n_duplicates)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)

    async def _publish(self, res: Outcome) -> None:
        await self._acked(res, await self._send(res))

    async def _send(self, res: Outcome) -> list[Awaitable[Any]]:
        """Hand `res` to the producer; the returned futures resolve when the broker has it."""
        s, producer = self.settings, self._producer
        assert producer is not None
        # Alerts first: a police officer waits for them; upserts can be megabytes.
        sends = await self._send_alerts(res.alerts)
        for headers, value in res.dead:
            sends.append(await producer.send(s.topic_dead_letter, value, headers=headers))
        for value, p in zip(res.late, res.late_partitions, strict=True):
            # The late batch keeps its reads' partition, so one backfiller owns each key.
            sends.append(await producer.send(s.topic_late, value, partition=p))
        for value in res.upserts:
            sends.append(await producer.send(s.topic_sightings, value))
        return sends

    async def _send_alerts(self, alerts: list[Alert]) -> list[Awaitable[Any]]:
        """Alerts keyed by case id, in per-partition batches: a burst of thousands (a replay,
        a backlog) costs a few microseconds per alert instead of a producer call each."""
        if not alerts:
            return []
        producer, topic = self._producer, self.settings.topic_alerts
        assert producer is not None
        partitions = sorted(await producer.partitions_for(topic))
        sends: list[Awaitable[Any]] = []
        open_batches: dict[int, Any] = {}
        for alert in alerts:
            key = alert.case_id.encode()
            # The producer's own key -> partition rule: a case's alerts stay in order.
            p = (
                self._partitioner(key, partitions, partitions)
                if len(partitions) > 1
                else partitions[0]
            )
            value = alert.encode()
            batch = open_batches.get(p)
            if batch is None or batch.append(key=key, value=value, timestamp=None) is None:
                if batch is not None:  # full: send it, start the next
                    sends.append(await producer.send_batch(batch, topic, partition=p))
                batch = open_batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for p, batch in open_batches.items():
            sends.append(await producer.send_batch(batch, topic, partition=p))
        return sends

    async def _acked(self, res: Outcome, sends: list[Awaitable[Any]]) -> None:
        if sends:
            await asyncio.gather(*sends)
        for reason, n_bad in res.dead_reasons:
            metrics.DEAD_LETTERS.labels(reason=reason).inc()
            metrics.INVALID_READS.labels(reason=reason).inc(n_bad)
        now_ms = time.time() * 1000
        metrics.ALERTS.inc(len(res.alerts))
        for alert in res.alerts:
            if alert.read_published_ms:
                metrics.ALERT_LATENCY.observe(max(now_ms - alert.read_published_ms, 0) / 1000)
        self.state.alerts += len(res.alerts)

    async def _commit(self, partitions: list[int]) -> None:
        """Commit the offsets whose outputs are durable. A failed commit only means those
        messages are processed again by whoever owns them next: reads are a set."""
        self._last_commit = time.monotonic()
        offsets = {
            TopicPartition(self.settings.topic_reads, p): self._done.pop(p)
            for p in partitions
            if p in self._done
        }
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as e:
            log.warning("offset commit failed (%r): those messages will be processed again", e)

    def _checkpoint_due(self, overdue: bool = False) -> bool:
        """A partition's turn has come (`overdue`: CHECKPOINT_OVERDUE_TURNS turns ago). Partitions
        take turns, each saved every checkpoint interval (a day's state is ~1 GB in all, written
        and fsynced), so one partition's write is in progress at a time. A turn waits for a
        burst of alerts to pass; an overdue one does not."""
        now = time.monotonic()
        if not overdue and now - self._burst_at < BURST_QUIET_S:
            return False
        turns = CHECKPOINT_OVERDUE_TURNS if overdue else 1
        every = self.settings.checkpoint_interval_s / max(len(self._owned), 1)
        return bool(self._dirty) and now - self._last_checkpoint >= turns * every

    async def _checkpoint_next(self) -> None:
        """Checkpoint the next partition in turn. Called between steps, preferably when nothing
        is waiting. Steps wait only for the fork of the writer (see CheckpointStore.write), not
        for the write: written in place, one partition late in a day held them 0.4-0.5 s. While
        the previous one is still being written or flushed to disk, this turn is skipped rather
        than waited for."""
        if self._syncing is not None and not self._syncing.done():
            self._last_checkpoint = time.monotonic()  # try again next turn, without spinning
            return
        await self._synced()  # done: only raises what it failed with
        loop = asyncio.get_running_loop()
        async with self._lock:
            dirty = sorted(self._dirty & self._owned)
            self._last_checkpoint = time.monotonic()
            if not dirty:
                return
            # A partition whose writer a burst stopped goes first, lest its turn be lost.
            first = sorted(self._stopped & set(dirty))
            p = first[0] if first else next((q for q in dirty if q > self._last_saved), dirty[0])
            self._last_saved = p
            self._dirty.discard(p)
            t0 = time.perf_counter()
            ckpt = self.processor.checkpoint(p)
            topic = self.settings.topic_reads
            others = self.processor.arrays_except(p)
            written = await loop.run_in_executor(
                self._pool,
                partial(self.checkpoints.write, topic, p, ckpt, fork=True, unshared=others),
            )
            held = time.perf_counter() - t0
            metrics.CHECKPOINT_PAUSE.observe(held)
            log.debug("checkpoint of partition %d forked: steps held %.3f s", p, held)
        self._writing = (p, written)
        self._syncing = loop.run_in_executor(self._sync_pool, self._commit_checkpoint, written, t0)

    @staticmethod
    def _commit_checkpoint(written: PendingCheckpoint, t0: float) -> bool:
        """On the sync thread: wait for the writer, then make its file durable and current.
        False if a burst stopped the writer."""
        try:
            written.commit()
        except CheckpointStopped:
            log.debug("checkpoint %s stopped by a burst of alerts", written.path.name)
            return False
        took = time.perf_counter() - t0
        metrics.CHECKPOINT_SECONDS.observe(took)
        log.debug("checkpoint %s durable: %.3f s", written.path.name, took)
        return True

    def _stop_writer(self) -> None:
        """A burst of alerts: stop the checkpoint writer if it is alive, unless its partition's
        previous writer was stopped too (see ALERT_BURST). The partition is saved at a later
        turn, before the others."""
        if self._writing is None or self._syncing is None or self._syncing.done():
            return
        p, written = self._writing
        if p not in self._stopped and written.stop():
            self._stopped.add(p)
            self._dirty.add(p)
            metrics.CHECKPOINTS_STOPPED.inc()

    async def _synced(self) -> None:
        """Wait for the checkpoint being flushed to disk (its failure fails the caller)."""
        if self._syncing is not None:
            syncing, self._syncing = self._syncing, None
            durable = await syncing
            assert self._writing is not None
            p, self._writing = self._writing[0], None
            if durable:
                self._stopped.discard(p)

    def _save_checkpoints(self, partitions: list[int]) -> None:
        for p in partitions:
            if p in self.processor.partitions:
                self.checkpoints.save(self.settings.topic_reads, p, self.processor.checkpoint(p))

    # -- rebalances ----------------------------------------------------------------------------

    async def _guard(self, work: Awaitable[None]) -> None:
        # aiokafka logs and swallows a listener's exception; a half-adopted partition would
        # produce wrong sightings, so a failure here ends the process like a failed step.
        try:
            await work
        except Exception as e:
            self.on_fatal(e)
            raise

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in revoked if tp.topic == self.settings.topic_reads)
        async with self._lock:
            # A checkpoint still being flushed shares its temp file with the one saved now.
            await self._synced()
            # The state stays in memory: a partition assigned back to this worker goes on from
            # it. Until then nothing of it is processed (`_owned`).
            await asyncio.get_running_loop().run_in_executor(
                self._pool, self._save_checkpoints, gone
            )
            await self._commit(gone)
            self._owned.difference_update(gone)
            self._dirty.difference_update(gone)
            self._stopped.difference_update(gone)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.settings.topic_reads)
        async with self._lock:
            proc, loop = self.processor, asyncio.get_running_loop()
            for p in [p for p in proc.partitions if p not in mine]:
                del proc.partitions[p]  # another worker owns it now
                self._done.pop(p, None)
            adopted: dict[int, int] = {}
            since_ms = int(time.time() * 1000)
            for p in mine:
                if p in proc.partitions:
                    continue  # kept across this rebalance: processed up to its committed offset
                ckpt = await loop.run_in_executor(
                    self._pool, self.checkpoints.load, self.settings.topic_reads, p
                )
                adopted[p] = proc.adopt(p, ckpt)
                since_ms = min(since_ms, ckpt.saved_ms if ckpt is not None else 0)
            if adopted:
                # Alerts the previous owner sent after its last checkpoint: never send them again.
                sent = await alert_ids_since(self.bootstrap, self.settings.topic_alerts, since_ms)
                for p, offset in adopted.items():
                    proc.partitions[p].alerted |= sent
                    await self._catch_up(p, offset + 1)
            self._owned = set(mine)
            self._dirty |= adopted.keys()  # caught up past their checkpoint

    async def _catch_up(self, partition: int, start: int) -> None:
        """Re-apply messages [start, committed) that a checkpoint does not cover."""
        tp = TopicPartition(self.settings.topic_reads, partition)
        side = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.settings.consumer_group,
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
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
                msgs: list[Message] = [
                    (m.value, tp.topic, partition, m.offset, float(m.timestamp))
                    for m in batch
                    if m.offset < committed
                ]
                if msgs:
                    await self._publish(
                        await loop.run_in_executor(self._pool, self.processor.step, msgs)
                    )
                if not batch or batch[-1].offset + 1 >= committed:
                    break
        finally:
            await side.stop()
