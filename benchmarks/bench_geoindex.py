"""Benchmark (and bulk verification) of stream.geoindex.latlng_to_cell against its peers.

    python -m benchmarks.bench_geoindex [--n 10000000] [--res 12]
    python -m benchmarks.bench_geoindex --verify 10000000

The benchmark times, on the same N random points worldwide in one run: our numba kernel
on one thread and on all threads, h3-py called per point (timed on a subsample and
extrapolated), polars-h3 (Rust h3o) and ClickHouse geoToH3 through chdb (with
geotoh3_argument_order='lat_lon' set explicitly), plus numba's first-call compile time
with a cold and a warm cache. Prints a table and writes results/bench_geoindex.json.
``--verify N`` instead checks N points at all 16 resolutions against h3-py, plus the
exact cell vertices of a sample of cells (ties, reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h3
import numba
import numpy as np

from stream.geoindex import latlng_to_cell, latlng_to_cells_multi

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_geoindex.json"
H3_SUBSAMPLE = 300_000


def random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere (degrees)."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    lng = rng.uniform(-180.0, 180.0, n)
    return lat, lng


def h3py_cells(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    f = h3.api.basic_int.latlng_to_cell
    return np.fromiter(
        (f(a, b, res) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)),
        dtype=np.uint64,
        count=lat.size,
    )


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


_COMPILE_SNIPPET = (
    "import time, numpy as np; t = time.perf_counter();"
    "from stream.geoindex import latlng_to_cell;"
    "latlng_to_cell(np.zeros(1), np.zeros(1), 9, parallel=False);"
    "latlng_to_cell(np.zeros(30000), np.zeros(30000), 9);"
    "print(time.perf_counter() - t)"
)


def compile_times() -> dict[str, float]:
    """Import + first call in a fresh process: empty cache dir (compiles), then warm."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_cache_s", "warm_cache_s"):
            proc = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            out[label] = float(proc.stdout.strip().splitlines()[-1])
    return out


def bench(n: int, res: int, repeats: int) -> dict:
    lat, lng = random_points(n)
    rows: dict[str, dict] = {}
    latlng_to_cell(lat[:100_000], lng[:100_000], res)  # compile / load outside timing
    latlng_to_cell(lat[:100], lng[:100], res, parallel=False)
    ours = latlng_to_cell(lat, lng, res)
    t1 = _best_of(lambda: latlng_to_cell(lat, lng, res, parallel=False), repeats)
    rows["tagtrail numba, 1 thread"] = {"seconds": t1}
    tn = _best_of(lambda: latlng_to_cell(lat, lng, res), repeats)
    rows[f"tagtrail numba, {numba.get_num_threads()} threads"] = {"seconds": tn}
    multi_res = (7, 9, 12)
    latlng_to_cells_multi(lat[:100_000], lng[:100_000], multi_res, mode="direct")
    tm = _best_of(lambda: latlng_to_cells_multi(lat, lng, multi_res, mode="direct"), repeats)
    multi = {
        "resolutions": list(multi_res),
        "threads": numba.get_num_threads(),
        "seconds": tm,
        "points_per_s": n / tm,
        "note": "latlng_to_cells_multi(mode='direct'): exact cells at all three resolutions",
    }

    m = min(n, H3_SUBSAMPLE)
    t = time.perf_counter()
    ref = h3py_cells(lat[:m], lng[:m], res)
    rows["h3-py per point (extrapolated)"] = {
        "seconds": (time.perf_counter() - t) * n / m,
        "note": f"timed on {m:,} points",
    }
    if not np.array_equal(ref, ours[:m]):
        raise SystemExit("our cells differ from h3-py on the benchmark points")

    import polars as pl
    import polars_h3 as plh3

    df = pl.DataFrame({"lat": lat, "lng": lng})
    res_pl = df.select(plh3.latlng_to_cell("lat", "lng", res)).to_series().to_numpy()
    if not np.array_equal(res_pl.astype(np.uint64), ours):
        raise SystemExit("polars-h3 and our kernel disagree")
    rows["polars-h3 (h3o)"] = {
        "seconds": _best_of(lambda: df.select(plh3.latlng_to_cell("lat", "lng", res)), repeats)
    }

    import chdb
    import pyarrow as pa

    tbl = pa.table({"lat": lat, "lng": lng})  # noqa: F841 - read by chdb's Python() table
    sql = (
        f"SELECT geoToH3(lat, lng, {res}) AS c FROM Python(tbl) "
        "SETTINGS geotoh3_argument_order = 'lat_lon'"
    )
    got = chdb.query(sql, "ArrowTable").column("c").to_numpy()
    # chdb reads the table with several threads, so rows may come back reordered.
    if not np.array_equal(np.sort(got.astype(np.uint64)), np.sort(ours)):
        raise SystemExit("chdb geoToH3 and our kernel disagree")
    rows["ClickHouse geoToH3 via chdb"] = {
        "seconds": _best_of(lambda: chdb.query(sql, "ArrowTable"), repeats),
        "note": "geotoh3_argument_order='lat_lon'; includes Arrow in/out",
    }
    for row in rows.values():
        row["points_per_s"] = n / row["seconds"]
    return {
        "rows": rows,
        "multi_direct": multi,
        "lat_lng_source": "uniform on the sphere",
        "n": n,
        "res": res,
    }


