"""The Kafka-engine peer at tiny scale: our Native/RowBinary messages parse in ClickHouse, and
chdb's Kafka engine + MV drains a real local broker's topic into MergeTree."""

from __future__ import annotations

import asyncio
from pathlib import Path

import chdb
import numpy as np
import pytest

from benchmarks.peer_kafka_engine import kafka_engine_peer
from benchmarks.peer_messages import (
    ENGINE_COLUMNS,
    message_bounds,
    native_messages,
    rowbinary_messages,
)
from core.records.reads import Reads
from tagtrail.broker.launcher import LocalKafka


def _reads(n: int, seed: int = 7) -> Reads:
    rng = np.random.default_rng(seed)
    lat = rng.uniform(48.0, 49.0, n)
    lat[rng.random(n) < 0.8] = np.nan  # fixed readers carry no position, as on the wire
    return Reads.from_columns(
        tag_id=rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2),
        reader_id=rng.integers(0, 2**32, n, dtype=np.uint32),
        ts_ms=rng.integers(1_700_000_000_000, 1_800_000_000_000, n),
        rssi_dbm=rng.integers(-128, 0, n, dtype=np.int8),
        flags=rng.integers(0, 8, n, dtype=np.uint8),
        lat=lat,
        lon=np.where(np.isnan(lat), np.nan, lat - 46.0),
    )


@pytest.mark.parametrize(("n", "rpm"), [(0, 3.0), (1, 2.4), (10, 2.4), (1001, 1000.0), (7, 50)])
def test_message_bounds_cover_every_read_once(n: int, rpm: float) -> None:
    b = message_bounds(n, rpm)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == n
    assert (sizes > 0).all() and (np.ptp(sizes) <= 1 if n else len(sizes) == 0)
    if n >= rpm:
        assert abs(sizes.mean() - rpm) <= max(1.0, rpm / 2)


@pytest.mark.parametrize("fmt", ["Native", "RowBinary"])
def test_messages_parse_back_in_clickhouse(tmp_path: Path, fmt: str) -> None:
    reads = _reads(1_000)
    encode = native_messages if fmt == "Native" else rowbinary_messages
    msgs = encode(reads, message_bounds(len(reads), 3.7))
    cols = ", ".join(f"{n} {t}" for n, t in ENGINE_COLUMNS)
    got = []
    for i in (0, 1, len(msgs) - 1):  # first, second and last message, each parsed on its own
        f = tmp_path / f"m{i}.bin"
        f.write_bytes(msgs[i])
        got.append(chdb.query(f"SELECT * FROM file('{f}', {fmt}, '{cols}')", "DataFrame"))
    b = message_bounds(len(reads), 3.7)
    for df, i in zip(got, (0, 1, len(msgs) - 1), strict=True):
        part = reads.take(np.arange(b[i], b[i + 1]))
        for name, _ in ENGINE_COLUMNS:
            np.testing.assert_array_equal(df[name].to_numpy(), getattr(part, name))


def test_kafka_engine_drains_topic(kafka_broker: LocalKafka, tmp_path: Path) -> None:
    reads = _reads(5_000)
    res = asyncio.run(
        kafka_engine_peer(kafka_broker.bootstrap, reads, tmp_path, reads_per_message=2.4)
    )
    print(res)
    assert res.get("failed") is None, res
    assert res["rows"] == len(reads) and res["checksums_match"], res
    assert res["kafka_messages_read_and_consumer_errors"] == f"{res['messages']},0"
