"""Publisher: partition splitting (pure), then real-broker delivery and kcat interoperability."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import given, settings
from hypothesis import strategies as st

from core.records.reads import FLAG_MOBILE, Reads
from ingest.publisher import GatewayPublisher, best_compression, split_by_partition
from ingest.wire import Batch, decode_batch, decode_structure
from tests.ingest.test_wire import VECTOR_MIXED, assert_reads_equal, doc_vectors

KCAT = shutil.which("kcat")
needs_kcat = pytest.mark.skipif(
    KCAT is None, reason="kcat not installed (Debian package 'kcat'): interop test not run"
)


def make_reads(n: int, n_readers: int, seed: int, tag_base: int = 0) -> Reads:
    rng = np.random.default_rng(seed)
    mobile = rng.random(n) < 0.1
    return Reads.from_columns(
        tag_id=np.arange(tag_base, tag_base + n, dtype=np.uint64),  # unique: reads are traceable
        reader_id=rng.integers(0, n_readers, n),
        ts_ms=1_764_320_400_000 + np.sort(rng.integers(0, 60_000, n)),
        rssi_dbm=rng.integers(-90, -40, n),
        flags=np.where(mobile, FLAG_MOBILE, 0),
        lat=np.where(mobile, 25.0 + rng.random(n) * 0.1, np.nan),
        lon=np.where(mobile, 102.7 + rng.random(n) * 0.1, np.nan),
    )


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 300),
    n_readers=st.integers(1, 40),
    parts=st.integers(1, 8),
    max_reads=st.integers(1, 120),
    seed=st.integers(0, 1000),
)
def test_split_by_partition(n: int, n_readers: int, parts: int, max_reads: int, seed: int) -> None:
    reads = make_reads(n, n_readers, seed)
    chunks = split_by_partition(reads, parts, max_reads)
    seen = []
    for p, chunk in chunks:
        assert 0 < len(chunk) <= max_reads
        assert (chunk.reader_id % parts == p).all()  # one partition per message
        assert (np.diff(chunk.tag_id.astype(np.int64)) > 0).all()  # input order kept
        seen.append(chunk.tag_id)
    got = np.sort(np.concatenate(seen)) if seen else np.empty(0, np.uint64)
    assert np.array_equal(got, reads.tag_id)  # every read exactly once


def test_best_compression_is_usable() -> None:
    assert best_compression() in ("zstd", "lz4", "gzip")


async def consume(bootstrap: str, topic: str, want_reads: int, timeout_s: float = 30.0) -> list:
    """All records of `topic` until want_reads reads arrived (decoded structurally on the way)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records, got = [], 0
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while got < want_reads and loop.time() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for rec in recs:
                    records.append(rec)
                    got += len(decode_structure(rec.value).reads)
    finally:
        await consumer.stop()
    return records


async def publish_and_consume(bootstrap: str, topic: str, batches: list[tuple[Reads, int]],
                              **kwargs: object) -> tuple[GatewayPublisher, list]:  # fmt: skip
    async with GatewayPublisher(bootstrap, topic, **kwargs) as pub:  # type: ignore[arg-type]
        stats = await pub.publish_many(batches[1:])
        first = await pub.publish(*batches[0])
    total = sum(len(r) for r, _ in batches)
    assert stats.reads + first.reads == total
    records = await consume(bootstrap, topic, total)
    assert len(records) == stats.messages + first.messages
    return pub, records


@pytest.mark.kafka
def test_publish_delivers_every_read_to_its_readers_partition(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("reads")
    batches = [(make_reads(3000, 60, seed=g, tag_base=g * 10_000), g) for g in (7, 8, 2**32 - 1)]
    pub, records = asyncio.run(
        publish_and_consume(kafka_bootstrap, topic, batches, max_reads_per_message=400)
    )
    assert pub.n_partitions == 4 and pub.compression == best_compression()
    decoded: list[tuple[int, int, Batch]] = []
    for rec in records:
        batch = decode_batch(rec.value)  # fully valid: strict decode passes
        assert len(batch.reads) <= 400
        assert (batch.reads.reader_id % 4 == rec.partition).all()
        assert rec.key == struct.pack(">I", batch.gateway_id)
        decoded.append((rec.partition, rec.offset, batch))
    # batch_seq: unique per gateway, increasing in log order within each partition.
    for g in (7, 8, 2**32 - 1):
        seqs = [b.batch_seq for _, _, b in decoded if b.gateway_id == g]
        assert len(set(seqs)) == len(seqs)
        for p in range(4):
            in_log = [b.batch_seq for q, _, b in sorted(decoded, key=lambda x: x[1])
                      if q == p and b.gateway_id == g]  # fmt: skip
            assert in_log == sorted(in_log)
    got = Reads.concat([b.reads for _, _, b in decoded])
    order = np.argsort(got.tag_id)
    assert_reads_equal(got.take(order), Reads.concat([r for r, _ in batches]))


def run_kcat(*args: str, data_file: Path | None = None) -> bytes:
    assert KCAT is not None
    cmd = [KCAT, *args] + ([str(data_file)] if data_file else [])
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@needs_kcat
@pytest.mark.kafka
def test_kcat_produced_test_vector_is_consumed_and_decoded(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topic = unique_name("kcat-in")
    vector = tmp_path / "vector.bin"
    vector.write_bytes(doc_vectors()["mixed"])
    # A file argument is produced as one message, byte for byte; lz4 checks the codec path too.
    run_kcat("-P", "-b", kafka_bootstrap, "-t", topic, "-p", "1", "-k", "gw258",
             "-X", "compression.codec=lz4", data_file=vector)  # fmt: skip
    (rec,) = asyncio.run(consume(kafka_bootstrap, topic, want_reads=3))
    assert rec.partition == 1 and rec.key == b"gw258"
    batch = decode_batch(rec.value)
    assert (batch.gateway_id, batch.batch_seq) == (258, 4294967297)
    assert_reads_equal(batch.reads, VECTOR_MIXED)


@needs_kcat
@pytest.mark.kafka
def test_kcat_consumes_what_the_publisher_produced(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("kcat-out")
    reads = VECTOR_MIXED.take(np.array([0, 1]))  # readers 1001, 1002: partitions 1 and 2 of 4

    async def send() -> None:
        async with GatewayPublisher(kafka_bootstrap, topic, seq_start=10) as pub:
            await pub.publish(reads, 258)

    asyncio.run(send())
    for p, i in ((1, 0), (2, 1)):
        value = run_kcat("-C", "-b", kafka_bootstrap, "-t", topic, "-p", str(p), "-o",
                         "beginning", "-c", "1", "-e", "-q", "-f", "%s")  # fmt: skip
        batch = decode_batch(value)
        assert batch.gateway_id == 258 and batch.batch_seq in (10, 11)
        assert_reads_equal(batch.reads, reads.take(np.array([i])))
