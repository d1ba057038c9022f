"""Benchmark of the streaming sessionizer (stream.sessionize.sessionizer) against a pandas groupby
peer.

    python -m benchmarks.bench_sessionize [--reads 2000000] [--batch 100000] \
        [--mem-reads 42000000] [--snapshot-at 10000000,40000000]

Synthetic but shaped like the city: sightings of 5-10 reads 1-4 s apart (tags among 2 M bikes,
3,000 fixed readers + 30 mobile), 2% duplicate reads, arrival jitter of a few seconds, cut into
gateway-sized batches so that ~30% of a batch's keys continue from the previous batch. Times, in
one run on the same reads: the streaming Sessionizer batch by batch (late split, kernels, rows
with registry cells; numba compiled and warmed beforehand), and the peer: pandas groupby
sessionizing of all reads at once (offline, no state, no retractions: an easier job). Checks the
streaming result (upserts folded by version) equals the peer's.

Memory (`--mem-reads N`, 0 skips it): the first N reads of a simulated scale-1.0 city day
(ingest.simulator, from midnight, in arrival order; all within the 48 h max lateness, so nothing is
evicted) streamed through one Sessionizer. Reports the state's bytes per read from its arrays'
nbytes and from the process RSS growth (end and peak), and times snapshot()/restore() when the
state first holds each of `--snapshot-at` reads. Prints a table and writes
results/bench_sessionize.json. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, READ_DTYPES, Reads
from core.records.sightings import SIGHTING_COLUMNS
from stream.geoindex import cells_for
from stream.sessionize.sessionizer import Sessionizer
from stream.sessionize.state import ReadStore

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


def rss_bytes() -> int:
    """Anonymous resident memory (RssAnon): the heap, not the memory-mapped input reads."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class RssPeak:
    """Samples the RSS every few ms in a thread (kernels release the GIL); `peak` since reset."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._t.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.peak = max(self.peak, rss_bytes())

    def reset(self) -> None:
        self.peak = rss_bytes()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def state_nbytes(store: ReadStore) -> int:
    """Bytes of every numpy array the store holds (capacity included, touched or not)."""
    total = 0
    for v in vars(store).values():
        for a in v.values() if isinstance(v, dict) else (v,):
            total += a.nbytes if isinstance(a, np.ndarray) else 0
    return total


def dump_simulated_reads(n_reads: int, out_dir: str, seed: int = 0) -> None:
    """Write the first n_reads (arrival order) of a scale-1.0 simulated day from local midnight
    to out_dir/<column>.npy (run in a child process: its garbage never enters our heap)."""
    from ingest.simulator import CityConfig, iter_chunks

    cfg = CityConfig(seed=seed, scale=1.0, duration_s=86_400.0)
    parts, n = [], 0
    for ch in iter_chunks(cfg, 900.0):
        parts.append(ch.reads)
        n += len(ch.reads)
        if n >= n_reads:
            break
    reads = Reads.concat(parts)
    for k, v in reads.columns().items():
        np.save(Path(out_dir) / f"{k}.npy", v[:n_reads])


def simulated_reads(n_reads: int, tmp: str) -> Reads:
    """The simulated reads, generated by a child process and memory-mapped read-only."""
    code = (
        f"from benchmarks.bench_sessionize import dump_simulated_reads as d; d({n_reads}, {tmp!r})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return Reads(**{k: np.load(Path(tmp) / f"{k}.npy", mmap_mode="r") for k in READ_DTYPES})


def run_memory(n_reads: int, batch: int, snapshot_at: list[int]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench_sessionize_") as tmp:
        t0 = time.perf_counter()
        reads = simulated_reads(n_reads, tmp)
        t_sim = time.perf_counter() - t0
        return _stream_memory(reads, batch, snapshot_at) | {"simulate_s": round(t_sim, 1)}


def _stream_memory(reads: Reads, batch: int, snapshot_at: list[int]) -> dict[str, object]:
    n = len(reads)
    mobile = float(np.mean((reads.flags & FLAG_MOBILE) != 0))
    warm = Sessionizer(GAP_MS, 48 * 3600 * 1000)
    warm.process(reads.take(np.arange(min(1000, n))), 0)  # compile / load the numba cache
    del warm
    gc.collect()
    base = rss_bytes()
    sampler = RssPeak()
    s = Sessionizer(GAP_MS, 48 * 3600 * 1000)
    snaps: list[dict[str, object]] = []
    pending = sorted(snapshot_at)
    ingest_peak, t_stream, n_rows = base, 0.0, 0
    for v, i in enumerate(range(0, n, batch)):
        b = Reads(**{k: np.array(c[i : i + batch]) for k, c in reads.columns().items()})
        t0 = time.perf_counter()
        n_rows += len(s.process(b, v))
        t_stream += time.perf_counter() - t0
        while pending and s.n_state_reads >= pending[0]:
            pending.pop(0)
            ingest_peak = max(ingest_peak, sampler.peak)
            snaps.append(_time_snapshot(s, sampler, base))
            sampler.reset()
    ingest_peak = max(ingest_peak, sampler.peak)
    end = rss_bytes()
    sampler.stop()
    n_state = s.n_state_reads
    nbytes = state_nbytes(s._store)
    used = getattr(s._store, "nbytes_used", None)
    p_used = getattr(s._store, "p_used", None)
    return {
        "source": "ingest.simulator scale 1.0, from local midnight, arrival order",
        "reads": n,
        "mobile_read_share": round(mobile, 4),
        "batch_reads": batch,
        "stream_s": round(t_stream, 2),
        "stream_reads_per_s": round(n / t_stream),
        "rows_emitted": n_rows,
        "state_reads": n_state,
        "state_keys": int(s._store.n_keys),
        "state_nbytes": nbytes,
        "state_nbytes_per_read": round(nbytes / n_state, 2),
        "state_used_bytes_per_read": round(used() / n_state, 2) if used else None,
        "pool_entries_per_read": round(p_used / n_state, 3) if p_used is not None else None,
        "rss_base_mb": round(base / 2**20),
        "rss_growth_mb": round((end - base) / 2**20),
        "rss_growth_per_read": round((end - base) / n_state, 2),
        "rss_peak_growth_ingest_mb": round((ingest_peak - base) / 2**20),
        "rss_peak_growth_ingest_per_read": round((ingest_peak - base) / n_state, 2),
        "snapshots": snaps,
    }


def _time_snapshot(s: Sessionizer, sampler: RssPeak, base: int) -> dict[str, object]:
    sampler.reset()
    t0 = time.perf_counter()
    blob = s.snapshot()
    t_snap = time.perf_counter() - t0
    peak_snap = max(sampler.peak, rss_bytes())  # join() holds the GIL: sample with blob alive
    t0 = time.perf_counter()
    s2 = Sessionizer(GAP_MS, 48 * 3600 * 1000)
    s2.restore(blob)
    t_restore = time.perf_counter() - t0
    ok = s2.n_state_reads == s.n_state_reads
    del s2
    out = {
        "state_reads": s.n_state_reads,
        "snapshot_bytes": len(blob),
        "snapshot_bytes_per_read": round(len(blob) / s.n_state_reads, 2),
        "snapshot_s": round(t_snap, 3),
        "snapshot_rss_peak_extra_mb": round((peak_snap - base) / 2**20),
        "restore_s": round(t_restore, 3),
        "restored_reads_match": ok,
    }
    del blob
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--mem-reads", type=int, default=42_000_000, help="0 skips the memory run")
    ap.add_argument("--snapshot-at", default="10000000,40000000", help="state sizes, reads")
    args = ap.parse_args()
    try:
        snap_at = [int(x) for x in args.snapshot_at.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--snapshot-at: comma-separated integers expected, got {args.snapshot_at!r}")
    # The memory run goes first: a fresh heap, so RSS growth is the state's, not reused garbage.
    mem = run_memory(args.mem_reads, args.batch, snap_at) if args.mem_reads > 0 else None
    res: dict[str, object] = run(args.reads, args.batch) if args.reads > 0 else {}
    if mem is not None:
        res["state_bytes_per_read"] = mem["state_nbytes_per_read"]
        res["memory"] = mem
    res |= {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared, noisy)",
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    width = max(map(len, res))
    for k, v in res.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                print(f"{k}.{k2}  {v2}")
        else:
            print(f"{k:<{width}}  {v}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