def verify(n: int, chunk: int = 1_000_000) -> int:
    """Compare n random points at every resolution and cell vertices with h3-py."""
    bad = 0
    for start in range(0, n, chunk):
        lat, lng = random_points(min(chunk, n - start), seed=1000 + start // chunk)
        for res in range(16):
            diff = int((latlng_to_cell(lat, lng, res) != h3py_cells(lat, lng, res)).sum())
            bad += diff
        print(f"  {start + lat.size:,} points x 16 resolutions checked, {bad} mismatches")
    lat, lng = random_points(2_000, seed=99)
    vert_total = vert_bad = 0
    for res in range(16):
        pts = np.array(
            [
                v
                for a, b in zip(lat, lng, strict=True)
                for v in h3.cell_to_boundary(h3.latlng_to_cell(a, b, res))
            ]
        )
        mine = latlng_to_cell(pts[:, 0], pts[:, 1], res)
        vert_bad += int((mine != h3py_cells(pts[:, 0], pts[:, 1], res)).sum())
        vert_total += len(pts)
    print(f"random points: {n:,} x 16 resolutions, {bad} mismatches")
    print(f"exact vertices (ties): {vert_total - vert_bad:,}/{vert_total:,} agree")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--res", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verify", type=int, metavar="N", help="verify N points instead")
    args = ap.parse_args(argv)
    if args.verify:
        return verify(args.verify)
    load_before = os.getloadavg()
    result = bench(args.n, args.res, args.repeats)
    result["compile"] = compile_times()
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # The machine is shared: the 1/5/15-minute load averages say how quiet it was.
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }
    rows = result["rows"]
    peers = min(rows["polars-h3 (h3o)"]["seconds"], rows["ClickHouse geoToH3 via chdb"]["seconds"])
    h3py = rows["h3-py per point (extrapolated)"]["seconds"]
    print(f"\nlatlng_to_cell, {args.n:,} points worldwide, res {args.res}")
    print(f"{'implementation':40s} {'seconds':>9s} {'M points/s':>11s} {'vs h3-py':>9s}")
    for name, row in rows.items():
        print(
            f"{name:40s} {row['seconds']:9.3f} {row['points_per_s'] / 1e6:11.2f}"
            f" {h3py / row['seconds']:8.1f}x"
        )
    for name, row in rows.items():
        if name.startswith("tagtrail"):
            row["speedup_vs_h3py"] = h3py / row["seconds"]
            row["speedup_vs_best_vectorised_peer"] = peers / row["seconds"]
            print(f"{name}: {peers / row['seconds']:.2f}x the faster vectorised peer")
    m = result["multi_direct"]
    print(
        f"multi-resolution direct {tuple(m['resolutions'])}, {m['threads']} threads:"
        f" {m['seconds']:.3f} s, {m['points_per_s'] / 1e6:.2f} M points/s"
    )
    c = result["compile"]
    print(
        f"first call incl. import: cold cache (compile) {c['cold_cache_s']:.2f} s,"
        f" warm cache {c['warm_cache_s']:.2f} s"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
