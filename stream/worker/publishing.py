"""The worker's producer: a step's outputs published, alerts first, counted once acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from core.config import Settings
from core.records.alerts import Alert
from stream import metrics
from stream.kafka.group_member import MAX_MESSAGE_BYTES
from stream.worker.processing import Outcome, WorkerState

# Producer batches: aiokafka has one request in flight per broker and adds a partition's next
# batch only once the previous one has left, so with small batches a burst of alerts (one
# partition) waits one round trip per batch. Batch buffers grow as they are filled, so a large
# limit costs no memory. (Half the broker's message limit.)
MAX_BATCH_BYTES = 8 * 1024 * 1024
# Header of a sightings message: the reads partition whose state emitted it. A restart reads its
# own output back by it (stream.worker.output_history).
READS_PARTITION_HEADER = "reads-partition"


def sightings_partition(reads_partition: int, n_partitions: int) -> int:
    """The sightings partition a reads partition's upserts go to: one, so a restart finds what
    it emitted after its checkpoint in one partition, in order."""
    return reads_partition % n_partitions


class Publisher:
    """Publishes Outcomes: `start()`, `send()` then `acked()` (or `publish()` for both), `stop()`.

    `acked` counts what the broker has (metrics, and the alerts in `state`), and tells
    `on_upserts(reads partition, sightings partition, next offset)` where each partition's
    upserts now end on the sightings topic."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        state: WorkerState,
        on_upserts: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.state = state
        self.on_upserts = on_upserts
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self.n_sightings_partitions = 1

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            # A send retried because a broker restart lost its acknowledgement is written once,
            # so an alert is never published twice.
            enable_idempotence=True,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        await producer.start()
        self._producer = producer
        topic = self.settings.topic_sightings
        self.n_sightings_partitions = len(await producer.partitions_for(topic))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, res: Outcome) -> None:
        await self.acked(res, await self.send(res))

    async def send(self, res: Outcome) -> list[Awaitable[Any]]:
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
        n = self.n_sightings_partitions
        for value, p in zip(res.upserts, res.upsert_partitions, strict=True):
            q = sightings_partition(p, n)
            headers = [(READS_PARTITION_HEADER, str(p).encode())]
            sent = await producer.send(s.topic_sightings, value, partition=q, headers=headers)
            sends.append(self._track(p, sent))
        return sends

    async def _track(self, reads_partition: int, sent: Awaitable[Any]) -> Any:
        """Await an upsert's send; tell `on_upserts` where the partition's output now ends."""
        md = await sent
        if self.on_upserts is not None:
            self.on_upserts(reads_partition, md.partition, md.offset + 1)
        return md

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

    async def acked(self, res: Outcome, sends: list[Awaitable[Any]]) -> None:
        """Wait for the broker to have `sends` (those of `res`), then count `res`."""
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
