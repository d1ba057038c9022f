"""The worker's CPU step, free of Kafka: gateway messages in, publishable outputs out.

`Processor` owns the per-partition state (sessionizers and the alert ids already emitted) and
turns a group of (bytes, topic, partition, offset) messages into dead letters, late reads,
sighting upserts and alerts. It runs on a kernel thread; numba kernels release the GIL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from core.config import Settings
from core.records.alerts import Alert, HotlistEntry
from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from core.records.sightings import encode_upserts
from ingest.exceptions import WireError
from ingest.validate import reader_set, split_invalid_many
from ingest.wire import Batch, dead_letters_for, decode_structure, encode_batch, encode_dead_letter
from stream.followers.hotlist import Hotlist
from stream.followers.registry import RegistryFollower
from stream.sessionize.sessionizer import Sessionizer, SightingChanges
from stream.sessionize.state import ReadStore
from stream.worker.checkpoint import Checkpoint

Message = tuple[bytes, str, int, int, float]  # value, topic, partition, offset, publish time (ms)


def accepted_reads(
    batches: list[Batch],
    known_readers: np.ndarray,
    published_ms: list[float],
    max_clock_skew_ms: int,
) -> tuple[Reads, list[list[tuple[str, Reads]]], np.ndarray]:
    """(valid reads of all messages, rejected groups per message, message index of each valid
    read): the one rule of worker and sink.

    "Now" for the future-timestamp check is each message's Kafka timestamp, not the wall clock:
    a redelivered message, or the raw-read sink reading it at another time, is judged the same,
    so the raw_reads table holds exactly the reads the worker sessionized. (The other input, the
    reader registry, is each process's view of the compacted readers topic: readers are
    registered before they report, so both views agree unless a reader is added or removed while
    its reads are in flight.)
    """
    now = [round(p) for p in published_ms]
    return split_invalid_many(batches, known_readers, now, max_clock_skew_ms)


def warm_up() -> None:
    """Run every kernel of a step once, on throwaway state: loading their compiled code takes
    about a second, which the first real batch (and its alerts) would otherwise wait for."""
    ts = 1_790_000_000_000
    reads = Reads.from_columns(
        tag_id=[7, 7, 8],
        reader_id=[1, 1, 2],
        ts_ms=[ts, ts + 1000, ts],
        rssi_dbm=[-50, -40, -60],
        flags=[0, 0, FLAG_MOBILE],
        lat=[np.nan, np.nan, 25.2],
        lon=[np.nan, np.nan, 102.9],
    )
    batch = decode_structure(encode_batch(reads, 1, 1))
    valid, _, _ = split_invalid_many([batch], reader_set([1, 2]), [ts])
    registry = ReaderRegistry.from_columns([1, 2], [25.0, 25.1], [102.7, 102.8])
    hotlist = Hotlist([HotlistEntry("warm-up", 7, 0)])
    for changes in Sessionizer(registry=registry).process_parts(valid, 1, hotlist.tags):
        encode_upserts(changes.rows)
        hotlist.match(changes.rows, ts)
    # Growing the key index (a partition's first busy step) has kernels of its own.
    ReadStore(key_capacity=2).slots_for(np.arange(64, dtype=np.uint64), np.ones(64, np.uint32))


def earliest_published(
    rows: dict[str, np.ndarray], reads: Reads, read_published: np.ndarray, default: int
) -> np.ndarray:
    """Per sighting row: the earliest publish time (ms) among `reads` of its tag at its reader.

    An alert carries this as read_published_ms: the gateway publish of the first message that
    could raise it. (Reads of an earlier sighting of the same pair in the same step count too:
    that only makes the latency measured longer.) `default` where no read matches.
    """
    out = np.full(len(rows["tag_id"]), default, dtype=np.int64)
    if not len(out) or not len(reads):
        return out
    # (tag, reader) as one int64: the tag's rank among the rows' tags, then the reader.
    tags = np.unique(rows["tag_id"])
    at = np.minimum(np.searchsorted(tags, reads.tag_id), len(tags) - 1)
    m = tags[at] == reads.tag_id
    if not m.any():
        return out
    key = (at[m].astype(np.int64) << 32) | reads.reader_id[m].astype(np.int64)
    order = np.argsort(key, kind="stable")
    key, pub = key[order], read_published[m][order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    keys, first = key[starts], np.minimum.reduceat(pub, starts)
    row_key = (np.searchsorted(tags, rows["tag_id"]).astype(np.int64) << 32) | rows[
        "reader_id"
    ].astype(np.int64)
    i = np.minimum(np.searchsorted(keys, row_key), len(keys) - 1)
    return np.where(keys[i] == row_key, first[i], out)


@dataclass
class Outcome:
    """What a group of input messages produced, ready to publish."""

    dead: list[tuple[Any, bytes]] = field(default_factory=list)
    dead_reasons: list[tuple[str, int]] = field(default_factory=list)
    late: list[bytes] = field(default_factory=list)
    # The reads partition of each `late` batch: sending it to the same late-topic partition keeps
    # a (tag, reader) key on one backfiller when several run (stream.sinks.backfiller).
    late_partitions: list[int] = field(default_factory=list)
    upserts: list[bytes] = field(default_factory=list)
    # The reads partition of each `upserts` message: its output is read back on a restart.
    upsert_partitions: list[int] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    n_reads: int = 0
    n_late: int = 0
    n_duplicates: int = 0
    n_upserts: int = 0

    def extend(self, other: Outcome) -> None:
        """Add what `other` produced (lists appended, counts summed)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class WorkerState:
    """Counters of one worker process: what its steps took in and what the broker acknowledged."""

    messages: int = 0
    reads: int = 0
    upserts: int = 0
    alerts: int = 0


