"""Raw-read insert benchmark: rows/s of `store.writes.insert_raw_reads` into the embedded store.

    .venv/bin/python -m benchmarks.bench_raw_reads                 # 4 M reads per batch size

The sink writes every valid read to raw_reads (for backfills and read-rate dashboards) next to
the sightings; at the 200 k reads/s target this insert must not be the bottleneck. Batches look
like the sink's: seconds of live traffic (ts in a narrow window, random tags and readers), one
arrow insert with a dedup token per batch, the reader_minute materialized view included.
Prints the figures and saves them to results/bench_raw_reads.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from core.config import Settings
from core.records.reads import Reads
from store.open import open_store
from store.writes import insert_raw_reads

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bench_raw_reads.json"


def live_batch(rng: np.random.Generator, n: int, t0_ms: int, rate_per_s: int) -> Reads:
    """`n` reads as they arrive at `rate_per_s`: ts over n / rate seconds, roughly in order."""
    span_ms = max(int(n / rate_per_s * 1000), 1)
    return Reads.from_columns(
        tag_id=rng.integers(1, 3_000_000, n),
        reader_id=rng.integers(1, 4000, n),
        ts_ms=np.sort(t0_ms + rng.integers(0, span_ms, n)),
        rssi_dbm=rng.integers(-90, -30, n),
    )


def run(total: int, sizes: list[int], rate_per_s: int) -> dict[str, object]:
    rng = np.random.default_rng(1)
    out: dict[str, object] = {"total_reads_per_size": total, "rate_per_s": rate_per_s}
    per_size = {}
    with tempfile.TemporaryDirectory(prefix="bench_raw_") as tmp:
        store = open_store(Settings(data_dir=Path(tmp)))
        try:
            t_ms = int(time.time() * 1000) - 3_600_000
            for size in sizes:
                batches = [
                    live_batch(rng, size, t_ms + i * 10_000, rate_per_s)
                    for i in range(max(total // size, 1))
                ]
                t = time.perf_counter()
                for i, b in enumerate(batches):
                    insert_raw_reads(store, b, dedup_token=f"bench:{size}:{i}")
                dt = time.perf_counter() - t
                n = sum(len(b) for b in batches)
                per_size[str(size)] = {
                    "reads": n,
                    "seconds": round(dt, 3),
                    "rows_per_s": round(n / dt),
                    "ms_per_batch": round(dt / len(batches) * 1000, 1),
                }
                per_batch_ms = dt / len(batches) * 1000
                print(f"batch {size:>9,}: {n / dt:>12,.0f} rows/s ({per_batch_ms:.1f} ms/batch)")
        finally:
            store.close()
    out["by_batch_size"] = per_size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=4_000_000, help="reads per batch size")
    ap.add_argument("--sizes", default="20000,100000,400000,1000000")
    ap.add_argument("--rate", type=int, default=200_000, help="reads/s the batches represent")
    args = ap.parse_args()
    res = run(args.total, [int(s) for s in args.sizes.split(",")], args.rate)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
