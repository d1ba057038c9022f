"""`tagtrail bench micro`: every per-stage benchmark with its peer, in one run, one JSON.

Stages (each module is owned by its stage; this only calls it, without writing their files):
  decode      bench_wire.bench_codec: wire encode/decode/validate reads/s
  publish     bench_wire.bench_publish: gateway publisher to a local broker, per compression
  sessionize  bench_sessionize.run: streaming numba sessionizer vs pandas groupby
  geoindex    bench_geoindex.bench: numba H3 vs h3-py per point, polars-h3, chdb geoToH3
  store       bench_store.run: sink-style inserts and the query library's latencies
  simulator   bench_simulator._run: reads generated per second
  kafka_peer  peer_kafka_engine.run_peer: ClickHouse's Kafka engine + MV (chdb, child process)
              draining the same reads as RowBinary and Native, 1,000 a message like the decode
              stage's batches, and a ClickHouse JSONEachRow ingest of the same reads
A stage that fails is recorded with its error (and the run goes on), never with a number.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (quick, full) sizes per stage: quick keeps the whole run to tens of seconds for tests.
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "publish": ({"n_reads": 100_000}, {"n_reads": 2_000_000}),
    "sessionize": ({"n_reads": 200_000, "batch": 50_000}, {"n_reads": 2_000_000, "batch": 100_000}),
    "geoindex": (
        {"n": 200_000, "res": 12, "repeats": 1},
        {"n": 10_000_000, "res": 12, "repeats": 3},
    ),
    "store": (
        {
            "n_sightings": 50_000,
            "n_tags": 20_000,
            "n_readers": 300,
            "repeat": 10,
            "raw_reads": 50_000,
        },
        {
            "n_sightings": 1_000_000,
            "n_tags": 300_000,
            "n_readers": 3_000,
            "repeat": 200,
            "raw_reads": 2_000_000,
        },
    ),
    "simulator": ({"scale": 0.01, "duration_s": 1800.0}, {"scale": 1.0, "duration_s": 3600.0}),
    "kafka_peer": ({"scale": 0.005}, {"scale": 0.2}),
}


def _decode(_: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_wire import bench_codec

    return bench_codec()


def _sessionize(a: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_sessionize import run

    return run(a["n_reads"], a["batch"])


def _geoindex(a: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_geoindex import bench

    return bench(a["n"], a["res"], a["repeats"])


def _store(a: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_store import run

    return run(a["n_sightings"], a["n_tags"], a["n_readers"], a["repeat"], a["raw_reads"])


def _simulator(a: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_simulator import _run
    from benchmarks.e2e_scale import RUSH_START_H, recent_day_ms
    from ingest.simulator import CityConfig

    cfg = CityConfig(
        scale=a["scale"],
        duration_s=a["duration_s"],
        start_ms=recent_day_ms() + RUSH_START_H * 3_600_000,
    )
    return _run(cfg)


def _with_broker(fn: Callable[[str], Any]) -> Any:
    from core.config import load_settings
    from tagtrail.broker.launcher import LocalKafka

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", settings.kafka_cache_dir, heap_mb=512)
        with broker:
            return fn(broker.bootstrap)


def _publish(a: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import codec as kafka_codec

    from benchmarks.bench_wire import bench_publish

    codecs = [c for c in ("zstd", "lz4", "gzip") if getattr(kafka_codec, f"has_{c}")()]
    return _with_broker(
        lambda b: {c: asyncio.run(bench_publish(b, a["n_reads"], c)) for c in codecs[:1]}
    )


def _kafka_peer(a: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bench_wire import BATCH
    from benchmarks.e2e_scale import RUSH_START_H, recent_day_ms
    from benchmarks.peer_kafka_engine import run_peer
    from ingest.simulator import CityConfig, simulate

    cfg = CityConfig(scale=a["scale"], start_ms=recent_day_ms() + RUSH_START_H * 3_600_000)
    reads = simulate(cfg).reads
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        return _with_broker(
            lambda b: asyncio.run(
                run_peer(b, reads, Path(tmp) / "peer", reads_per_message=float(BATCH))
            )
        )


STAGES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "decode": _decode,
    "publish": _publish,
    "sessionize": _sessionize,
    "geoindex": _geoindex,
    "store": _store,
    "simulator": _simulator,
    "kafka_peer": _kafka_peer,
}


def run_micro(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Run the stages (all, or `only`); each entry holds its figures, sizes and seconds."""
    out: dict[str, Any] = {}
    for name, fn in STAGES.items():
        if only and name not in only:
            continue
        sizes = SIZES.get(name, ({}, {}))[0 if quick else 1]
        t = time.perf_counter()
        try:
            figures = fn(sizes)
            entry: dict[str, Any] = {"figures": figures}
        except Exception as e:  # one broken stage must not hide the others' figures
            entry = {"failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        entry |= {"sizes": sizes, "stage_s": round(time.perf_counter() - t, 1)}
        out[name] = entry
        print(f"micro {name}: {entry.get('failed', 'ok')} in {entry['stage_s']} s", flush=True)
    return out
