"""The raw-read sink: every read the worker accepts, from the reads topic into `raw_reads`.

Its own consumer group (`stream.kafka.groups.raw_group`), read with aiokafka in whole fetches,
like the worker: the reads topic carries every gateway message, and Faust's per-message hand-over
would take much of the event loop of the process it shares with the live alert stream. It runs on
a thread with an event loop of its own: even in whole fetches, decompressing and parsing every
gateway message holds a loop for long stretches, which the live alert stream would wait behind.

Offsets are committed only after the store has the rows; the dedup token names the batch's
offset ranges, so a retried insert is stored once. A rebalance writes and commits what was
fetched before the partitions go. The reads are exactly the worker's: the same validation
(`stream.worker.processing.accepted_reads`), judged at each message's Kafka timestamp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.config import Settings
from core.loop_thread import LoopThread
from core.records.reads import Reads
from ingest.exceptions import WireError
from ingest.wire import decode_structure
from store.runner import StoreRunner
from stream.faust_app import exit_now
from stream.followers.registry import RegistryFollower
from stream.kafka.group_member import PartitionsListener, group_consumer
from stream.kafka.groups import raw_group
from stream.sinks.store_retry import with_retries
from stream.worker.processing import accepted_reads

log = logging.getLogger(__name__)

IDLE_POLL_MS = 500


def valid_reads(
    messages: list[tuple[bytes, float]], known_readers: Any, max_clock_skew_ms: int
) -> Reads:
    """The reads of (value, publish ms) gateway messages that the worker accepts, concatenated.

    Messages that do not decode are the worker's dead letters: skipped here, as there.
    """
    batches, published = [], []
    for value, published_ms in messages:
        try:
            batches.append(decode_structure(value))
        except WireError:
            continue  # dead-lettered by the worker, with its reason
        published.append(published_ms)
    return accepted_reads(batches, known_readers, published, max_clock_skew_ms)[0]


def batch_token(topic: str, ranges: dict[int, tuple[int, int]]) -> str:
    """The dedup token of a batch: its (partition, first offset, last offset) ranges."""
    parts = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(ranges.items()))
    return f"raw:{topic}:{parts}"


class RawReadSink:
    """`start()`, then `stop()` (which stores and commits what it fetched)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        runner: StoreRunner,
        registry: RegistryFollower,
        on_fatal: Callable[[BaseException], None] = exit_now,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.runner = runner
        self.registry = registry
        self.on_fatal = on_fatal
        self.counters = {"raw_reads": 0, "raw_batches": 0}
        # topic partition -> messages fetched and not yet stored, in offset order
        self._buffer: dict[TopicPartition, list[Any]] = {}
        self._buffered = 0
        self._lock = asyncio.Lock()  # one write (or rebalance flush) at a time
        self._consumer: AIOKafkaConsumer | None = None
        self._thread = LoopThread("raw-sink")
        self._stopping = False

    async def start(self) -> None:
        """Start the sink's thread; returns once its consumer has started (or raises why not)."""
        await self._thread.start(self._main)

    async def stop(self) -> None:
        """Store and commit what was fetched, leave the group, end the thread."""
        await self._thread.stop(self._request_stop, timeout_s=90)

    def _request_stop(self) -> None:
        self._stopping = True  # seen within one fetch timeout; a write in progress completes

    async def _main(self, started: Future[None]) -> None:
        """The thread's event loop: consume until stopped, then flush and leave the group."""
        s = self.settings
        # Not reniced, although bulk work: it runs Python (see core.priority for why).
        # A failure to start reaches the caller of `start` (LoopThread).
        consumer = group_consumer(s, self.bootstrap, raw_group(s))
        # A failed flush on revocation is fatal: a lost batch must stop us.
        listener = PartitionsListener(revoked=self._on_revoked, on_fatal=self.on_fatal)
        consumer.subscribe([s.topic_reads], listener=listener)
        await consumer.start()
        self._consumer = consumer
        started.set_result(None)
        try:
            await self._run()
            await self._flush()  # stopped: store and commit what was fetched
        except Exception as e:  # the store gave up, or a bug: never commit what failed
            self.on_fatal(e)
        finally:
            await consumer.stop()

    async def _run(self) -> None:
        # (The follower's event belongs to the main loop: polled, not awaited, from here.)
        while not self.registry.caught_up.is_set():
            await asyncio.sleep(0.05)
        consumer = self._consumer
        assert consumer is not None
        # Messages per insert: sink_batch_max_rows at ~100 reads per gateway message.
        max_messages = max(self.settings.sink_batch_max_rows // 100, 1)
        first_at = 0.0
        while not self._stopping:
            wait_s = IDLE_POLL_MS / 1000
            if self._buffered:
                wait_s = first_at + self.settings.sink_flush_interval_s - time.monotonic()
            fetched = await consumer.getmany(
                timeout_ms=max(int(wait_s * 1000), 0),
                max_records=max_messages - self._buffered,
            )
            if fetched and not self._buffered:
                first_at = time.monotonic()
            for tp, records in fetched.items():
                if records:
                    self._buffer.setdefault(tp, []).extend(records)
                    self._buffered += len(records)
            due = time.monotonic() - first_at >= self.settings.sink_flush_interval_s
            if self._buffered and (self._buffered >= max_messages or due):
                await self._flush()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # What was fetched for them is stored and committed while they are still ours.
        await self._flush()

    async def _flush(self) -> None:
        """Store the buffered messages' valid reads, then commit their offsets."""
        async with self._lock:
            buffer, self._buffer, self._buffered = self._buffer, {}, 0
            if not buffer:
                return
            msgs = [(m.value, float(m.timestamp)) for records in buffer.values() for m in records]
            # On this thread's loop: the sink's own heartbeats are all that waits meanwhile.
            reads = valid_reads(
                msgs, self.registry.registry.reader_id, self.settings.max_clock_skew_ms
            )
            ranges = {tp.partition: (r[0].offset, r[-1].offset) for tp, r in buffer.items()}
            if len(reads):
                from store.writes import insert_raw_reads

                token = batch_token(self.settings.topic_reads, ranges)
                await with_retries(
                    "raw-read insert", self.runner, insert_raw_reads, reads, dedup_token=token
                )
            self.counters["raw_reads"] += len(reads)
            self.counters["raw_batches"] += 1
            assert self._consumer is not None
            offsets = {tp: records[-1].offset + 1 for tp, records in buffer.items()}
            try:
                await self._consumer.commit(offsets)
            except KafkaError as e:
                # The partitions' next owner stores these reads again (a set to the backfill).
                log.warning("raw-read offsets not committed (%r); they will be stored again", e)