@dataclass
class PartitionState:
    sessionizer: Sessionizer
    registry_version: int
    offset: int = -1  # last applied input offset
    alerted: set[str] = field(default_factory=set)
    # Where a restart reads back the output published after this state's checkpoint (a
    # sightings partition and offset): where the restored checkpoint's output began, or
    # (output_next) after the partition's last upsert the broker acknowledged. None: unknown.
    output_from: tuple[int, int] | None = None
    output_next: tuple[int, int] | None = None


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

    def expect(
        self,
        partition: int,
        rows: dict[str, np.ndarray],
        read_from: tuple[int, int] | None,
        read_to: tuple[int, int] | None,
    ) -> int:
        """Tell a just-adopted partition the sighting rows published for it after its checkpoint
        (read back from the sightings topic from `read_from` up to `read_to`): the redelivered
        reads retract those they do not make again (`Sessionizer.expect`). Until all are checked
        its checkpoints keep pointing at `read_from`. Returns how many are expected."""
        st = self.partitions[partition]
        n = st.sessionizer.expect(rows)
        st.output_from = read_from if n else read_to
        return n

    def published(self, partition: int, sightings_partition: int, next_offset: int) -> None:
        """The broker acknowledged upserts of `partition` up to `next_offset` (exclusive)."""
        st = self.partitions.get(partition)
        if st is None:
            return
        if st.output_next is not None and st.output_next[0] == sightings_partition:
            next_offset = max(next_offset, st.output_next[1])  # acknowledgements in any order
        st.output_next = (sightings_partition, next_offset)

    def checkpoint(self, partition: int) -> Checkpoint:
        st = self.partitions[partition]
        # A restart reads the output back from after the last upsert before this state, unless
        # rows of an earlier restart are still unchecked: then from where those began.
        output = st.output_from
        if st.output_next is not None and not st.sessionizer.n_expected:
            output = st.output_next
        # Zero-copy views: the worker writes them out before the state changes again.
        return Checkpoint(
            st.offset, st.sessionizer.snapshot_parts(), frozenset(st.alerted), output=output
        )

    def arrays_except(self, partition: int) -> list[np.ndarray]:
        """The state arrays of every other partition (valid until the state changes)."""
        others = [st for p, st in self.partitions.items() if p != partition]
        return [a for st in others for a in st.sessionizer.arrays()]

    def step(self, messages: list[Message]) -> Outcome:
        """Apply messages: `begin` and `finish` in one go (outputs of both in one Outcome)."""
        pending = self.begin(messages)
        rest = self.finish(pending)
        pending.first.extend(rest)
        return pending.first

    def begin(self, messages: list[Message]) -> Pending:
        """Decode and validate messages, then apply the reads of hotlisted tags only.

        `Pending.first` holds the dead letters, the alerts and the upserts of listed tags, ready
        to publish while `finish` applies the rest. Valid reads are sessionized in one call per
        partition, split in these two parts (`Sessionizer.process_parts`: exactly one call).
        The version of a partition's rows is its highest input offset + 1, which only grows, so
        later rows always win in the store. Messages at or below a partition's applied offset
        (redeliveries after a checkpoint) are applied again: harmless, reads are a set.
        """
        out = Outcome()
        reg = self.registry.registry
        # partition -> its decodable messages: (batch, publish ms, offset)
        decoded: dict[int, list[tuple[Batch, float, int]]] = {}
        for data, topic, partition, offset, published_ms in messages:
            try:
                batch = decode_structure(data)
            except WireError as e:
                where = {"topic": topic, "partition": partition, "offset": offset}
                out.dead.append(encode_dead_letter(e.reason, str(e), data, **where))
                out.dead_reasons.append((e.reason, 0))
                continue
            decoded.setdefault(partition, []).append((batch, published_ms, offset))
        topic_of = {p: t for _, t, p, _, _ in messages}
        hotlist: Hotlist | None = self.hotlist.hotlist if self.hotlist is not None else None
        first_tags = hotlist.tags if hotlist is not None and len(hotlist) else None
        pending = Pending(out, hotlist)
        for partition, items in decoded.items():
            batches = [b for b, _, _ in items]
            published = [ms for _, ms, _ in items]
            valid, rejected, source = accepted_reads(
                batches, reg.reader_id, published, self.settings.max_clock_skew_ms
            )
            for (batch, _, offset), groups in zip(items, rejected, strict=True):
                if groups:
                    where = {"topic": topic_of[partition], "partition": partition, "offset": offset}
                    out.dead.extend(dead_letters_for(batch, groups, **where))
                    out.dead_reasons.extend((reason, len(bad)) for reason, bad in groups)
            out.n_reads += len(valid)
            batch, _, offset = max(items, key=lambda item: item[2])
            st = self.state(partition)
            part = _PartitionStep(
                partition,
                offset,
                batch.gateway_id,
                batch.batch_seq,
                int(max(published)),
                st.sessionizer.process_parts(valid, offset + 1, first_tags),
            )
            pending.steps.append(part)
            first = next(part.changes)
            row_published: int | np.ndarray = part.published_ms
            if hotlist is not None and len(hotlist) and len(first.rows["tag_id"]):
                # Only the reads the first part applied (hotlisted tags): a small share of a step.
                at = first.applied if first.applied is not None else np.arange(len(valid))
                per_message = np.asarray(published, dtype=np.float64).round().astype(np.int64)
                row_published = earliest_published(
                    first.rows, valid.take(at), per_message[source[at]], part.published_ms
                )
            self._emit(part, first, out, hotlist, row_published)
        return pending

    def finish(self, pending: Pending) -> Outcome:
        """Apply the rest of `begin`'s reads; the Outcome of what that produced."""
        out = Outcome()
        for part in pending.steps:
            for changes in part.changes:  # the second part (none without a hotlist)
                self._emit(part, changes, out, pending.hotlist)
            st = self.partitions[part.partition]
            st.offset = max(st.offset, part.offset)
        return out

    def _emit(
        self,
        part: _PartitionStep,
        changes: SightingChanges,
        out: Outcome,
        hotlist: Hotlist | None,
        published_ms: int | np.ndarray | None = None,
    ) -> None:
        st = self.partitions[part.partition]
        if len(changes.late):
            out.late.append(encode_batch(changes.late, part.gateway_id, part.batch_seq))
            out.late_partitions.append(part.partition)
            out.n_late += len(changes.late)
        out.n_duplicates += changes.n_duplicates
        n = len(changes.rows["tag_id"])
        if not n:
            return
        out.upserts.append(encode_upserts(changes.rows))
        out.upsert_partitions.append(part.partition)
        out.n_upserts += n
        if hotlist is not None:
            pub = part.published_ms if published_ms is None else published_ms
            for alert in hotlist.match(changes.rows, pub):
                if alert.alert_id not in st.alerted:
                    st.alerted.add(alert.alert_id)
                    out.alerts.append(alert)


@dataclass
class _PartitionStep:
    partition: int
    offset: int  # highest input offset of the step
    gateway_id: int  # of that message: late reads are re-encoded under its header
    batch_seq: int
    published_ms: int  # newest publish time of the step's messages, carried by alerts
    changes: Iterator[SightingChanges]


@dataclass
class Pending:
    """A step between `Processor.begin` and `Processor.finish`."""

    first: Outcome
    hotlist: Hotlist | None
    steps: list[_PartitionStep] = field(default_factory=list)
