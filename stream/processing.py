"""The worker's CPU step, free of Kafka: gateway messages in, publishable outputs out.

`Processor` owns the per-partition state (sessionizers and the alert ids already emitted) and
turns a group of (bytes, topic, partition, offset) messages into dead letters, late reads,
sighting upserts and alerts. It runs on a kernel thread; numba kernels release the GIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.exceptions import WireError
from ingest.reads import Reads
from ingest.validate import split_invalid
from ingest.wire import Batch, dead_letters_for, decode_structure, encode_batch, encode_dead_letter
from stream.alert_records import Alert
from stream.checkpoint import Checkpoint
from stream.hotlist import Hotlist
from stream.registry import RegistryFollower
from stream.sessionize import Sessionizer
from stream.sighting_codec import encode_upserts
from tagtrail.config import Settings

Message = tuple[bytes, str, int, int, float]  # value, topic, partition, offset, publish time (ms)


def accepted_reads(
    batch: Batch, known_readers: np.ndarray, published_ms: float, max_clock_skew_ms: int
) -> tuple[Reads, list[tuple[str, Reads]]]:
    """(valid reads, rejected groups) of a gateway message: the one rule of worker and sink.

    "Now" for the future-timestamp check is the message's Kafka timestamp, not the wall clock:
    a redelivered message, or the raw-read sink reading it at another time, is judged the same,
    so the raw_reads table holds exactly the reads the worker sessionized. (The other input, the
    reader registry, is each process's view of the compacted readers topic: readers are
    registered before they report, so both views agree unless a reader is added or removed while
    its reads are in flight.)
    """
    return split_invalid(batch, known_readers, round(published_ms), max_clock_skew_ms)


@dataclass
class Outcome:
    """What a group of input messages produced, ready to publish."""

    dead: list[tuple[Any, bytes]] = field(default_factory=list)
    dead_reasons: list[tuple[str, int]] = field(default_factory=list)
    late: list[bytes] = field(default_factory=list)
    # The reads partition of each `late` batch: sending it to the same late-topic partition keeps
    # a (tag, reader) key on one backfiller when several run (stream.backfill_loop).
    late_partitions: list[int] = field(default_factory=list)
    upserts: list[bytes] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    n_reads: int = 0
    n_late: int = 0
    n_duplicates: int = 0
    n_upserts: int = 0


@dataclass
class PartitionState:
    sessionizer: Sessionizer
    registry_version: int
    offset: int = -1  # last applied input offset
    alerted: set[str] = field(default_factory=set)


class Processor:
    """Per-partition state of one worker and the step that advances it."""

    def __init__(self, settings: Settings, registry: RegistryFollower, hotlist: Any = None) -> None:
        self.settings = settings
        self.registry = registry
        self.hotlist = hotlist  # a HotlistFollower, or None: no matching
        self.partitions: dict[int, PartitionState] = {}

    def _new_sessionizer(self) -> Sessionizer:
        return Sessionizer(
            gap_ms=self.settings.gap_ms,
            max_lateness_ms=self.settings.max_lateness_ms,
            registry=self.registry.registry,
        )

    def state(self, partition: int) -> PartitionState:
        st = self.partitions.get(partition)
        if st is None:
            st = self.partitions[partition] = PartitionState(
                self._new_sessionizer(), self.registry.version
            )
        elif st.registry_version != self.registry.version:
            st.sessionizer.set_registry(self.registry.registry)
            st.registry_version = self.registry.version
        return st

    def adopt(self, partition: int, ckpt: Checkpoint | None) -> int:
        """Take over a partition from a checkpoint (or from nothing); return its offset."""
        st = PartitionState(self._new_sessionizer(), self.registry.version)
        if ckpt is not None:
            st.sessionizer.restore(ckpt.state)
            st.offset, st.alerted = ckpt.offset, set(ckpt.alerted)
        self.partitions[partition] = st
        return st.offset

    def checkpoint(self, partition: int) -> Checkpoint:
        st = self.partitions[partition]
        # Zero-copy views: the worker writes them out before the state changes again.
        return Checkpoint(st.offset, st.sessionizer.snapshot_parts(), frozenset(st.alerted))

    def step(self, messages: list[Message]) -> Outcome:
        """Apply messages; valid reads are sessionized in one call per partition.

        The version of a partition's rows is its highest input offset + 1, which only grows, so
        later rows always win in the store. Messages at or below a partition's applied offset
        (redeliveries after a checkpoint) are applied again: harmless, reads are a set.
        """
        out = Outcome()
        reg = self.registry.registry
        per_partition: dict[int, list[Reads]] = {}
        top: dict[int, tuple[int, int, int]] = {}  # partition -> (offset, gateway, batch_seq)
        published: dict[int, float] = {}
        for data, topic, partition, offset, published_ms in messages:
            where = {"topic": topic, "partition": partition, "offset": offset}
            try:
                batch = decode_structure(data)
            except WireError as e:
                out.dead.append(encode_dead_letter(e.reason, str(e), data, **where))
                out.dead_reasons.append((e.reason, 0))
                continue
            valid, rejected = accepted_reads(
                batch, reg.reader_id, published_ms, self.settings.max_clock_skew_ms
            )
            out.dead.extend(dead_letters_for(batch, rejected, **where))
            out.dead_reasons.extend((reason, len(bad)) for reason, bad in rejected)
            per_partition.setdefault(partition, []).append(valid)
            if offset > top.get(partition, (-1, 0, 0))[0]:
                top[partition] = (offset, batch.gateway_id, batch.batch_seq)
            published[partition] = max(published.get(partition, 0.0), published_ms)
            out.n_reads += len(valid)
        hotlist: Hotlist | None = self.hotlist.hotlist if self.hotlist is not None else None
        for partition, parts in per_partition.items():
            st = self.state(partition)
            offset, gw, seq = top[partition]
            reads = Reads.concat(parts)
            if len(reads):
                changes = st.sessionizer.process(reads, version=offset + 1)
                if len(changes.late):
                    out.late.append(encode_batch(changes.late, gw, seq))
                    out.late_partitions.append(partition)
                    out.n_late += len(changes.late)
                out.n_duplicates += changes.n_duplicates
                n = len(changes.rows["tag_id"])
                if n:
                    out.upserts.append(encode_upserts(changes.rows))
                    out.n_upserts += n
                    if hotlist is not None:
                        for alert in hotlist.match(changes.rows, int(published[partition])):
                            if alert.alert_id not in st.alerted:
                                st.alerted.add(alert.alert_id)
                                out.alerts.append(alert)
            st.offset = max(st.offset, offset)
        return out
