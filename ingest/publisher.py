"""The gateway publisher: splits reads by partition, encodes wire batches, sends them to Kafka.

Idempotent aiokafka producer with acks=all and compression. Partitioning rule (documented in
docs/wire-format.md): partition = reader_id mod P, chosen explicitly, one partition per message.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka import codec as kafka_codec
from aiokafka.errors import KafkaError

from core.config import Settings
from core.errors import ConfigError
from core.records.reads import Reads
from ingest.exceptions import PublishError
from ingest.wire import encode_batch

# 16 Ki reads is at most 622 KiB with positions: under Kafka's default 1 MiB record limit.
DEFAULT_MAX_READS_PER_MESSAGE = 16_384


def best_compression() -> str:
    """zstd when aiokafka can do it (needs cramjam), else gzip, which needs no extra library."""
    if kafka_codec.has_zstd():
        return "zstd"
    if kafka_codec.has_lz4():
        return "lz4"
    return "gzip"


def partition_of(reader_id: np.ndarray, n_partitions: int) -> np.ndarray:
    """The partition of each read: reader_id mod n_partitions (the one partitioning rule)."""
    if n_partitions < 1:
        raise ValueError("n_partitions must be >= 1")
    return (reader_id % np.uint32(n_partitions)).astype(np.intp)


def split_by_partition(
    reads: Reads, n_partitions: int, max_reads: int = DEFAULT_MAX_READS_PER_MESSAGE
) -> list[tuple[int, Reads]]:
    """Group reads into (partition, reads) chunks of at most max_reads, keeping read order."""
    if max_reads < 1:
        raise ValueError("max_reads must be >= 1")
    n = len(reads)
    if n == 0:
        return []
    part = partition_of(reads.reader_id, n_partitions)
    first = int(part[0])
    if n_partitions == 1 or bool((part == first).all()):
        groups = [(first, reads)]
    else:
        order = np.argsort(part, kind="stable")  # stable: reads keep their order within a partition
        counts = np.bincount(part, minlength=n_partitions)
        bounds = np.concatenate(([0], np.cumsum(counts)))
        groups = [
            (p, reads.take(order[bounds[p] : bounds[p + 1]]))
            for p in range(n_partitions)
            if counts[p]
        ]
    out: list[tuple[int, Reads]] = []
    for p, g in groups:
        if len(g) <= max_reads:
            out.append((p, g))
        else:
            out.extend((p, g.take(np.arange(i, min(i + max_reads, len(g))))) for i in
                       range(0, len(g), max_reads))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What one publish/publish_many call delivered (all acknowledged by the broker)."""

    messages: int
    reads: int
    bytes: int


class SentMessages:
    """Messages handed to the producer by `GatewayPublisher.enqueue`, awaiting acknowledgement."""

    def __init__(self, publisher: GatewayPublisher) -> None:
        self.publisher = publisher
        self.pending: list[tuple[int, asyncio.Future[object]]] = []
        self.bytes = 0

    async def wait(self, *, raise_errors: bool = True) -> PublishStats:
        """Wait for every acknowledgement; the first broker error raises PublishError."""
        # Collect every acknowledgement, even after a failure, so no future is left unobserved
        # and the first broker error (if any) is the one reported.
        results = await asyncio.gather(*(f for _, f in self.pending), return_exceptions=True)
        if raise_errors:
            for (p, _), r in zip(self.pending, results, strict=True):
                if isinstance(r, KafkaError):
                    raise self.publisher._error("awaiting the acknowledgement", r, p) from r
                if isinstance(r, BaseException):
                    raise r
        return PublishStats(messages=len(self.pending), reads=0, bytes=self.bytes)


