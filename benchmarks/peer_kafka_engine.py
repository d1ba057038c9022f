"""Peer of the stream (issue 5): ClickHouse ingesting the same reads from Kafka, through chdb.

Setup: the benchmark's reads are published again on a topic of their own as JSONEachRow (one Kafka
message per 4,096 reads; ClickHouse cannot parse our binary wire format). Then, in a fresh chdb
session:

1. ClickHouse's Kafka engine: `reads_queue ENGINE = Kafka(...)`, a MergeTree `reads` and a
   materialized view `reads_queue -> reads`, counted until every row is in. If chdb cannot create
   the Kafka table, the error is recorded verbatim (no figure is invented).
2. The reference we can always run: an aiokafka consumer hands each fetched batch to ClickHouse
   (`INSERT INTO reads FORMAT JSONEachRow`), with a materialized view that aggregates reads per
   (tag, reader, 30 s bucket): ClickHouse's parse + insert + MV cost for the same topic. The bucket
   rule approximates sightings; it is not the exact gap contract.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ingest.reads import Reads

TOPIC = "peer-reads-jsoneachrow"
ROWS_PER_MESSAGE = 4096
COLUMNS = (
    "tag_id UInt64, reader_id UInt32, ts_ms Int64, rssi_dbm Int8, flags UInt8, "
    "lat Nullable(Float64), lon Nullable(Float64)"
)
MV_SQL = """
CREATE MATERIALIZED VIEW {db}.sightings_mv TO {db}.sightings_approx AS
SELECT tag_id, reader_id, intDiv(ts_ms, 30000) AS bucket, min(ts_ms) AS first_ts,
       max(ts_ms) AS last_ts, count() AS n_reads, max(rssi_dbm) AS max_rssi
FROM {db}.reads GROUP BY tag_id, reader_id, bucket
"""


def json_messages(reads: Reads) -> list[bytes]:
    df = pd.DataFrame({k: getattr(reads, k) for k in Reads.__slots__})
    out = []
    for i in range(0, len(df), ROWS_PER_MESSAGE):
        # pandas writes the lines in C; NaN positions become null (Nullable columns).
        out.append(df.iloc[i : i + ROWS_PER_MESSAGE].to_json(orient="records", lines=True).encode())
    return out


async def _publish(bootstrap: str, messages: list[bytes], partitions: int) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    t = time.perf_counter()
    try:
        futs = [
            await producer.send(TOPIC, m, partition=i % partitions) for i, m in enumerate(messages)
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return time.perf_counter() - t


def _kafka_engine(bootstrap: str, path: Path, n: int, timeout_s: float) -> dict[str, Any]:
    from chdb import session

    s = session.Session(str(path / "engine"))
    try:
        s.query("CREATE DATABASE IF NOT EXISTS peer")
        s.query(f"CREATE TABLE peer.reads ({COLUMNS}) ENGINE = MergeTree ORDER BY (tag_id, ts_ms)")
        try:
            s.query(
                f"CREATE TABLE peer.reads_queue ({COLUMNS}) ENGINE = Kafka SETTINGS "
                f"kafka_broker_list = '{bootstrap}', kafka_topic_list = '{TOPIC}', "
                "kafka_group_name = 'chdb-peer', kafka_format = 'JSONEachRow', "
                "kafka_num_consumers = 1"
            )
        except Exception as e:  # chdb raises its own RuntimeError subclasses; keep the text
            return {
                "not_measured": f"chdb {_version(s)}: CREATE TABLE ... ENGINE = Kafka failed: {e}"
            }
        t = time.perf_counter()
        s.query("CREATE MATERIALIZED VIEW peer.mv TO peer.reads AS SELECT * FROM peer.reads_queue")
        got = 0
        while time.perf_counter() - t < timeout_s:
            got = int(s.query("SELECT count() FROM peer.reads", "CSV").bytes().strip() or 0)
            if got >= n:
                break
            time.sleep(0.2)
        el = time.perf_counter() - t
        res = {"rows": got, "seconds": round(el, 2), "rows_per_s": round(got / el)}
        if got < n:
            res["incomplete"] = f"{got:,} of {n:,} rows within {timeout_s:.0f} s"
        return res
    finally:
        s.close()


def _version(s: Any) -> str:
    return s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')


async def _consumer_insert(bootstrap: str, path: Path, n: int) -> dict[str, Any]:
    from chdb import session

    s = session.Session(str(path / "client"))
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        s.query("CREATE DATABASE IF NOT EXISTS peer")
        s.query(f"CREATE TABLE peer.reads ({COLUMNS}) ENGINE = MergeTree ORDER BY (tag_id, ts_ms)")
        s.query(
            "CREATE TABLE peer.sightings_approx (tag_id UInt64, reader_id UInt32, bucket Int64, "
            "first_ts SimpleAggregateFunction(min, Int64), last_ts SimpleAggregateFunction(max, "
            "Int64), n_reads SimpleAggregateFunction(sum, UInt64), max_rssi "
            "SimpleAggregateFunction(max, Int8)) ENGINE = AggregatingMergeTree "
            "ORDER BY (tag_id, reader_id, bucket)"
        )
        s.query(MV_SQL.format(db="peer"))
        await consumer.start()
        t = time.perf_counter()
        rows = 0
        while rows < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            if not batch:
                if time.perf_counter() - t > 120:
                    break
                continue
            payload = b"".join(m.value for msgs in batch.values() for m in msgs)
            s.query("INSERT INTO peer.reads FORMAT JSONEachRow " + payload.decode())
            rows += payload.count(b"\n")
        el = time.perf_counter() - t
        stored = int(s.query("SELECT count() FROM peer.reads", "CSV").bytes().strip())
        approx = int(
            s.query("SELECT count() FROM peer.sightings_approx FINAL", "CSV").bytes().strip()
        )
        return {
            "rows": stored,
            "seconds": round(el, 2),
            "rows_per_s": round(stored / el) if el > 0 else None,
            "approx_sightings": approx,
            "chdb": _version(s),
        }
    finally:
        await consumer.stop()
        s.close()


async def run_peer(
    bootstrap: str, reads: Reads, work: Path, *, max_reads: int = 2_000_000, partitions: int = 4
) -> dict[str, Any]:
    """Both peer variants on the first `max_reads` reads; figures or explicit not-measured."""
    if len(reads) > max_reads:
        reads = reads.take(np.arange(max_reads))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    messages = json_messages(reads)
    encode_s = time.perf_counter() - t
    publish_s = await _publish(bootstrap, messages, partitions)
    n = len(reads)
    return {
        "topic": TOPIC,
        "reads": n,
        "json_bytes": sum(map(len, messages)),
        "json_encode_s": round(encode_s, 2),
        "json_publish_s": round(publish_s, 2),
        "kafka_engine_mv": await asyncio.to_thread(_kafka_engine, bootstrap, work, n, 300.0),
        "aiokafka_to_clickhouse_jsoneachrow_mv": await _consumer_insert(bootstrap, work, n),
    }
