"""The performance tables, generated from the latest committed results/<run-id>/: a short table
for the README (each figure with the command behind it) and the full tables for
docs/performance.md.

    python -m benchmarks.readme_table                    # print the README's short table
    python -m benchmarks.readme_table --full             # print docs/performance.md's tables
    python -m benchmarks.readme_table --write README.md  # replace both between their markers

The README's table sits between `<!-- perf-table:start -->` and `<!-- perf-table:end -->`, the full
tables between `<!-- perf-full:start -->` and `<!-- perf-full:end -->` of docs/performance.md
(beside the README, or --doc). --write refuses a file without its markers rather than guessing
where a table belongs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.readme_components import render_components

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
FULL_START, FULL_END = "<!-- perf-full:start -->", "<!-- perf-full:end -->"
TARGET_RATE = 200_000  # reads/s: the load the alert latency target is set at


def _all(root: Path, kind: str) -> list[dict[str, Any]]:
    # Run ids start with a UTC timestamp: sorted names are in time order.
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*-{kind}-*/results.json"))]


def _paced(run: dict[str, Any]) -> bool:
    return bool(run.get("scale", {}).get("rate_limit_reads_per_s"))


def _reports_on_topic(run: dict[str, Any]) -> bool:
    """Theft reports went onto the hotlist topic (the default). The latency rows leave out
    `--reports api` runs: a study of the API's case path at the replay's report rate."""
    return run.get("recovery", {}).get("reports", "topic") == "topic"


_WHERE = {
    "topic_append": "topic, broker append",
    "topic": "topic, observer's receipt",
    "sse": "SSE client",
}


def _aligned(run: dict[str, Any]) -> bool:
    """Every gateway flushed at the same moment (runs before flush phases existed did)."""
    return int(run.get("ingest", {}).get("flush_phases", 1)) == 1


def _median_of_series(
    runs: list[dict[str, Any]], newest: dict[str, Any], key: Any
) -> dict[str, Any]:
    """The median run (by `key`) of those repeating the newest run's command on its day, with
    `series` set to (n, lowest, highest) when there are several: one run of a noisy shared
    machine is not a figure to quote."""
    same = [
        r
        for r in runs
        if r["command"] == newest["command"] and r["run_id"][:8] == newest["run_id"][:8]
    ]
    if len(same) < 2:
        return newest
    ranked = sorted(same, key=key)
    median = dict(ranked[(len(ranked) - 1) // 2])
    median["series"] = (len(ranked), key(ranked[0]), key(ranked[-1]))
    return median


def _throughput(run: dict[str, Any]) -> float:
    return float(run["ingest"]["sustained_reads_per_s"])


def _sse_p99(run: dict[str, Any]) -> float:
    return float(run["alert_latency"].get("sse", {}).get("p99_ms", float("inf")))


def latest(
    root: Path = Path("results"),
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
    """The newest unpaced e2e run (throughput); the newest paced e2e runs (latency), one with
    gateways at their own flush phases and one with all flushing at once, where there are; the
    newest micro run. Where the newest run's command was repeated that day, the median run of
    the series stands for it (by throughput, or by SSE alert p99)."""
    # The tables quote full simulated days where there are any; shorter runs (hours) are then
    # studies cited in the text.
    runs = _all(root, "e2e")
    e2e = [r for r in runs if r.get("scale", {}).get("label") == "day"] or runs
    micro = _all(root, "micro")
    full = [r for r in e2e if not _paced(r)]
    paced = [r for r in e2e if _paced(r) and _reports_on_topic(r)]
    newest = [
        _median_of_series(runs, runs[-1], _sse_p99)
        for runs in ([r for r in paced if not _aligned(r)], [r for r in paced if _aligned(r)])
        if runs
    ]
    return (
        _median_of_series(full, full[-1], _throughput) if full else None,
        newest,
        micro[-1] if micro else None,
    )


def _series(run: dict[str, Any], fmt: str) -> str:
    """' (median of n runs: lo-hi)' for a run standing for a series, else ''."""
    if "series" not in run:
        return ""
    n, lo, hi = run["series"]
    return f" (median of {n} runs: {fmt.format(lo)}-{fmt.format(hi)})"


def _n(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 100:
        return f"{v:.2f}{unit}"
    return f"{v:,.0f}{unit}"


def _lat(d: dict[str, Any]) -> str:
    if "p99_ms" not in d:
        return f"not measured: {d.get('not_measured', '?')}"
    return f"{d['p50_ms']:,.0f} / {d['p95_ms']:,.0f} / {d['p99_ms']:,.0f} ms (n={d['n']})"


def _peer(e2e: dict[str, Any]) -> str:
    p = e2e.get("peer_kafka_engine")
    if not p:
        return "not run"
    k = p["kafka_engine_mv"]
    engine = (
        f"ClickHouse Kafka engine + MV {_n(k['rows_per_s'])} rows/s ({k.get('format', '?')}, "
        f"{k.get('reads_per_message', '?')} reads/msg, drained backlog, no dedup/H3)"
        if "rows_per_s" in k
        else f"Kafka engine + MV not measured ({k['not_measured'][:140]})"
    )
    c = p["aiokafka_to_clickhouse_jsoneachrow_mv"]
    return f"{engine}; aiokafka -> JSONEachRow INSERT + MV {_n(c.get('rows_per_s'))} rows/s"


def _peer_or_micro(e2e: dict[str, Any], micro: dict[str, Any] | None) -> str:
    """The e2e run's own peer figure, else the latest micro run's (named as such)."""
    if e2e.get("peer_kafka_engine") or micro is None:
        return _peer(e2e)
    st = micro.get("stages", {}).get("kafka_peer", {})
    if "figures" not in st:
        return _peer(e2e)
    return f"{_peer({'peer_kafka_engine': st['figures']})} (micro run `{micro['run_id']}`)"


def render(
    e2e: dict[str, Any] | None,
    paced: list[dict[str, Any]],
    micro: dict[str, Any] | None,
    components: Path | None = None,
) -> str:
    """docs/performance.md's tables; `components`: the results folder whose bench_*.json fill
    the per-component table (None: leave it out)."""
    lines = ["## The latest runs", ""]
    if e2e is not None:
        m, i, r = e2e["machine"], e2e["ingest"], e2e["recovery"]
        c, mem, disk = e2e["correctness"], e2e["memory_max_rss_mb"], e2e.get("disk", {})
        lat = e2e["alert_latency"]
        lines += [
            f"End to end, `{e2e['command']}` ({e2e['scale']['label']}: "
            f"{i['reads']:,} reads), run `{e2e['run_id']}` on {m['cpus']} shared cores "
            f"(load {m.get('load_avg_at_start', ['?'])[0]} at start): generator, Kafka, "
            "pipeline and observer all on this machine.",
            "",
            "| measure | tagtrail | target | peer / note |",
            "| --- | --- | --- | --- |",
            f"| sustained ingest, publish -> stored | {_n(i['sustained_reads_per_s'])} reads/s | "
            f">= 200,000 | {_peer_or_micro(e2e, micro)} |",
            f"| sightings stored | {_n(i['sightings_per_s'])} /s | | |",
            f"| lag after last publish | {_n(i['lag_after_last_publish_s'], ' s')} | | |",
            # The latency target is at the target load: the paced rows below measure it.
            *(
                f"| alert latency p50/p95/p99 ({where}), unpaced | {_lat(lat[key])} | "
                f"p99 <= 250 ms at 200,000 reads/s: paced rows below | "
                f"at {i['sustained_reads_per_s'] / 200_000:.1f}x the target load |"
                for where, key in (("topic", "topic"), ("SSE", "sse"))
            ),
            _rss_row(mem),
            f"| lost / duplicated sightings | {c['lost']} / {c['duplicated']} | 0 / 0 | "
            f"of {c['reference_sightings']:,} reference sightings |",
            f"| false alerts | {r['false_alerts']} | 0 | |",
            f"| cases alerted / spottable | {r.get('cases_spottable_and_alerted', '-')} / "
            f"{r['cases_spottable_after_report']} | | {_cases_note(r)} |",
            f"| last-seen correct | {r['last_seen_equals_reference']} / "
            f"{r['last_seen_checked']} | | |",
            f"| store bytes per read | {_n(disk.get('store_bytes_per_read'))} | | |",
        ]
    for run in paced:
        rate = run["scale"]["rate_limit_reads_per_s"]
        flushes = (
            "every gateway flushing at once"
            if _aligned(run)
            else f"gateways at {run['ingest']['flush_phases']} flush phases"
        )
        lines += [
            f"| alert latency p50/p95/p99 ({_WHERE[where]}) at a paced {rate:,.0f} reads/s, "
            f"{flushes} | "
            f"{_lat(run['alert_latency'][where])} | p99 <= 250 ms | run `{run['run_id']}` |"
            for where in ("topic_append", "topic", "sse")
            if where in run["alert_latency"]
        ]
    lines.append("")
    if micro is not None:
        lines += [
            f"Per stage, `{micro['command']}`, run `{micro['run_id']}`:",
            "",
            "| stage | figure |",
            "| --- | --- |",
        ]
        for name, st in micro["stages"].items():
            lines.append(f"| {name} | {_micro_row(name, st)} |")
        lines.append("")
    if components is not None:
        lines += render_components(components)
    lines.append(
        "All on this 2-core machine. Generated by `python -m benchmarks.readme_table --write "
        "README.md` from the committed results/."
    )
    return "\n".join(lines)


def render_short(
    e2e: dict[str, Any] | None, paced: list[dict[str, Any]], micro: dict[str, Any] | None
) -> str:
    """The README's table: the headline figures, each with the command and run behind it. A
    figure a run did not record leaves its row out."""
    rows: list[tuple[str, str, str, dict[str, Any]]] = []  # measure, figure, target, run
    if e2e is not None:
        i, c, r = e2e["ingest"], e2e["correctness"], e2e["recovery"]
        rows += [
            (
                f"sustained ingest, publish -> stored ({e2e['scale']['label']}: "
                f"{i['reads'] / 1e6:.1f} M reads)",
                f"{_n(i['sustained_reads_per_s'])} reads/s{_series(e2e, '{:,.0f}')}",
                f">= {TARGET_RATE:,}",
                e2e,
            ),
            (
                "lost / duplicated sightings; false alerts",
                f"{c['lost']} / {c['duplicated']} of {c['reference_sightings']:,}; "
                f"{r['false_alerts']}",
                "0",
                e2e,
            ),
        ]
        mem = e2e["memory_max_rss_mb"]
        if mem.get("workers"):
            rows.append(("worker RSS", _n(mem["workers"], " MB"), "<= 1,500 MB", e2e))
    for run in paced:
        lat = run["alert_latency"]
        if not all("p99_ms" in lat.get(k, {}) for k in ("topic", "sse")):
            continue
        how = "every gateway flushing at once" if _aligned(run) else "gateways at their own phases"
        rows.append(
            (
                f"alert p99 to the topic / SSE client, paced "
                f"{run['scale']['rate_limit_reads_per_s']:,.0f} reads/s, {how}",
                f"{lat['topic']['p99_ms']:,.0f} / {lat['sse']['p99_ms']:,.0f} ms"
                + _series(run, "{:,.0f}").replace(")", " ms SSE)"),
                "<= 250 ms",
                run,
            )
        )
    if micro is not None:
        rows += _short_micro_rows(micro)
    lines = [
        "| measure | figure | target | command (run) |",
        "| --- | --- | --- | --- |",
        *(
            f"| {what} | {fig} | {target} | `{run['command']}` (`{run['run_id']}`) |"
            for what, fig, target, run in rows
        ),
        "",
        "On one shared 2-core machine, generator, Kafka and pipeline together. The full tables and "
        "their reading: [docs/performance.md](docs/performance.md). Generated by `python -m "
        "benchmarks.readme_table --write README.md` from the committed results/.",
    ]
    return "\n".join(lines)


def _short_micro_rows(micro: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    stages, out = micro.get("stages", {}), []
    try:
        rows = stages["geoindex"]["figures"]["rows"]
        peer = max(v["points_per_s"] for k, v in rows.items() if "tagtrail" not in k)
        one = rows["tagtrail numba, 1 thread"]["points_per_s"]
        out.append(
            (
                "H3 cells, numba on one thread (peer: the best other library)",
                f"{one / 1e6:.1f} M points/s ({peer / 1e6:.1f} M)",
                "",
                micro,
            )
        )
    except (KeyError, ValueError):
        pass
    try:
        f = stages["sessionize"]["figures"]
        out.append(
            (
                "sessionizing reads into sightings (peer: pandas groupby)",
                f"{f['stream_reads_per_s'] / 1e6:.1f} M reads/s "
                f"({f['peer_pandas_reads_per_s'] / 1e6:.1f} M)",
                "",
                micro,
            )
        )
    except KeyError:
        pass
    try:
        q = stages["store"]["figures"]["queries"]
        out.append(
            (
                f"store query p99: last-seen / track / area "
                f"({stages['store']['figures']['sightings'] / 1e6:.0f} M sightings)",
                f"{q['last_seen']['p99_ms']:.0f} / {q['track']['p99_ms']:.0f} / "
                f"{q['area']['p99_ms']:.0f} ms",
                "",
                micro,
            )
        )
    except KeyError:
        pass
    return out


def _cases_note(r: dict[str, Any]) -> str:
    """How many cases, and how they were reported (`recovery.reports`; topic before it)."""
    if r.get("reports", "topic") == "topic":
        return f"{r['cases_reported_in_run']} cases (put straight on the hotlist topic)"
    return (
        f"{r['cases_reported_in_run']} cases reported on the API; "
        f"{r['cases_marked_spotted']} marked spotted by the service"
    )


def _rss_row(mem: dict[str, Any]) -> str:
    """Worker RSS against its target when the workers ran as their own processes."""
    if mem.get("workers"):
        return (
            f"| worker RSS (all worker processes) | {_n(mem['workers'], ' MB')} | <= 1,500 MB | "
            f"sink + store + API {_n(mem.get('up'), ' MB')}, broker {_n(mem['broker'], ' MB')} |"
        )
    return (
        f"| pipeline RSS (worker+sink+store+API) | {_n(mem['pipeline'], ' MB')} | "
        f"<= 1,500 MB | broker {_n(mem['broker'], ' MB')} |"
    )


def _micro_row(name: str, st: dict[str, Any]) -> str:
    if "failed" in st:
        return f"failed: {st['failed'][:100]}"
    f = st["figures"]
    if name == "geoindex":
        return "; ".join(
            f"{k} {v['points_per_s'] / 1e6:.2f} M points/s" for k, v in f["rows"].items()
        )
    if name == "sessionize":
        return (
            f"streaming {_n(f['stream_reads_per_s'])} reads/s vs pandas groupby "
            f"{_n(f['peer_pandas_reads_per_s'])} reads/s (equal: {f['stream_equals_peer']})"
        )
    if name == "store":
        q = "; ".join(f"{k} p99 {v['p99_ms']:.0f} ms" for k, v in f.get("queries", {}).items())
        return f"insert {_n(f.get('insert_rows_per_s'))} rows/s; {q}"
    if name == "decode":
        return f"decode+validate {_n(f.get('decode_validate_fixed_reads_per_s'))} reads/s"
    if name == "simulator":
        return f"{_n(f['reads_per_s'])} reads/s generated"
    if name == "publish":
        return "; ".join(f"{k} {_n(v['reads_per_s'])} reads/s" for k, v in f.items())
    if name == "kafka_peer":
        return _peer({"peer_kafka_engine": f})
    return json.dumps(f)[:120]


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: add the markers {start} and {end} where the table goes")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{section}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--full", action="store_true", help="print docs/performance.md's tables")
    ap.add_argument("--write", type=Path, help="replace the short table in this file (README.md)")
    ap.add_argument(
        "--doc",
        type=Path,
        help="with --write: the full tables' file (default: docs/performance.md beside it)",
    )
    a = ap.parse_args()
    e2e, paced, micro = latest(a.results)
    if e2e is None and not paced and micro is None:
        sys.exit(f"no results/<run-id>/results.json under {a.results}")
    short, full = render_short(e2e, paced, micro), render(e2e, paced, micro, a.results)
    if a.write:
        doc = a.doc or a.write.parent / "docs" / "performance.md"
        write_section(a.write, short)
        write_section(doc, full, FULL_START, FULL_END)
        print(f"updated {a.write} and {doc}")
    else:
        print(full if a.full else short)


if __name__ == "__main__":
    main()
