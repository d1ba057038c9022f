"""The e2e feed's gateway buffer: every read leaves once, in its gateway's flush phase, in send
order; phases spread the gateways evenly; one phase is every gateway at once."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.e2e_feed import _GatewayBuffer, phase_slot
from core.records.reads import Reads


def reads_of(seq: np.ndarray) -> Reads:
    n = len(seq)
    return Reads.from_columns(
        tag_id=seq.astype(np.uint64),  # the send sequence number, to check order
        reader_id=np.ones(n, np.uint32),
        ts_ms=np.full(n, 1_790_000_000_000),
        rssi_dbm=np.full(n, -50),
        flags=np.zeros(n, np.uint8),
        lat=np.full(n, np.nan),
        lon=np.full(n, np.nan),
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=5),
    st.integers(1, 8),
)
def test_each_read_leaves_once_in_its_gateways_phase_in_send_order(
    chunks: list[list[int]], slots: int
) -> None:
    buf = _GatewayBuffer(slots)
    seq = 0
    sent_by_gw: dict[int, list[int]] = {}
    for gws in chunks:
        gw = np.array(gws, np.int64)
        s = np.arange(seq, seq + len(gw))
        seq += len(gw)
        for g, i in zip(gw.tolist(), s.tolist(), strict=True):
            sent_by_gw.setdefault(g, []).append(i)
        buf.add(reads_of(s), gw)
    got_by_gw: dict[int, list[int]] = {}
    for k in range(slots):
        taken = buf.take(k)
        if taken is None:
            continue
        reads, gw = taken
        assert (phase_slot(gw, slots) == k).all()
        for g, i in zip(gw.tolist(), reads.tag_id.tolist(), strict=True):
            got_by_gw.setdefault(g, []).append(i)
    assert got_by_gw == sent_by_gw
    assert all(buf.take(k) is None for k in range(slots))


def test_phases_spread_gateways_evenly_and_one_phase_is_all() -> None:
    gw = np.arange(3000, dtype=np.int64)
    counts = np.bincount(phase_slot(gw, 20), minlength=20)
    assert counts.min() >= 100 and counts.max() <= 200, counts
    assert (phase_slot(gw, 1) == 0).all()
