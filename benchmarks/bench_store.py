"""Store benchmark: a day of synthetic sightings in the embedded store, query latency and disk use.

    .venv/bin/python -m benchmarks.bench_store                    # 1 M sightings (quick)
    .venv/bin/python -m benchmarks.bench_store --sightings 9000000  # full scale (80 M reads/day)

Prints the figures and saves them to results/bench_store.json. Queries are timed twice: right
after the inserts settle (`queries_before_day_merged`: the day is still in several parts), and
once the day's partition is merged (`queries`: a past day, as the force-merge setting leaves it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from h3.api import basic_int as h3i

from benchmarks.synthetic import DAY_MS, make_readers, make_sightings
from core.config import Settings
from core.records.reads import Reads
from store import queries as q
from store.open import open_store

TARGETS_P99_MS = {"track": 20, "last_seen": 10, "area": 50, "heatmap": 200}
HOUR_MS = 3_600_000
_SIGHTING_TABLES = ("sightings", "sightings_by_cell", "sightings_by_time")


def _timed(fn: Callable[[int], object], n: int) -> dict[str, float]:
    lat = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat[i] = (time.perf_counter() - t) * 1000
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def _bytes(store: q.Store, table: str) -> int:
    rows = store.backend.execute(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table = {t:String}",
        {"t": table},
    )
    return int(rows[0][0] or 0)


def run(n_sightings: int, n_tags: int, n_readers: int, repeat: int, raw_reads: int) -> dict:
    day0 = (int(time.time()) // 86_400) * 86_400_000 - DAY_MS
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        store = open_store(Settings(data_dir=Path(tmp)))
        try:
            readers = make_readers(n_readers)
            q.upsert_readers(store, readers)
            t = time.perf_counter()
            s = make_sightings(n_sightings, readers, n_tags=n_tags, day_start_ms=day0)
            gen_s = time.perf_counter() - t
            n = len(s["tag_id"])
            # Stream-like: batches in time order, not key order.
            order = np.argsort(s["first_ts"], kind="stable")
            t = time.perf_counter()
            for i, lo in enumerate(range(0, n, 500_000)):
                idx = order[lo : lo + 500_000]
                q.insert_sightings(
                    store, {k: v[idx] for k, v in s.items()}, version=1, dedup_token=f"b{i}"
                )
            ins_s = time.perf_counter() - t
            rr = Reads.from_columns(
                tag_id=rng.integers(1, n_tags, raw_reads),
                reader_id=rng.integers(1, n_readers + 1, raw_reads),
                ts_ms=np.sort(day0 + rng.integers(0, DAY_MS, raw_reads)),
                rssi_dbm=rng.integers(-90, -30, raw_reads),
            )
            q.insert_raw_reads(store, rr, dedup_token="raw")
            # Measure the steady state: let background merges of the day's parts finish (<= 120 s).
            deadline = time.monotonic() + 120
            while store.backend.execute("SELECT count() FROM system.merges")[0][0]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            parts = store.backend.execute(
                "SELECT count() FROM system.parts WHERE active AND table = 'sightings'"
            )[0][0]
            tags = rng.choice(s["tag_id"], repeat)
            starts = day0 + rng.integers(0, DAY_MS - HOUR_MS, repeat)
            cells = rng.choice(readers["h3_r9"], repeat)
            disks = [np.array(h3i.grid_disk(int(c), 1), np.uint64) for c in cells]
            q.track(store, int(tags[0]), day0, day0 + DAY_MS)  # warm the caches once

            def measure() -> dict[str, dict[str, float]]:
                return {
                    "track": _timed(
                        lambda i: q.track(store, int(tags[i]), day0, day0 + DAY_MS), repeat
                    ),
                    "last_seen": _timed(lambda i: q.last_seen(store, int(tags[i])), repeat),
                    "area": _timed(
                        lambda i: q.sightings_in_area(
                            store, int(starts[i]), int(starts[i]) + HOUR_MS, cells=disks[i]
                        ),
                        repeat,
                    ),
                    "heatmap": _timed(
                        lambda i: q.heatmap(store, 7, int(starts[i]), int(starts[i]) + HOUR_MS),
                        repeat,
                    ),
                }

            fresh = measure()
            # The steady state of a past day: its partition merged into one part, which
            # min_age_to_force_merge_seconds (migration 0005) does an hour after its last insert.
            t = time.perf_counter()
            for table in _SIGHTING_TABLES:
                store.backend.execute(f"OPTIMIZE TABLE {table} FINAL")
            merge_s = time.perf_counter() - t
            res = measure()
            disk = {
                t: _bytes(store, t) for t in (*_SIGHTING_TABLES, "raw_reads", "tag_reader_latest")
            }
            agg = _bytes(store, "cell_minute") + _bytes(store, "reader_minute")
        finally:
            store.close()
    return {
        "sightings": n,
        "tags": n_tags,
        "readers": n_readers,
        "generate_s": round(gen_s, 2),
        "insert_s": round(ins_s, 2),
        "insert_rows_per_s": round(n / ins_s),
        "sightings_parts": int(parts),
        "queries": res,
        "queries_before_day_merged": fresh,
        "merge_day_s": round(merge_s, 2),
        "targets_p99_ms": TARGETS_P99_MS,
        "meets_targets": {k: res[k]["p99_ms"] <= v for k, v in TARGETS_P99_MS.items()},
        "bytes_per_sighting": round(disk["sightings"] / n, 2),
        "bytes_per_sighting_with_indexes": round(
            (sum(disk[t] for t in _SIGHTING_TABLES) + disk["tag_reader_latest"]) / n, 2
        ),
        "bytes_per_sighting_by_table": {
            t: round(v / n, 2) for t, v in disk.items() if t != "raw_reads"
        },
        "aggregates_bytes": agg,
        "bytes_per_raw_read": round(disk["raw_reads"] / raw_reads, 2),
        "note": "2 shared cores, other engineers' jobs running: figures are noisy",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sightings", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=300_000)
    ap.add_argument("--readers", type=int, default=3_000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--raw-reads", type=int, default=2_000_000)
    ap.add_argument("--out", type=Path, default=Path("results/bench_store.json"))
    a = ap.parse_args()
    out = run(a.sightings, a.tags, a.readers, a.repeat, a.raw_reads)
    print(json.dumps(out, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
