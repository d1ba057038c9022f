"""Benchmark of the streaming sessionizer (stream.sessionize) against a pandas groupby peer.

    python -m benchmarks.bench_sessionize [--reads 2000000] [--batch 100000]

Synthetic but shaped like the city: sightings of 5-10 reads 1-4 s apart (tags among 2 M bikes,
3,000 fixed readers + 30 mobile), 2% duplicate reads, arrival jitter of a few seconds, cut into
gateway-sized batches so that ~30% of a batch's keys continue from the previous batch. Times, in
one run on the same reads: the streaming Sessionizer batch by batch (late split, kernels, rows
with registry cells; numba compiled and warmed beforehand), and the peer: pandas groupby
sessionizing of all reads at once (offline, no state, no retractions: an easier job). Checks the
streaming result (upserts folded by version) equals the peer's. Prints a table and writes
results/bench_sessionize.json. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from ingest.reads import FLAG_MOBILE, Reads
from stream.dedup import ReaderRegistry, cells_for
from stream.records import SIGHTING_COLUMNS
from stream.sessionize import Sessionizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_sessionize.json"
GAP_MS = 30_000
N_FIXED, N_MOBILE = 3_000, 30


def make_reads(n_reads: int, rate_per_s: float, seed: int = 0) -> tuple[Reads, ReaderRegistry]:
    """Reads in arrival order and the registry of the fixed readers."""
    rng = np.random.default_rng(seed)
    reg = ReaderRegistry.from_columns(
        np.arange(N_FIXED), 24.9 + 0.2 * rng.random(N_FIXED), 102.6 + 0.2 * rng.random(N_FIXED)
    )
    per = rng.integers(5, 11, n_reads // 7)
    n_s = len(per)
    span_ms = int(n_reads / rate_per_s * 1000)
    s_tag = rng.integers(0, 2_000_000, n_s).astype(np.uint64)
    s_reader = rng.integers(0, N_FIXED + N_MOBILE, n_s).astype(np.uint32)
    s_start = rng.integers(0, span_ms, n_s)
    owner = np.repeat(np.arange(n_s), per)
    first = np.zeros(n_s, np.int64)
    np.cumsum(per[:-1], out=first[1:])
    step = rng.integers(1_000, 4_000, len(owner))
    step[first] = 0
    offs = np.cumsum(step)
    offs -= np.repeat(offs[first], per)
    ts = s_start[owner] + offs
    reader = s_reader[owner]
    mobile = reader >= N_FIXED
    n = len(ts)
    lat = np.where(mobile, 24.9 + 0.2 * rng.random(n), np.nan)
    lon = np.where(mobile, 102.6 + 0.2 * rng.random(n), np.nan)
    reads = Reads.from_columns(
        tag_id=s_tag[owner],
        reader_id=reader,
        ts_ms=ts,
        rssi_dbm=rng.integers(-85, -40, n),
        flags=np.where(mobile, FLAG_MOBILE, 0),
        lat=lat,
        lon=lon,
    )
    dup = rng.random(n) < 0.02  # gateway retries: same identity, maybe another rssi
    extra = reads.take(np.flatnonzero(dup))
    extra = Reads(**{**extra.columns(), "rssi_dbm": (extra.rssi_dbm - 1).astype(np.int8)})
    reads = Reads.concat([reads, extra])
    arrival = reads.ts_ms + rng.integers(0, 5_000, len(reads))  # gateways flush a bit late
    return reads.take(np.argsort(arrival, kind="stable")), reg


def pandas_peer(reads: Reads, reg: ReaderRegistry) -> pd.DataFrame:
    """Offline sessionizing with pandas: sort, dedup, gap split, groupby aggregates."""
    df = pd.DataFrame(reads.columns())
    df = df.sort_values(["tag_id", "reader_id", "ts_ms", "rssi_dbm"], ascending=[1, 1, 1, 0])
    df = df.drop_duplicates(["tag_id", "reader_id", "ts_ms"])
    key_change = (df["tag_id"].diff() != 0) | (df["reader_id"].diff() != 0)
    df["sid"] = (key_change | (df["ts_ms"].diff() > GAP_MS)).cumsum()
    g = df.groupby("sid", sort=False)
    out = g.agg(
        tag_id=("tag_id", "first"),
        reader_id=("reader_id", "first"),
        first_ts=("ts_ms", "first"),
        last_ts=("ts_ms", "last"),
        n_reads=("ts_ms", "size"),
        max_rssi=("rssi_dbm", "max"),
    )
    rep = df.loc[g["rssi_dbm"].idxmax()].set_index("sid")  # first max = earliest on ties
    mobile = (rep["flags"].to_numpy() & FLAG_MOBILE) != 0
    reg_lat, reg_lon = reg.lookup(out["reader_id"].to_numpy(np.uint32))
    out["lat"] = np.where(mobile, rep["lat"].to_numpy(), reg_lat)
    out["lon"] = np.where(mobile, rep["lon"].to_numpy(), reg_lon)
    out["h3_r7"], out["h3_r9"], out["h3_r12"] = cells_for(out["lat"], out["lon"])
    return out.reset_index(drop=True)


def fold(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """What a ReplacingMergeTree(version, is_deleted) holds after merging all emitted rows."""
    df = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    df = df.sort_values("version", kind="stable")
    df = df.drop_duplicates(["tag_id", "reader_id", "first_ts"], keep="last")
    return df[df["is_deleted"] == 0].drop(columns=["version", "is_deleted"])


def run(n_reads: int, batch: int) -> dict[str, object]:
    reads, reg = make_reads(n_reads, rate_per_s=2_000)
    n = len(reads)
    batches = [reads.take(np.arange(i, min(i + batch, n))) for i in range(0, n, batch)]
    keysets = [set(zip(b.tag_id.tolist(), b.reader_id.tolist(), strict=True)) for b in batches]
    cont = [len(keysets[i] & keysets[i - 1]) / len(keysets[i]) for i in range(1, len(keysets))]

    warm = Sessionizer(GAP_MS, 48 * 3600 * 1000, reg)
    warm.process(batches[0].take(np.arange(min(1000, len(batches[0])))), 0)  # compile / load cache

    s = Sessionizer(GAP_MS, 48 * 3600 * 1000, reg)
    parts, n_rows, n_del = [], 0, 0
    t0 = time.perf_counter()
    for v, b in enumerate(batches):
        ch = s.process(b, v)
        parts.append(ch.rows)
        n_rows += len(ch)
        n_del += ch.n_retractions
    t_stream = time.perf_counter() - t0
    t0 = time.perf_counter()
    blob = s.snapshot()
    t_snap = time.perf_counter() - t0
    t0 = time.perf_counter()
    Sessionizer(GAP_MS, 48 * 3600 * 1000, reg).restore(blob)
    t_restore = time.perf_counter() - t0

    t0 = time.perf_counter()
    peer = pandas_peer(reads, reg)
    t_peer = time.perf_counter() - t0

    got = fold(parts).sort_values(["tag_id", "reader_id", "first_ts"]).reset_index(drop=True)
    want = peer.sort_values(["tag_id", "reader_id", "first_ts"]).reset_index(drop=True)
    equal = len(got) == len(want) and all(
        np.array_equal(got[c].to_numpy(), want[c].to_numpy(), equal_nan=True)
        for c in SIGHTING_COLUMNS
    )
    return {
        "reads": n,
        "batch_reads": batch,
        "batches": len(batches),
        "sightings": len(want),
        "reads_per_sighting": round(n / max(len(want), 1), 2),
        "keys_continuing_from_previous_batch": round(float(np.mean(cont)), 3) if cont else 0.0,
        "stream_s": round(t_stream, 3),
        "stream_reads_per_s": round(n / t_stream),
        "stream_rows_emitted": n_rows,
        "stream_retractions": n_del,
        "state_reads_at_end": s.n_state_reads,
        "snapshot_bytes": len(blob),
        "snapshot_s": round(t_snap, 3),
        "restore_s": round(t_restore, 3),
        "peer_pandas_s": round(t_peer, 3),
        "peer_pandas_reads_per_s": round(n / t_peer),
        "stream_equals_peer": bool(equal),
        "cells_backend": "stream.geoindex",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    args = ap.parse_args()
    res = run(args.reads, args.batch)
    res |= {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared, noisy)",
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
