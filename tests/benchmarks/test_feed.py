"""The e2e feed's gateway flushes and read spool, without services: message grouping and order."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from benchmarks.e2e_spool import ReadSpool
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher, partition_of
from ingest.wire import decode_structure


def _reads(n: int, seed: int = 1) -> tuple[Reads, np.ndarray]:
    g = np.random.default_rng(seed)
    reads = Reads.from_columns(
        tag_id=g.integers(1, 10_000, n),
        reader_id=g.integers(1, 50, n),
        ts_ms=1_795_000_000_000 + np.arange(n),
        rssi_dbm=g.integers(-90, -40, n),
    )
    return reads, g.integers(1, 6, n).astype(np.uint32)


def _publisher(partitions: int, max_reads: int = 16_384) -> GatewayPublisher:
    pub = GatewayPublisher("127.0.0.1:1", "tag-reads", max_reads_per_message=max_reads)
    pub._n_partitions = partitions  # what start() reads from the broker; no broker needed here
    return pub


def test_flush_is_one_message_per_gateway_and_partition_in_send_order() -> None:
    reads, gw = _reads(5_000)
    pub = _publisher(4)
    seqs: dict[int, list[int]] = {}
    for _flush in range(2):
        msgs = pub.flush_messages(reads, gw)
        pairs = [(g, p) for p, g, _ in msgs]
        assert len(pairs) == len(set(pairs)) == len(set(zip(gw.tolist(), partition_of(
            reads.reader_id, 4).tolist(), strict=True)))  # fmt: skip
        for p, g, value in msgs:
            batch = decode_structure(value)
            assert batch.gateway_id == g
            seqs.setdefault(g, []).append(batch.batch_seq)
            # Exactly this gateway's reads of this partition, in their buffered order.
            want = np.flatnonzero((gw == g) & (partition_of(reads.reader_id, 4) == p))
            np.testing.assert_array_equal(batch.reads.ts_ms, reads.ts_ms[want])
            np.testing.assert_array_equal(batch.reads.tag_id, reads.tag_id[want])
    for s in seqs.values():
        assert all(b > a for a, b in itertools.pairwise(s)), "batch_seq must increase"


def test_flush_splits_only_beyond_max_reads() -> None:
    reads, _ = _reads(1_000)
    gw = np.full(len(reads), 7, np.uint32)
    msgs = _publisher(1, max_reads=300).flush_messages(reads, gw)
    assert [len(decode_structure(v).reads) for _, _, v in msgs] == [300, 300, 300, 100]
    assert _publisher(1).flush_messages(Reads.empty(), np.empty(0, np.uint32)) == []
    with pytest.raises(ValueError):
        _publisher(1).flush_messages(reads, gw[:10])


def test_spool_buckets_hold_every_read_once(tmp_path: Path) -> None:
    reads, _ = _reads(3_000)
    spool = ReadSpool(tmp_path, n_buckets=3, keep_head=500)
    for a in range(0, len(reads), 700):
        spool.add(reads.take(np.arange(a, min(a + 700, len(reads)))))
    assert spool.n_reads == len(reads)
    np.testing.assert_array_equal(spool.head().ts_ms, reads.ts_ms[:500])
    got = []
    for k, part in spool.buckets():
        assert (spool.bucket_of(part.tag_id) == k).all()
        got.append(part.ts_ms)
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), np.sort(reads.ts_ms))
    with pytest.raises(ValueError):
        ReadSpool(tmp_path / "x", n_buckets=0)
