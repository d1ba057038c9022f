"""Rows of the README's per-component performance table, from the committed results/bench_*.json.

Each benchmark script saves its figures under a fixed name; a missing file or figure leaves its row
out rather than printing a stale or invented number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]  # what, figure, command


def _load(root: Path, name: str) -> dict[str, Any] | None:
    path = root / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _m(v: float) -> str:
    return f"{v / 1e6:.2f} M"


def _k(v: float) -> str:
    return f"{v:,.0f}"


def _load_note(d: dict[str, Any]) -> str:
    m = d.get("machine", {})
    before = m.get("loadavg_before") if isinstance(m, dict) else None
    before = before or d.get("loadavg")
    return f" (load {before[0]:.1f} at start)" if before else ""


def _geoindex(d: dict[str, Any]) -> list[Row]:
    rows = d["rows"]
    one, two = rows["tagtrail numba, 1 thread"], rows["tagtrail numba, 2 threads"]
    peers = "; ".join(
        f"{name} {_m(r['points_per_s'])}/s" for name, r in rows.items() if "tagtrail" not in name
    )
    cmd = "`python -m benchmarks.bench_geoindex`"
    out = [
        (
            f"numba H3 `latlng_to_cell`, res {d['res']}, {d['n'] / 1e6:.0f} M points",
            f"1 thread {_m(one['points_per_s'])} points/s ({one['speedup_vs_h3py']:.1f}x h3-py, "
            f"{one['speedup_vs_best_vectorised_peer']:.1f}x the best vectorised peer), "
            f"2 threads {_m(two['points_per_s'])}/s; peers: {peers}{_load_note(d)}",
            cmd,
        )
    ]
    if "compile" in d:
        c = d["compile"]
        out.append(
            (
                "numba first call",
                f"{c['cold_cache_s']:.1f} s cold cache, {c['warm_cache_s']:.2f} s warm",
                cmd,
            )
        )
    return out


def _sessionize(d: dict[str, Any]) -> list[Row]:
    fig = (
        f"{_m(d['stream_reads_per_s'])} reads/s vs pandas groupby peer "
        f"{_m(d['peer_pandas_reads_per_s'])} reads/s, identical output: {d['stream_equals_peer']} "
        f"({d['reads']:,} reads)"
    )
    out: list[Row] = [("streaming sessionizer", fig, "`python -m benchmarks.bench_sessionize`")]
    if "state_bytes_per_read" in d:
        out.append(
            (
                "sessionizer state",
                f"{d['state_bytes_per_read']:.1f} B per read held",
                "`python -m benchmarks.bench_sessionize`",
            )
        )
    return out


def _wire(d: dict[str, Any]) -> list[Row]:
    c = d["codec"]
    pubs = "; ".join(f"{p['compression']} {_m(p['reads_per_s'])}" for p in d["publisher"])
    cmd = "`python -m benchmarks.bench_wire`"
    return [
        (
            f"wire decode + validate, {d['batch_reads']}-read batches",
            f"{_m(c['decode_validate_fixed_reads_per_s'])} reads/s "
            f"(decode alone {_m(c['decode_fixed_reads_per_s'])}/s)",
            cmd,
        ),
        ("gateway publisher into the local broker", f"reads/s: {pubs}", cmd),
    ]


def _simulator(d: dict[str, Any]) -> list[Row]:
    day = d.get("city_day")
    if not day:
        return []
    return [
        (
            "city simulator, full-scale day",
            f"{day['reads'] / 1e6:.1f} M reads in {day['generate_s']:.0f} s "
            f"({_m(day['reads_per_s'])} reads/s, one core, {day['max_rss_mb']:,} MB peak)",
            "`python -m benchmarks.bench_simulator --day`",
        )
    ]


def _store(d: dict[str, Any]) -> list[Row]:
    q = "; ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f} ms" for k, v in d["queries"].items())
    cmd = f"`python -m benchmarks.bench_store --sightings {d['sightings']} --tags {d['tags']}`"
    return [
        (
            f"store queries, {d['sightings'] / 1e6:.0f} M sightings (chdb), p50/p99",
            f"{q}; all targets met: {all(d['meets_targets'].values())}",
            cmd,
        ),
        (
            "store bytes",
            f"{d['bytes_per_sighting']:.1f} B/sighting, {d['bytes_per_sighting_with_indexes']:.1f} "
            f"with indexes; {d['bytes_per_raw_read']:.1f} B/raw read; insert "
            f"{_k(d['insert_rows_per_s'])} rows/s",
            cmd,
        ),
    ]


API_WRK_ROUTES = (
    ("last_seen_police", "police last-seen"),
    ("post_thefts", "theft reports with back-search"),
    ("healthz", "/healthz"),
)


def _api_wrk(d: dict[str, Any]) -> list[Row]:
    parts = []
    for route, label in API_WRK_ROUTES:
        r = d["routes"][route]
        fig = f"{label} {r['req_per_s']:,.0f} req/s, p50/p99 {r['p50_ms']:.1f}/{r['p99_ms']:.0f} ms"
        t = d["targets"].get(route)
        if t is not None:
            met = "met" if d["met"][route] else "missed"
            fig += f" (target >= {t['req_per_s']:,.0f}, p99 <= {t['p99_ms']:.0f}: {met})"
        parts.append(fig)
    load = f" (load {d['load_1min_at_start']:.1f} at start)"
    return [
        (
            f"recovery API under wrk, {d['connections']} kept-alive connections, idle pipeline "
            f"after a replayed day of {d['seed']['reads'] / 1e6:.1f} M reads",
            "; ".join(parts) + load,
            "`python -m benchmarks.bench_api_wrk`",
        )
    ]


def _kafka_peer(d: dict[str, Any]) -> list[Row]:
    variants = "; ".join(
        f"{v['format']} at {v['reads_per_message']:g} reads/msg {_k(v['rows_per_s'])}"
        for v in d["kafka_engine_mv_variants"]
        if "rows_per_s" in v
    )
    return [
        (
            "ClickHouse Kafka engine + MV peer (chdb), draining a backlog of "
            f"{d['reads']:,} reads; no validation, dedup or H3",
            f"reads/s: {variants}{_load_note({'loadavg': [d['load_1min_at_start']]})}",
            "`python -m benchmarks.peer_kafka_engine`",
        )
    ]


def _count(batches: list[int], what: str) -> str:
    return f"{len(batches)} {what}{'' if len(batches) == 1 else 's'}"


def _faust_burst(d: dict[str, Any]) -> list[Row]:
    m = d["median"]
    g = m["getmany"]
    paths = "; ".join(
        f"Faust agent, {p.removeprefix('faust_')} settings: {r['handover_us_per_msg']:.0f} us/msg "
        f"(first to last {r['first_to_last_ms']:.0f} ms, {_count(r['batches_median_run'], 'take')})"
        for p, r in m.items()
        if p != "getmany"
    )
    return [
        (
            f"a burst of {d['messages']:,} gateway messages ({d['reads']:,} reads) handed to the "
            f"consumer, median of {d['reps']}",
            f"aiokafka getmany {g['handover_us_per_msg']:.0f} us/msg, "
            f"{_count(g['batches_median_run'], 'call')}; {paths} "
            f"(load {d['load_avg_at_start'][0]:.1f} at start)",
            "`python -m benchmarks.bench_faust_burst`",
        )
    ]


SOURCES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "peer_kafka_engine": _kafka_peer,
    "bench_geoindex": _geoindex,
    "bench_sessionize": _sessionize,
    "bench_wire": _wire,
    "bench_faust_burst": _faust_burst,
    "bench_simulator": _simulator,
    "bench_store": _store,
    "bench_api_wrk": _api_wrk,
}


def component_rows(root: Path) -> list[Row]:
    """Every row whose results file exists, in pipeline order."""
    rows: list[Row] = []
    for name, render in SOURCES.items():
        d = _load(root, name)
        if d is None:
            continue
        try:
            rows.extend(render(d))
        except (KeyError, TypeError) as e:  # a script changed its JSON: say so, don't guess
            rows.append((f"results/{name}.json", f"not rendered: unexpected shape ({e!r})", "-"))
    return rows


def render_components(root: Path) -> list[str]:
    rows = component_rows(root)
    if not rows:
        return []
    lines = [
        "Per component (each benchmark script saves `results/<name>.json`):",
        "",
        "| what | figure | command |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {w} | {f} | {c} |" for w, f, c in rows]
    return [*lines, ""]
