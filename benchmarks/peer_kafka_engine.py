"""Peer of the stream (issues 5, 9): ClickHouse's own Kafka engine + a materialized view, in chdb.

ClickHouse cannot parse our binary wire format, so the same reads are published again on topics of
their own in formats it reads natively, cut into Kafka messages of the same number of reads per
message as the gateway batches being compared (`reads_per_message`, fractional averages allowed):
  Native     columnar like our wire format: one ClickHouse Native block per message;
  RowBinary  the same rows, row by row (fixed 38 bytes a read).
lat/lon are plain Float64 with NaN for fixed readers, as on the wire.

The engine runs `reads_queue ENGINE = Kafka` -> MV -> MergeTree `reads`, and the figure is rows
stored per second while it drains the backlog of a pre-filled topic (poll, parse, insert into
MergeTree; no sessionizing, no dedup). It runs in a child process that loads chdb's extension
directly: `import chdb` opens and closes an engine to read its version, and closing one marks
ClickHouse's process-wide StreamingStorageRegistry as shut down for good, after which every
`ENGINE = Kafka` table fails with "Shutdown was called" (chdb 4.4.0 / 26.9.2.1). A first engine
that stays open (the child's) runs Kafka tables and their background consumers normally.

Also kept as a client-side reference: an aiokafka consumer handing each fetched batch to chdb as
`INSERT ... FORMAT JSONEachRow` with an aggregating MV (reads per tag, reader, 30 s bucket).
`python -m benchmarks.peer_kafka_engine` runs both on a local broker and saves
results/peer_kafka_engine.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.peer_messages import (
    ENGINE_COLUMNS,
    json_messages,
    message_bounds,
    native_messages,
    rowbinary_messages,
)
from core.records.reads import Reads

TOPIC = "peer-reads-jsoneachrow"
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
FORMATS = ("Native", "RowBinary")
# The e2e run 20261128-110245 sent 2.4 reads per gateway message (paced feed); bench_wire's batches
# hold 1,000. The standalone run measures both ends.
DEFAULT_READS_PER_MESSAGE = (2.4, 1000.0)
ENGINE_TIMEOUT_S = 300.0
NOTES = (
    "Kafka engine runs in a child process that loads chdb's _chdb extension directly: "
    "`import chdb` opens and closes an engine (SELECT version()), and closing it shuts "
    "ClickHouse's process-wide StreamingStorageRegistry for good, so any later CREATE TABLE "
    "... ENGINE = Kafka in that process fails with 'Shutdown was called' (chdb 4.4.0, "
    "engine 26.9.2.1).",
    "The topics hold the same reads as tagtrail's wire topic, re-encoded as RowBinary or "
    "Native (ClickHouse cannot parse our wire format), cut into messages of reads_per_message "
    "reads; lat/lon Float64 with NaN as on the wire.",
    "The engine drains a pre-filled topic (backlog) into a plain MergeTree: poll + parse + "
    "insert only; no validation, dead-lettering, dedup/sessionizing or H3 as in tagtrail's "
    "stream. rows_per_s counts from MV creation, so it includes the consumer group join.",
    "kafka_num_consumers=2 with kafka_thread_per_consumer=1, kafka_max_block_size=65536, "
    "kafka_flush_interval_ms=200 (ClickHouse's default 7500 would dominate small runs).",
    "2 cores shared with other work: figures are noisy (see load_1min_at_start).",
)


async def _publish(bootstrap: str, topic: str, messages: list[bytes], partitions: int) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    t = time.perf_counter()
    try:
        # Round-robin over partitions, many small messages per producer batch: send_batch keeps
        # hundreds of thousands of tiny messages from costing one future each.
        for p in range(partitions):
            batch = producer.create_batch()
            for m in messages[p::partitions]:
                if batch.append(key=None, value=m, timestamp=None) is None:
                    await (await producer.send_batch(batch, topic, partition=p))
                    batch = producer.create_batch()
                    batch.append(key=None, value=m, timestamp=None)
            if batch.record_count():
                await (await producer.send_batch(batch, topic, partition=p))
    finally:
        await producer.stop()
    return time.perf_counter() - t


def load_chdb_extension() -> Any:
    """chdb's compiled module, loaded without running chdb/__init__.py (see module docstring)."""
    import ctypes
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("chdb")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("chdb is not installed in this environment")
    so = next(
        (
            Path(d) / "_chdb.abi3.so"
            for d in spec.submodule_search_locations
            if (Path(d) / "_chdb.abi3.so").exists()
        ),
        None,
    )
    if so is None:
        raise RuntimeError("chdb's _chdb.abi3.so not found (chdb-core missing?)")
    cwd = os.getcwd()
    os.chdir(so.parent)  # as chdb/__init__ does: its helper libraries are found from there
    try:
        # RTLD_DEEPBIND as chdb/__init__ does, so the engine keeps its own allocator symbols.
        ctypes.CDLL(str(so), mode=sys.getdlopenflags() | os.RTLD_DEEPBIND)
        loader = importlib.machinery.ExtensionFileLoader("_chdb", str(so))
        mod_spec = importlib.util.spec_from_loader("_chdb", loader)
        assert mod_spec is not None
        module = importlib.util.module_from_spec(mod_spec)
        loader.exec_module(module)
    finally:
        os.chdir(cwd)
    return module


