"""The worker: gateway batches in; dead letters, late reads, sighting upserts, alerts out.

One consumer-group member takes every message the broker has for its partitions in one fetch
and hands them to `stream.worker.processing` off the event loop, one kernel call per partition; the
reads of hotlisted tags are applied first and their alerts sent while the rest is applied.
Outputs are published (`stream.worker.publishing`), then the inputs' offsets committed, so a crash
replays, never loses. Partition state is checkpointed to the data folder in turns
(`stream.worker.checkpoint_turns`) and, on assignment, restored and caught up to the committed
offset (`stream.worker.ownership`), so sightings stay exact across restarts and rebalances.

It consumes with aiokafka, not a Faust agent: Faust hands a stream its messages one by one (per
message: a fetch-thread hop, tasks, a queue, an ack), which at the gateways' message rate holds a
message back longer than an alert may take, even on an idle machine (docs/performance.md). A
fetch here is one call, so an alert leaves within one step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import TopicPartition

from core.config import Settings
from stream import metrics
from stream.faust_app import exit_now
from stream.followers.hotlist import HotlistFollower
from stream.followers.registry import RegistryFollower
from stream.kafka.group_member import PartitionsListener, group_consumer
from stream.kafka.groups import worker_group
from stream.worker.checkpoint_turns import CheckpointTurns
from stream.worker.gc_pause import freeze_long_lived
from stream.worker.ownership import Ownership
from stream.worker.processing import Message, Processor, WorkerState, warm_up
from stream.worker.publishing import Publisher

log = logging.getLogger(__name__)

# Gateway messages handled per step: one kernel call per partition amortises the per-call cost
# over many small gateway batches; a step takes what one fetch has, up to this many.
MAX_MESSAGES_PER_STEP = 2000
IDLE_POLL_MS = 200
COMMIT_INTERVAL_S = 1.0


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
        # The one thread that runs the kernels and reads or changes the partitions' state.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernels")
        self.turns = CheckpointTurns(settings, self.processor, self._pool)
        self.outputs = Publisher(settings, bootstrap, self.state, self.processor.published)
        self.ownership = Ownership(
            settings, bootstrap, self.processor, self._pool, self.turns, self.outputs
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        s, own = self.settings, self.ownership
        consumer = group_consumer(s, self.bootstrap, worker_group(s))
        await self.outputs.start()
        # Set before the consumer starts: its first rebalance may already publish and commit.
        own.consumer = consumer
        try:
            # A failed hand-over or take-over ends the process like a failed step: a
            # half-adopted partition would produce wrong sightings.
            listener = PartitionsListener(
                revoked=own.revoked, assigned=own.assigned, on_fatal=self.on_fatal
            )
            consumer.subscribe([s.topic_reads], listener=listener)
            await consumer.start()
        except BaseException:
            own.consumer = None
            await self.outputs.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="tagtrail-worker")

    async def stop(self) -> None:
        """Finish the step in flight, checkpoint and commit, then leave the group."""
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=60)
            if not self._task.done():
                self._task.cancel()
        consumer = self.ownership.consumer
        if consumer is not None:
            await self.ownership.release_all()
            await consumer.stop()
        await self.outputs.stop()
        self._pool.shutdown(wait=True)
        self.turns.close()

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        await self.registry.caught_up.wait()
        if self.hotlist is not None:
            await self.hotlist.caught_up.wait()
        own, turns = self.ownership, self.turns
        consumer = own.consumer
        assert consumer is not None
        await asyncio.get_running_loop().run_in_executor(self._pool, warm_up)
        freeze_long_lived()
        warm = False
        try:
            while not self._stopping:
                due = turns.due(len(own.owned))
                fetched = await consumer.getmany(
                    timeout_ms=0 if due else IDLE_POLL_MS, max_records=MAX_MESSAGES_PER_STEP
                )
                if fetched:
                    await self._step(fetched)
                    if not warm:
                        # The first step loaded more of the kernels, whose objects live on. A
                        # full collection here would stall the next steps on the whole heap:
                        # the young generations only.
                        freeze_long_lived(young_only=True)
                        warm = True
                    if turns.due(len(own.owned), overdue=True):
                        await self._checkpoint_next()
                elif due:  # nothing waiting: the write delays no read
                    await self._checkpoint_next()
                if time.monotonic() - own.last_commit >= COMMIT_INTERVAL_S:
                    async with own.lock:
                        await own.commit(sorted(own.owned))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or a broker failure: never commit what failed
            self.on_fatal(e)
            raise

    async def _step(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        own, outputs = self.ownership, self.outputs
        async with own.lock:
            # Records fetched before a rebalance took their partition away belong to its new
            # owner now: they are neither processed nor committed here.
            work: list[Message] = [
                (m.value, tp.topic, tp.partition, m.offset, float(m.timestamp))
                for tp, records in fetched.items()
                if tp.partition in own.owned
                for m in records
            ]
            if not work:
                return
            oldest_ms = min(w[4] for w in work)
            metrics.QUEUE_SECONDS.observe(max(time.time() - oldest_ms / 1000, 0.0))
            # Alerts and upserts of hotlisted tags leave while the bulk of the batch is applied.
            t_begin = time.perf_counter()
            pending = await loop.run_in_executor(self._pool, self.processor.begin, work)
            self.turns.on_alerts(len(pending.first.alerts))
            t_send = time.perf_counter()
            first = await outputs.send(pending.first)
            t_finish = time.perf_counter()
            res = await loop.run_in_executor(self._pool, self.processor.finish, pending)
            await outputs.acked(pending.first, first)
            await outputs.publish(res)
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
                if tp.partition in own.owned and records:
                    own.done[tp.partition] = records[-1].offset + 1
                    self.turns.changed([tp.partition])
        self.state.messages += len(work)
        self.state.reads += res.n_reads
        self.state.upserts += res.n_upserts
        metrics.READS_IN.inc(res.n_reads)
        metrics.LATE_READS.inc(res.n_late)
        metrics.DUPLICATE_READS.inc(res.n_duplicates)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)

    async def _checkpoint_next(self) -> None:
        """Checkpoint the next partition in turn (`CheckpointTurns`). Called between steps,
        preferably when nothing is waiting."""
        if await self.turns.ready():
            async with self.ownership.lock:
                await self.turns.write_next(self.ownership.owned)
