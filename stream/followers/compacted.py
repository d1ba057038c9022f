"""Follows a compacted topic from its beginning, in every worker: a table every worker sees whole.

The reader registry and the hotlist are small and needed in full by every worker (not a share of
partitions), so each worker reads all partitions without a consumer group. `caught_up` is set once
the log end seen at start has been read, so a worker can wait for a complete table before work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream.exceptions import BrokerUnavailable
from stream.kafka.cluster import topic_partitions

log = logging.getLogger(__name__)


class CompactedFollower:
    """Calls `on_change(rows, changed)` with the latest value per key (tombstones removed) and the
    keys the poll wrote or deleted, after each poll that changed something; `version` counts the
    changes."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        on_change: Callable[[dict[bytes, bytes], set[bytes]], None],
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.on_change = on_change
        self.rows: dict[bytes, bytes] = {}
        self.version = 0
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # Should the position ever fall outside the log (a broker that lost its tail), read
            # the table again from the start rather than skip to the end: re-reading is harmless.
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        tps: list[TopicPartition] = []
        for _ in range(50):  # a just-created topic takes a moment to appear in metadata
            tps = await topic_partitions(self._consumer, [self.topic])
            if tps:
                break
            await asyncio.sleep(0.2)
        if not tps:
            await self._consumer.stop()
            raise BrokerUnavailable(f"topic {self.topic} does not exist on the broker")
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        end = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._follow(end))

    async def _follow(self, end: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        pending = {tp: off for tp, off in end.items() if off > 0}
        if not pending:
            self.caught_up.set()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            except KafkaError as e:
                # aiokafka rides out a lost connection itself; an error that still reaches us
                # must not end the task, or the table would silently freeze until a restart.
                log.warning("%s follower: %r; retrying", self.topic, e)
                await asyncio.sleep(1.0)
                continue
            changed: set[bytes] = set()
            for tp, msgs in batches.items():
                for m in msgs:
                    if m.value is None:
                        self.rows.pop(m.key, None)
                    else:
                        self.rows[m.key] = m.value
                    changed.add(m.key)
                    if tp in pending and m.offset + 1 >= pending[tp]:
                        del pending[tp]
            if changed:
                self.on_change(self.rows, changed)
                self.version += 1
            if not pending and not self.caught_up.is_set():
                log.info("%s loaded: %d keys", self.topic, len(self.rows))
                self.caught_up.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