class GatewayPublisher:
    """Publishes gateway read batches to the reads topic; use `async with` or start()/stop().

    batch_seq: one counter per gateway_id, incremented per Kafka message. It starts at the
    current time in microseconds (or `seq_start`), so it keeps increasing across restarts without
    stored state. A failed publish may leave gaps or, when retried, send some reads twice with new
    sequence numbers: safe, because sightings are a function of the set of reads (duplicates
    collapse), and the idempotent producer removes the client's own network retries.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        compression: str | None = "auto",
        linger_ms: int = 5,
        max_batch_bytes: int = 1024 * 1024,
        max_reads_per_message: int = DEFAULT_MAX_READS_PER_MESSAGE,
        request_timeout_ms: int = 30_000,
        client_id: str = "tagtrail-gateway",
        seq_start: int | None = None,
    ) -> None:
        if not bootstrap:
            raise ConfigError("Kafka bootstrap servers are empty (TAGTRAIL_KAFKA)")
        if max_reads_per_message < 1:
            raise ValueError("max_reads_per_message must be >= 1")
        self.topic = topic
        self.compression = best_compression() if compression == "auto" else compression
        self.max_reads_per_message = max_reads_per_message
        self._producer_kwargs = dict(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=self.compression,
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            max_request_size=max(max_batch_bytes, 1024 * 1024),
            request_timeout_ms=request_timeout_ms,
        )
        self._producer: AIOKafkaProducer | None = None
        self._n_partitions = 0
        self._seq_start = time.time_ns() // 1000 if seq_start is None else seq_start
        self._next_seq: dict[int, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> GatewayPublisher:
        return cls(settings.kafka, settings.topic_reads, **kwargs)  # type: ignore[arg-type]

    @property
    def n_partitions(self) -> int:
        """Partition count of the topic, read once at start()."""
        return self._n_partitions

    async def start(self) -> None:
        """Connect and read the topic's partition count (auto-creating the topic if allowed)."""
        producer = AIOKafkaProducer(**self._producer_kwargs)
        try:
            await producer.start()
            self._n_partitions = len(await producer.partitions_for(self.topic))
        except KafkaError as e:
            await producer.stop()
            raise self._error("starting the producer", e, None) from e
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> GatewayPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def next_seq(self, gateway_id: int) -> int:
        seq = self._next_seq.get(gateway_id, self._seq_start)
        self._next_seq[gateway_id] = seq + 1
        return seq

    def messages_for(self, reads: Reads, gateway_id: int) -> list[tuple[int, bytes]]:
        """Encode reads into (partition, message) pairs, assigning batch sequence numbers."""
        parts = split_by_partition(reads, self._require_started(), self.max_reads_per_message)
        return [(p, encode_batch(r, gateway_id, self.next_seq(gateway_id))) for p, r in parts]

    def flush_messages(self, reads: Reads, gateway_id: np.ndarray) -> list[tuple[int, int, bytes]]:
        """Encode many gateways' buffered reads: (partition, gateway_id, message) triples.

        `gateway_id` runs parallel to `reads`. One message per (gateway, partition), split only
        beyond max_reads_per_message, each gateway's reads in their buffered order: the same
        messages as `messages_for` per gateway, grouped in one vectorised pass.
        """
        n_part = self._require_started()
        n = len(reads)
        if len(gateway_id) != n:
            raise ValueError(f"gateway_id has {len(gateway_id)} entries for {n} reads")
        if n == 0:
            return []
        key = gateway_id.astype(np.int64) * n_part + partition_of(reads.reader_id, n_part)
        order = np.argsort(key, kind="stable")  # stable: buffered order within a group
        k = key[order]
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        ends = np.append(starts[1:], n)
        sorted_reads = reads.take(order)
        cols = sorted_reads.columns()
        out: list[tuple[int, int, bytes]] = []
        step = self.max_reads_per_message
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            gw, p = divmod(int(k[a]), n_part)
            for i in range(a, b, step):
                part = Reads(**{c: v[i : min(i + step, b)] for c, v in cols.items()})
                out.append((p, gw, encode_batch(part, gw, self.next_seq(gw))))
        return out

    async def publish_flush(self, reads: Reads, gateway_id: np.ndarray) -> PublishStats:
        """Send what many gateways buffered since their last flush (see `flush_messages`).

        Returns when every message is acknowledged; raises PublishError like `publish`.
        """
        sent = await self.enqueue(self.flush_messages(reads, gateway_id))
        stats = await sent.wait()
        return PublishStats(messages=stats.messages, reads=len(reads), bytes=stats.bytes)

    async def publish(self, reads: Reads, gateway_id: int) -> PublishStats:
        """Send one gateway batch; returns once every message is acknowledged by all replicas.

        Raises PublishError (check `.retriable`) if the broker refuses or times out.
        """
        return await self.publish_many([(reads, gateway_id)])

    async def publish_many(self, batches: Iterable[tuple[Reads, int]]) -> PublishStats:
        """Send many (reads, gateway_id) batches pipelined; returns when all are acknowledged.

        Sending does not wait for each acknowledgement, so the producer fills large compressed
        requests (the throughput path used by replay and the simulator).
        """
        counted = 0

        def encoded() -> Iterator[tuple[int, int, bytes]]:
            nonlocal counted
            for reads, gateway_id in batches:
                for p, value in self.messages_for(reads, gateway_id):
                    yield p, gateway_id, value
                counted += len(reads)

        stats = await self._send_all(encoded())
        return PublishStats(messages=stats.messages, reads=counted, bytes=stats.bytes)

    async def _send_all(self, messages: Iterable[tuple[int, int, bytes]]) -> PublishStats:
        return await (await self.enqueue(messages)).wait()

    async def enqueue(self, messages: Iterable[tuple[int, int, bytes]]) -> SentMessages:
        """Hand (partition, gateway_id, value) messages to the producer, in order.

        Returns once every message is queued (not acknowledged): a caller that enqueues flush
        after flush keeps each gateway's batch_seq in send order while acknowledgements of
        earlier flushes are still outstanding. Await `.wait()` on the result for the acks.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("GatewayPublisher.start() was not called")
        sent = SentMessages(self)
        try:
            for p, gateway_id, value in messages:
                key = struct.pack(">I", gateway_id)
                try:
                    fut = await producer.send(self.topic, value, key=key, partition=p)
                except KafkaError as e:
                    raise self._error("sending", e, p) from e
                sent.pending.append((p, fut))
                sent.bytes += len(value)
        except BaseException:
            await sent.wait(raise_errors=False)
            raise
        return sent

    def _require_started(self) -> int:
        if not self._n_partitions:
            raise RuntimeError("GatewayPublisher.start() was not called")
        return self._n_partitions

    def _error(self, what: str, e: KafkaError, partition: int | None) -> PublishError:
        return PublishError(
            f"{what} on topic {self.topic!r}: {type(e).__name__}: {e}",
            retriable=bool(getattr(e, "retriable", False)),
            topic=self.topic,
            partition=partition,
        )