def engine_child(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: Kafka table -> MV -> MergeTree, timed until every read is stored."""
    ext = load_chdb_extension()
    conn = ext.connect(str(args.path))

    def q(sql: str) -> str:
        return str(conn.query(sql, "CSV").bytes().decode().strip())

    cols = ", ".join(f"{n} {t}" for n, t in ENGINE_COLUMNS)
    q("CREATE DATABASE IF NOT EXISTS peer")
    q(f"CREATE TABLE peer.reads ({cols}) ENGINE = MergeTree ORDER BY (tag_id, ts_ms)")
    q(
        f"CREATE TABLE peer.reads_queue ({cols}) ENGINE = Kafka SETTINGS "
        f"kafka_broker_list = '{args.bootstrap}', kafka_topic_list = '{args.topic}', "
        f"kafka_group_name = '{args.topic}-chdb', kafka_format = '{args.format}', "
        f"kafka_num_consumers = {args.consumers}, kafka_thread_per_consumer = 1, "
        f"kafka_max_block_size = {args.max_block_size}, "
        # A block is flushed when full or after this long; ClickHouse's 7.5 s default would
        # dominate small runs and the tail of large ones.
        f"kafka_flush_interval_ms = {args.flush_interval_ms}"
    )
    t0 = time.perf_counter()
    q("CREATE MATERIALIZED VIEW peer.mv TO peer.reads AS SELECT * FROM peer.reads_queue")
    first: tuple[float, int] | None = None
    got = 0
    while time.perf_counter() - t0 < args.timeout:
        got = int(q("SELECT count() FROM peer.reads") or 0)
        if got and first is None:
            first = (time.perf_counter(), got)
        if got >= args.n:
            break
        time.sleep(0.05)
    done = time.perf_counter()
    check = q("SELECT sum(tag_id), sum(ts_ms), count() FROM peer.reads").split(",")
    consumers = q(
        "SELECT sum(num_messages_read), max(length(exceptions.text)) FROM system.kafka_consumers"
    )
    parts = q("SELECT count(), max(rows) FROM system.parts WHERE table = 'reads' AND active")
    # Stop the consumers before closing; the process exit ends the rest.
    q("DROP VIEW peer.mv")
    q("DROP TABLE peer.reads_queue")
    res: dict[str, Any] = {
        "rows": got,
        "seconds": round(done - t0, 3),
        # Headline: MV creation to the last row stored, so it includes the consumers' start
        # (group join, first fetch: 1-5 s here). Rows become visible only when a consumer's
        # insert commits, and draining a backlog one insert can hold millions of rows (see
        # parts_and_max_rows_per_part), so a rate from the first visible rows is coarse: kept
        # as a second figure only.
        "rows_per_s": round(got / (done - t0)),
        "rows_per_s_basis": "MV creation to last row stored (includes consumer start)",
        "checksums_match": [int(check[0]), int(check[1])] == [args.sum_tag, args.sum_ts],
        "kafka_messages_read_and_consumer_errors": consumers,
        "parts_and_max_rows_per_part": parts,
        "chdb_engine": q("SELECT version()").strip('"'),
    }
    if first is not None:
        res["seconds_to_first_rows"] = round(first[0] - t0, 3)
        if done > first[0] and got > first[1]:
            res["rows_per_s_after_first_rows"] = round((got - first[1]) / (done - first[0]))
    if got < args.n:
        res["incomplete"] = f"{got:,} of {args.n:,} rows within {args.timeout:.0f} s"
    return res


def _run_engine(
    bootstrap: str, topic: str, fmt: str, reads: Reads, path: Path, consumers: int
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.peer_kafka_engine", "child",
        "--bootstrap", bootstrap, "--topic", topic, "--format", fmt, "--n", str(len(reads)),
        "--path", str(path), "--consumers", str(consumers),
        "--sum-tag", str(int(reads.tag_id.sum(dtype=np.uint64))),
        "--sum-ts", str(int(reads.ts_ms.sum(dtype=np.int64))),
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    try:
        p = subprocess.run(
            cmd, cwd=root, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S + 60
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"child did not finish within {ENGINE_TIMEOUT_S + 60:.0f} s"}
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"exit {p.returncode}: {err[:400]}"}
    return dict(json.loads(lines[-1]))


async def kafka_engine_peer(
    bootstrap: str,
    reads: Reads,
    work: Path,
    *,
    reads_per_message: float,
    fmt: str = "Native",
    partitions: int = 4,
    consumers: int = 2,
) -> dict[str, Any]:
    """Publish `reads` in `fmt`, `reads_per_message` a message, and time the engine draining it."""
    encode = {"Native": native_messages, "RowBinary": rowbinary_messages}[fmt]
    t = time.perf_counter()
    messages = encode(reads, message_bounds(len(reads), reads_per_message))
    encode_s = time.perf_counter() - t
    topic = f"peer-reads-{fmt.lower()}-{int(reads_per_message * 10)}-{os.urandom(3).hex()}"
    publish_s = await _publish(bootstrap, topic, messages, partitions)
    path = work / f"engine-{topic}"
    res = await asyncio.to_thread(_run_engine, bootstrap, topic, fmt, reads, path, consumers)
    shutil.rmtree(path, ignore_errors=True)
    return {
        "format": fmt,
        "reads_per_message": reads_per_message,
        "messages": len(messages),
        "bytes": sum(map(len, messages)),
        "partitions": partitions,
        "kafka_num_consumers": consumers,
        "encode_s": round(encode_s, 2),
        "publish_s": round(publish_s, 2),
        **res,
    }


def _version_of(s: Any) -> str:
    return str(s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"'))


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
            "chdb": _version_of(s),
        }
    finally:
        await consumer.stop()
        s.close()


async def run_peer(
    bootstrap: str,
    reads: Reads,
    work: Path,
    *,
    max_reads: int = 2_000_000,
    partitions: int = 4,
    reads_per_message: float = 1000.0,
    engine_formats: tuple[str, ...] = ("RowBinary", "Native"),
) -> dict[str, Any]:
    """The Kafka-engine peer (headline: the first of `engine_formats`) and the aiokafka JSON
    reference, on the first `max_reads` reads; a failed variant is recorded, never a number."""
    if len(reads) > max_reads:
        reads = reads.take(np.arange(max_reads))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n = len(reads)
    engines = [
        await kafka_engine_peer(
            bootstrap, reads, work, reads_per_message=reads_per_message, fmt=f,
            partitions=partitions,
        )
        for f in engine_formats
    ]  # fmt: skip
    out: dict[str, Any] = {"reads": n}
    if engines:
        head = dict(engines[0])
        if "failed" in head or "incomplete" in head or "rows_per_s" not in head:
            head["not_measured"] = head.get("failed") or head.get("incomplete") or "no figure"
            head.pop("rows_per_s", None)
        out["kafka_engine_mv"] = head | {"variants": engines[1:]}
    t = time.perf_counter()
    messages = json_messages(reads)
    encode_s = time.perf_counter() - t
    publish_s = await _publish(bootstrap, TOPIC, messages, partitions)
    return out | {
        "topic": TOPIC,
        "json_bytes": sum(map(len, messages)),
        "json_encode_s": round(encode_s, 2),
        "json_publish_s": round(publish_s, 2),
        "aiokafka_to_clickhouse_jsoneachrow_mv": await _consumer_insert(bootstrap, work, n),
    }


def _main_child(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="peer_kafka_engine child")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--path", type=Path, required=True)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--max-block-size", type=int, default=65_536)
    ap.add_argument("--flush-interval-ms", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=ENGINE_TIMEOUT_S)
    ap.add_argument("--sum-tag", type=int, required=True)
    ap.add_argument("--sum-ts", type=int, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(engine_child(args)), flush=True)
    # Exit without running the engine's teardown: the figures are out, and a Kafka table's
    # shutdown can wait seconds on librdkafka.
    os._exit(0)


async def _standalone(bootstrap: str, reads: Reads, work: Path, rpms: list[float]) -> dict:
    variants = []
    for r in rpms:
        for f in FORMATS:
            v = await kafka_engine_peer(bootstrap, reads, work, reads_per_message=r, fmt=f)
            print(json.dumps(v), flush=True)
            variants.append(v)
    ref = await run_peer(bootstrap, reads, work, max_reads=len(reads), engine_formats=())
    # Headline for the README (same key as run_peer's): the first reads-per-message figure (the
    # e2e's gateway batches) in RowBinary, the faster format for small messages.
    head = next(v for v in variants if v["format"] == "RowBinary")
    if "rows_per_s" not in head or "incomplete" in head or "failed" in head:
        why = head.get("failed") or head.get("incomplete") or "no figure"
        head = {k: v for k, v in head.items() if k != "rows_per_s"} | {"not_measured": why}
    return {"kafka_engine_mv": head, "kafka_engine_mv_variants": variants} | ref


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        _main_child(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scale", type=float, default=0.5, help="simulated city scale (0.5: ~5.5 M reads)"
    )
    ap.add_argument("--reads-per-message", type=float, nargs="+", default=DEFAULT_READS_PER_MESSAGE)
    ap.add_argument("--out", type=Path, default=Path("results/peer_kafka_engine.json"))
    args = ap.parse_args(argv)

    import tempfile

    from benchmarks.e2e_scale import RUSH_START_H, recent_day_ms
    from core.config import load_settings
    from ingest.simulator import CityConfig, simulate
    from tagtrail.broker.launcher import LocalKafka

    cfg = CityConfig(scale=args.scale, start_ms=recent_day_ms() + RUSH_START_H * 3_600_000)
    reads = simulate(cfg).reads
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="peer-kafka-engine-") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", load_settings().kafka_cache_dir, heap_mb=512)
        with broker:
            out = asyncio.run(
                _standalone(broker.bootstrap, reads, Path(tmp) / "peer", args.reads_per_message)
            )
    out = {
        "what": "ClickHouse Kafka engine -> MV -> MergeTree (chdb, child process) draining a "
        "pre-filled topic of the same reads in Native/RowBinary, vs our binary wire format",
        "scale": args.scale,
        "load_1min_at_start": round(load, 2),
        "cores": os.cpu_count(),
        "notes": list(NOTES),
    } | out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for v in out["kafka_engine_mv_variants"]:
        fig = v.get("rows_per_s", v.get("failed") or v.get("incomplete"))
        print(f"Kafka engine {v['format']:9s} {v['reads_per_message']:>7} reads/msg: {fig} rows/s")
    ref = out["aiokafka_to_clickhouse_jsoneachrow_mv"]
    print(f"aiokafka -> JSONEachRow INSERT + MV: {ref['rows_per_s']} rows/s; saved {args.out}")


if __name__ == "__main__":
    main()
