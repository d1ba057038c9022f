"""An alert carries the gateway publish time of the first message that could raise it."""

from __future__ import annotations

import types

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import Settings
from core.records.alerts import HotlistEntry
from core.records.readers import ReaderRegistry
from core.records.reads import Reads
from ingest.wire import encode_batch
from stream.followers.hotlist import Hotlist
from stream.followers.registry import RegistryFollower
from stream.worker.processing import Processor, earliest_published

T0 = 1_790_000_000_000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 50)), max_size=30),
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 3)), max_size=10),
)
def test_earliest_published_is_the_minimum_over_the_pair(
    reads: list[tuple[int, int, int]], rows: list[tuple[int, int]]
) -> None:
    r = Reads.from_columns(
        tag_id=[t for t, _, _ in reads], reader_id=[x for _, x, _ in reads], ts_ms=[0] * len(reads)
    )
    pub = np.array([p for _, _, p in reads], dtype=np.int64)
    cols = {
        "tag_id": np.array([t for t, _ in rows], np.uint64),
        "reader_id": np.array([x for _, x in rows], np.uint32),
    }
    got = earliest_published(cols, r, pub, 999)
    want = [
        min((p for t, x, p in reads if (t, x) == row), default=999) for row in rows
    ]  # one row at a time, by the definition
    assert got.tolist() == want


def _msg(tag: int, reader: int, ts: int) -> bytes:
    reads = Reads.from_columns(tag_id=[tag], reader_id=[reader], ts_ms=[ts], rssi_dbm=[-50])
    return encode_batch(reads, gateway_id=reader, batch_seq=1)


def test_each_alert_carries_its_own_messages_publish_time() -> None:
    registry = RegistryFollower("127.0.0.1:1", "readers")  # never started: no broker needed
    registry.registry = ReaderRegistry.from_columns([1, 2], [25.0, 25.1], [102.7, 102.8])
    hot = types.SimpleNamespace(
        hotlist=Hotlist([HotlistEntry("case-a", 7, 0), HotlistEntry("case-b", 8, 0)])
    )
    proc = Processor(Settings(max_lateness_ms=10**12), registry, hot)
    # One step, three messages of one partition published 40 ms apart: tag 7's sighting is in
    # the first and the third, tag 8's only in the second.
    out = proc.step(
        [
            (_msg(7, 1, T0), "reads", 0, 10, float(T0 + 1000)),
            (_msg(8, 2, T0), "reads", 0, 11, float(T0 + 1040)),
            (_msg(7, 1, T0 + 500), "reads", 0, 12, float(T0 + 1080)),
        ]
    )
    got = {a.case_id: a.read_published_ms for a in out.alerts}
    assert got == {"case-a": T0 + 1000, "case-b": T0 + 1040}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 200)), min_size=1, max_size=40))
def test_first_part_names_the_reads_it_applied(rows: list[tuple[int, int]]) -> None:
    from stream.sessionize.sessionizer import Sessionizer

    reg = ReaderRegistry.from_columns([1], [25.0], [102.7])
    s = Sessionizer(gap_ms=30_000, max_lateness_ms=100_000, registry=reg)
    reads = Reads.from_columns(
        tag_id=[t for t, _ in rows], reader_id=[1] * len(rows), ts_ms=[m * 1000 for _, m in rows]
    )
    hot = np.array([2, 4], np.uint64)
    first = next(s.process_parts(reads, 1, hot))
    horizon = int(reads.ts_ms.max()) - 100_000
    want = [i for i, (t, m) in enumerate(rows) if t in (2, 4) and m * 1000 >= horizon]
    assert first.applied is not None and first.applied.tolist() == want
