"""Exact sightings under any crash point, at the level of the worker's processing model.

A seeded run of one reads partition through `Processor` (the worker's CPU step, no Kafka): messy
reads (duplicates, arrival shuffled across the 30 s gap, mobile readers) in gateway messages,
steps of random sizes, checkpoints now and then. The sightings topic is a list the test appends
each step's upserts to (what the broker acknowledged); the store is a ReplacingMergeTree model
(the highest version per identity, is_deleted drops it). A crash loses the processor (its memory)
and keeps what was published; the restart restores the last checkpoint, learns the output
published after it, and is redelivered every message after the checkpoint in other batches. The
store must equal `reference_sightings` of the reads, whatever the crash points; and, with some tags
stolen, every final sighting of theirs is alerted, no alert id twice.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from core.config import Settings
from core.records.alerts import HotlistEntry, alert_id
from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from core.records.sightings import concat_upserts, decode_upserts
from ingest.wire import encode_batch
from stream.followers.hotlist import Hotlist
from stream.followers.registry import RegistryFollower
from stream.sessionize.reference import reference_sightings
from stream.worker.checkpoint import Checkpoint
from stream.worker.processing import Message, Processor

T0 = 1_790_000_000_000
GAP_MS = 30_000
PARTITION = 3
SIGHTINGS_PARTITION = 0  # the test's sightings topic has one partition
READERS = np.arange(1, 9, dtype=np.uint32)
MOBILE_READER = 8
STOLEN = (3, 7, 12, 21, 33)  # tags with an open case (stolen long before the reads)


def registry() -> RegistryFollower:
    follower = RegistryFollower("127.0.0.1:1", "readers")  # never started: no broker needed
    n = len(READERS)
    follower.registry = ReaderRegistry.from_columns(
        READERS, 25.0 + np.arange(n) / 100, 102.7 + np.arange(n) / 100
    )
    return follower


def messy_messages(seed: int, n_tags: int = 40) -> tuple[list[bytes], Reads]:
    """Gateway messages of one partition in arrival order, and all their reads."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[float]] = {k: [] for k in ("tag", "reader", "ts", "rssi", "flags")}
    for tag in range(1, n_tags + 1):
        for _ in range(rng.integers(1, 4)):  # visits of this tag
            reader = int(rng.choice(READERS))
            t = T0 + int(rng.integers(0, 600_000))
            for _ in range(rng.integers(1, 12)):
                cols["tag"].append(tag)
                cols["reader"].append(reader)
                cols["ts"].append(t)
                cols["rssi"].append(int(rng.integers(-90, -30)))
                cols["flags"].append(FLAG_MOBILE if reader == MOBILE_READER else 0)
                # Gaps straddling GAP: some sessions split, some join.
                t += int(rng.choice([rng.integers(100, 3_000), rng.integers(25_000, 35_000)]))
    n = len(cols["tag"])
    mobile = np.asarray(cols["flags"]) != 0
    reads = Reads.from_columns(
        tag_id=cols["tag"],
        reader_id=cols["reader"],
        ts_ms=cols["ts"],
        rssi_dbm=cols["rssi"],
        flags=cols["flags"],
        lat=np.where(mobile, 25.05 + rng.random(n) / 100, np.nan),
        lon=np.where(mobile, 102.75 + rng.random(n) / 100, np.nan),
    )
    # Exact duplicates (gateway retries), then arrival shuffled by up to a minute: later reads of a
    # sighting often arrive before its first one.
    dup = rng.random(n) < 0.15
    sent = Reads.concat([reads, reads.take(np.flatnonzero(dup))])
    arrival = sent.ts_ms + rng.integers(0, 60_000, len(sent))
    sent = sent.take(np.argsort(arrival, kind="stable"))
    bounds = np.arange(0, len(sent), 7)
    messages = [
        encode_batch(sent.take(np.arange(b, min(b + 7, len(sent)))), 1, i)
        for i, b in enumerate(bounds)
    ]
    return messages, reads


class Topic:
    """The sightings topic as acknowledged by the broker: (reads partition, message) in order."""

    def __init__(self) -> None:
        self.log: list[tuple[int, bytes]] = []
        self.alerts: list[str] = []  # ids of the alerts published, in order

    def publish(self, proc: Processor, upserts: list[bytes], partitions: list[int]) -> None:
        """A step's upserts acknowledged (as the worker's Publisher reports them)."""
        for value, p in zip(upserts, partitions, strict=True):
            self.log.append((p, value))
            proc.published(p, SIGHTINGS_PARTITION, len(self.log))

    def read_back(self, partition: int, start: int | None) -> dict[str, np.ndarray]:
        """The rows of `partition` from offset `start` on (stream.worker.output_history)."""
        parts = [decode_upserts(v) for p, v in self.log[start or 0 :] if p == partition]
        return concat_upserts(parts)

    def store(self) -> dict[tuple[int, int, int], tuple[int, int, tuple[object, ...]]]:
        """ReplacingMergeTree(version, is_deleted) after a merge: per identity, the row of the
        highest version (the later one on a tie); retracted identities gone."""
        best: dict[tuple[int, int, int], tuple[int, int, tuple[object, ...]]] = {}
        for _, value in self.log:
            rows = decode_upserts(value)
            for i in range(len(rows["tag_id"])):
                ident = (
                    int(rows["tag_id"][i]),
                    int(rows["reader_id"][i]),
                    int(rows["first_ts"][i]),
                )
                version = int(rows["version"][i])
                if ident not in best or version >= best[ident][0]:
                    content = (
                        int(rows["last_ts"][i]),
                        int(rows["n_reads"][i]),
                        int(rows["max_rssi"][i]),
                        round(float(rows["lat"][i]), 9),
                        int(rows["h3_r9"][i]),
                    )
                    best[ident] = (version, int(rows["is_deleted"][i]), content)
        return {k: v for k, v in best.items() if not v[1]}


