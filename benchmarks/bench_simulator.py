"""Simulator throughput: reads generated per second on one core, a city-scale hour and full day.

Run: .venv/bin/python -m benchmarks.bench_simulator [--day] [--scale S]
Prints the figures and writes results/bench_simulator.json. Generation only (reads are counted,
not written); the Parquet writer is measured separately on a smaller run.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from ingest.simulator import CityConfig, Simulation, run_simulation_to_parquet
from ingest.simulator.config import DEFAULT_START_MS

H_MS = 3_600_000


def _run(cfg: CityConfig, chunk_s: float = 600.0) -> dict[str, float]:
    t = time.perf_counter()
    sim = Simulation(cfg)
    setup_s = time.perf_counter() - t
    n = late = retry = mobile = chunks = 0
    max_chunk = 0
    t = time.perf_counter()
    for ch in sim.chunks(chunk_s):
        k = len(ch.reads)
        n += k
        chunks += 1
        max_chunk = max(max_chunk, k)
        late += int((ch.arrival_ms - ch.reads.ts_ms > 60_000).sum())
        retry += int(ch.is_retry.sum())
        mobile += int((ch.reads.flags & 1).astype(bool).sum())
    gen_s = time.perf_counter() - t
    window_s = gen_s - sim.day_setup_s
    return {
        "scale": cfg.scale,
        "bikes": cfg.n_bikes,
        "readers": int(sim.city.n_readers),
        "duration_s": cfg.duration_s,
        "reads": n,
        "setup_s": round(setup_s, 3),
        "generate_s": round(gen_s, 3),
        "reads_per_s": round(n / gen_s),
        "day_setup_s": round(sim.day_setup_s, 3),
        "reads_per_s_excl_day_setup": round(n / window_s),
        "late_share": round(late / max(n, 1), 5),
        "retry_share": round(retry / max(n, 1), 5),
        "mobile_share": round(mobile / max(n, 1), 5),
        "chunks": chunks,
        "max_chunk_reads": max_chunk,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--day", action="store_true", help="also simulate a full day (~80 M reads)")
    ap.add_argument("--out", default="results/bench_simulator.json")
    a = ap.parse_args()
    results: dict[str, object] = {"note": "one process, one core; machine shared, figures noisy"}
    peak = CityConfig(scale=a.scale, start_ms=DEFAULT_START_MS + 8 * H_MS, duration_s=3600)
    results["city_hour_0800"] = r = _run(peak)
    print(f"city-scale hour 08:00-09:00: {r}")
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        start = DEFAULT_START_MS + 17 * H_MS
        s = run_simulation_to_parquet(d, scale=0.1, duration_s=3600, seed=3, start_ms=start)
        el = time.perf_counter() - t
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        results["parquet_scale0.1_1h"] = w = {
            "reads": s["reads"],
            "seconds": round(el, 3),
            "reads_per_s": round(s["reads"] / el),
            "bytes": size,
        }
        print(f"parquet, scale 0.1, 17:00-18:00: {w}")
    if a.day:
        results["city_day"] = r = _run(CityConfig(scale=a.scale, duration_s=86_400))
        print(f"city-scale day: {r}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
