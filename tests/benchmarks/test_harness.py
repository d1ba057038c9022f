"""The benchmark harness at a tiny scale: every stage runs for real and the report is complete.

Figures are not asserted (timing on a shared machine is noise); correctness figures are.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks.cli import new_run_dir
from benchmarks.e2e import E2EOptions, run_e2e
from benchmarks.e2e_scale import FULL_HOUR_READS, parse_scale
from benchmarks.micro import run_micro
from benchmarks.readme_table import latest, render
from benchmarks.report import write_report


def test_parse_scale() -> None:
    assert parse_scale("hour").city_scale == 1.0
    assert parse_scale("day").duration_s == 86_400
    assert parse_scale("0.1").city_scale == 0.1
    n = parse_scale("2000000")
    assert n.city_scale == pytest.approx(2_000_000 / FULL_HOUR_READS)
    assert parse_scale(str(2 * FULL_HOUR_READS)).duration_s == 7200
    for bad in ("week", "-1", "0"):
        with pytest.raises(ValueError):
            parse_scale(bad)


@pytest.mark.kafka
def test_e2e_tiny(tmp_path: Path) -> None:
    run_id, out = new_run_dir("e2e", "0.002", tmp_path / "results")
    opts = E2EOptions(
        scale=parse_scale("0.002"), work_dir=tmp_path / "work", peer_max_reads=5_000, reports="api"
    )
    res = asyncio.run(run_e2e(opts, out / "raw"))
    result = {"run_id": run_id, "kind": "e2e", "command": "test", "machine": _machine()} | res
    report = write_report(result, out)
    text = report.read_text()
    saved = json.loads((out / "results.json").read_text())

    c = saved["correctness"]
    assert c["reference_sightings"] > 0
    assert c["lost"] == 0 and c["duplicated"] == 0 and c["extra_or_different"] == 0
    assert saved["ingest"]["reads"] > 1000
    assert saved["recovery"]["false_alerts"] == 0
    assert saved["recovery"]["duplicate_alert_deliveries"] == 0
    # Thefts went through the API (reports="api"), which marked each alerted case spotted.
    rec = saved["recovery"]
    assert rec["reports_refused"] == [] and rec["cases_reported_in_run"] > 0
    assert rec["cases_marked_spotted"] == rec["cases_alerted"]
    # Alert latency is either a figure or says why not; never silently missing.
    for where in ("topic", "sse"):
        lat = saved["alert_latency"][where]
        assert "p99_ms" in lat or lat["not_measured"], lat
    peer = saved["peer_kafka_engine"]
    assert "rows_per_s" in peer["kafka_engine_mv"] or peer["kafka_engine_mv"]["not_measured"]
    assert peer["aiokafka_to_clickhouse_jsoneachrow_mv"]["rows"] == peer["reads"]
    assert {t["target"].split(" ")[0] for t in saved["targets"]} >= {"ingest", "lost", "false"}
    for png in ("throughput.png", "memory.png"):
        assert (out / png).stat().st_size > 1000
    assert "## Targets" in text and "## Plots" in text
    assert not (out / "raw" / "observer.json").exists()  # it held an API key
    table = render(*latest(tmp_path / "results"))
    assert "reads/s" in table and run_id in table


def test_micro_records_figures_and_failures() -> None:
    res = run_micro(quick=True, only=["simulator"])
    assert res["simulator"]["figures"]["reads"] > 0


def _machine() -> dict[str, object]:
    return {"cpus": 2, "python": "3", "note": "test"}