def reference(reads: Reads, reg: ReaderRegistry) -> dict[tuple[int, int, int], tuple[object, ...]]:
    ref = reference_sightings(reads, GAP_MS, reg)
    return {
        (int(t), int(r), int(f)): (int(la), int(n), int(mx), round(float(lat), 9), int(c))
        for t, r, f, la, n, mx, lat, c in zip(
            ref["tag_id"],
            ref["reader_id"],
            ref["first_ts"],
            ref["last_ts"],
            ref["n_reads"],
            ref["max_rssi"],
            ref["lat"],
            ref["h3_r9"],
            strict=True,
        )
    }


def new_processor() -> Processor:
    # Listed tags' reads are applied first (the step's two parts): the check must see both.
    hot = types.SimpleNamespace(hotlist=Hotlist([HotlistEntry(f"case-{t}", t, 0) for t in STOLEN]))
    return Processor(Settings(gap_ms=GAP_MS, max_lateness_ms=48 * 3_600_000), registry(), hot)


def expected_alerts(reads: Reads) -> set[str]:
    ref = reference_sightings(reads, GAP_MS)
    return {
        alert_id(f"case-{t}", int(t), int(r), int(f))
        for t, r, f in zip(ref["tag_id"], ref["reader_id"], ref["first_ts"], strict=True)
        if t in STOLEN
    }


def saved(proc: Processor) -> Checkpoint:
    """A checkpoint as the worker writes it (its state copied out: the file)."""
    ckpt = proc.checkpoint(PARTITION)
    state = b"".join(bytes(p) for p in ckpt.state)  # type: ignore[union-attr]
    return Checkpoint(ckpt.offset, state, ckpt.alerted, output=ckpt.output)


def restart(ckpt: Checkpoint | None, topic: Topic) -> tuple[Processor, int]:
    """A new process: the checkpoint restored, told what was published after it (as
    stream.worker.ownership does); the offset to redeliver from."""
    proc = new_processor()
    offset = proc.adopt(PARTITION, ckpt)
    start = ckpt.output[1] if ckpt is not None and ckpt.output is not None else 0
    rows = topic.read_back(PARTITION, start)
    end = (SIGHTINGS_PARTITION, len(topic.log))
    proc.expect(PARTITION, rows, (SIGHTINGS_PARTITION, start), end)
    # The alerts published since the checkpoint (stream.worker.alert_history reads a superset).
    proc.partitions[PARTITION].alerted |= set(topic.alerts)
    return proc, offset + 1


def run(seed: int, crashes: set[int]) -> tuple[Topic, Reads]:
    """One partition's messages through steps of random sizes, checkpoints after random steps;
    after the steps numbered in `crashes` (counted over the whole run), a crash and a restart."""
    messages, reads = messy_messages(seed)
    rng = np.random.default_rng(seed + 1)
    published = float(T0 + 3_600_000)
    topic = Topic()
    proc, nxt = restart(None, topic)
    ckpt: Checkpoint | None = None
    step = 0
    while nxt < len(messages):
        size = int(rng.integers(1, 9))
        batch: list[Message] = [
            (messages[o], "reads", PARTITION, o, published)
            for o in range(nxt, min(nxt + size, len(messages)))
        ]
        out = proc.step(batch)
        topic.publish(proc, out.upserts, out.upsert_partitions)
        topic.alerts += [a.alert_id for a in out.alerts]
        nxt = batch[-1][3] + 1
        if rng.random() < 0.2:
            ckpt = saved(proc)
        if step in crashes:
            proc, nxt = restart(ckpt, topic)
        step += 1
    return topic, reads


def n_steps(seed: int) -> int:
    """How many steps the seeded run takes without a crash."""
    messages, _ = messy_messages(seed)
    rng = np.random.default_rng(seed + 1)
    nxt, steps = 0, 0
    while nxt < len(messages):
        nxt += int(rng.integers(1, 9))
        rng.random()
        steps += 1
    return steps


def check_alerts(topic: Topic, reads: Reads) -> None:
    assert len(topic.alerts) == len(set(topic.alerts)), "an alert published twice"
    want = expected_alerts(reads)
    assert want and want <= set(topic.alerts), f"{len(want - set(topic.alerts))} unalerted"


def test_the_messy_run_without_crashes_is_exact() -> None:
    topic, reads = run(5, set())
    assert {k: v[2] for k, v in topic.store().items()} == reference(reads, registry().registry)
    check_alerts(topic, reads)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_crash_point_of_a_seeded_run(seed: int) -> None:
    """One crash after each step in turn (a run per crash point), then the rest redelivered."""
    want = None
    failures = []
    for k in range(n_steps(seed)):
        topic, reads = run(seed, {k})
        if want is None:
            want = reference(reads, registry().registry)
        got = {ident: row[2] for ident, row in topic.store().items()}
        if got != want:
            extra = sorted(set(got) - set(want))
            failures.append((k, extra[:3], sorted(set(want) - set(got))[:3]))
        check_alerts(topic, reads)
    assert not failures, f"{len(failures)} crash points not exact, e.g. {failures[:3]}"


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_several_crashes_in_one_run(seed: int) -> None:
    """Crashes at several random steps of one run, some during the replay of an earlier one."""
    rng = np.random.default_rng(seed)
    crashes = set(rng.choice(n_steps(seed) * 2, size=6, replace=False).tolist())
    topic, reads = run(seed, crashes)
    got = {ident: row[2] for ident, row in topic.store().items()}
    assert got == reference(reads, registry().registry)
    check_alerts(topic, reads)
