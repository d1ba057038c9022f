"""The partitions a worker owns: taken over on assignment, handed back on revocation, committed."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.config import Settings
from stream.kafka.group_member import MAX_MESSAGE_BYTES
from stream.kafka.groups import worker_group
from stream.worker.alert_history import alert_ids_since
from stream.worker.checkpoint import Checkpoint
from stream.worker.checkpoint_turns import CheckpointTurns
from stream.worker.output_history import log_start, published_since
from stream.worker.processing import Message, Processor
from stream.worker.publishing import Publisher, sightings_partition

log = logging.getLogger(__name__)


class Ownership:
    """Which reads partitions the worker processes (`owned`), the offsets it may commit for them
    (`done`), and the `lock` that lets one step, rebalance or checkpoint turn run at a time.

    On assignment a partition's state is restored from its checkpoint, told the alerts and the
    sighting rows its last owner published after that checkpoint, and caught up to the committed
    offset; on revocation it is checkpointed and its offsets committed while it is still the
    worker's.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        processor: Processor,
        kernels: Executor,
        turns: CheckpointTurns,
        outputs: Publisher,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.processor = processor
        self.turns = turns
        self.outputs = outputs
        self._kernels = kernels
        self.lock = asyncio.Lock()  # one step, rebalance or checkpoint at a time
        self.owned: set[int] = set()  # partitions whose state is adopted and current
        self.done: dict[int, int] = {}  # partition -> next offset to commit (outputs durable)
        self.last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None  # the worker's group member

    async def commit(self, partitions: list[int]) -> None:
        """Commit the offsets whose outputs are durable. A failed commit only means those
        messages are processed again by whoever owns them next: reads are a set."""
        self.last_commit = time.monotonic()
        offsets = {
            TopicPartition(self.settings.topic_reads, p): self.done.pop(p)
            for p in partitions
            if p in self.done
        }
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as e:
            log.warning("offset commit failed (%r): those messages will be processed again", e)

    async def release_all(self) -> None:
        """The worker stops: checkpoint and commit every partition it owns."""
        async with self.lock:
            await self._release(sorted(self.owned))

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in revoked if tp.topic == self.settings.topic_reads)
        async with self.lock:
            # The state stays in memory: a partition assigned back to this worker goes on from
            # it. Until then nothing of it is processed (`owned`).
            await self._release(gone)

    async def _release(self, partitions: list[int]) -> None:
        """Checkpoint and commit `partitions`, then stop processing them (lock held)."""
        # A checkpoint still being flushed shares its temp file with the one saved now.
        await self.turns.synced()
        await asyncio.get_running_loop().run_in_executor(self._kernels, self.turns.save, partitions)
        await self.commit(partitions)
        self.owned.difference_update(partitions)
        self.turns.forget(partitions)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.settings.topic_reads)
        async with self.lock:
            proc, loop = self.processor, asyncio.get_running_loop()
            for p in [p for p in proc.partitions if p not in mine]:
                del proc.partitions[p]  # another worker owns it now
                self.done.pop(p, None)
            adopted: dict[int, int] = {}
            since_ms = int(time.time() * 1000)
            for p in mine:
                if p in proc.partitions:
                    continue  # kept across this rebalance: processed up to its committed offset
                ckpt = await loop.run_in_executor(
                    self._kernels, self.turns.store.load, self.settings.topic_reads, p
                )
                adopted[p] = proc.adopt(p, ckpt)
                since_ms = min(since_ms, ckpt.saved_ms if ckpt is not None else 0)
                await self._expect_output(p, ckpt)
            if adopted:
                # Alerts the previous owner sent after its last checkpoint: never send them again.
                sent = await alert_ids_since(self.bootstrap, self.settings.topic_alerts, since_ms)
                for p, offset in adopted.items():
                    proc.partitions[p].alerted |= sent
                    await self._catch_up(p, offset + 1)
            self.owned = set(mine)
            self.turns.changed(adopted)  # caught up past their checkpoint

    async def _expect_output(self, partition: int, ckpt: Checkpoint | None) -> None:
        """Tell an adopted partition the sighting rows published for it after its checkpoint:
        the replay retracts those it does not make again (a crash between publishing and the
        next checkpoint would otherwise leave them in the store for good)."""
        q = sightings_partition(partition, self.outputs.n_sightings_partitions)
        start: int | None = None
        if ckpt is not None and ckpt.output is not None:
            if ckpt.output[0] == q:
                start = ckpt.output[1]
            else:  # the sightings topic's partitions changed: find the output by time
                log.warning(
                    "partition %d's output moved from sightings partition %d to %d",
                    partition, ckpt.output[0], q,
                )  # fmt: skip
        since_ms = ckpt.saved_ms if ckpt is not None else 0
        rows, first, end = await published_since(
            self.bootstrap, self.settings.topic_sightings, partition, q, start, since_ms
        )
        if ckpt is None:
            # No checkpoint: the replay starts at the reads' log start. Rows made from reads
            # retention has deleted cannot be judged by it, and are left as they are.
            s0 = await log_start(self.bootstrap, self.settings.topic_reads, partition)
            if s0 > 0:
                keep = rows["version"] > s0
                rows = {k: v[keep] for k, v in rows.items()}
        n = self.processor.expect(partition, rows, (q, first), (q, end))
        if n:
            log.info(
                "partition %d: %d sightings published after its checkpoint are checked as its "
                "reads are redelivered", partition, n,
            )  # fmt: skip

    async def _catch_up(self, partition: int, start: int) -> None:
        """Re-apply messages [start, committed) that a checkpoint does not cover."""
        tp = TopicPartition(self.settings.topic_reads, partition)
        side = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=worker_group(self.settings),
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
                    await self.outputs.publish(
                        await loop.run_in_executor(self._kernels, self.processor.step, msgs)
                    )
                if not batch or batch[-1].offset + 1 >= committed:
                    break
        finally:
            await side.stop()
