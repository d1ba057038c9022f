"""Dashboards and alert rules proven against real servers.

The pipeline runs a small simulated city through the real broker and chdb store; Debian's
Prometheus scrapes the API's /metrics every second, with an ops key as an operator would, with
the committed rules loaded. Every PromQL expression of every dashboard panel and every rule is
then evaluated through Prometheus' HTTP API and must return series; every ClickHouse panel's SQL
runs against the store and must return rows.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaProducer

from core.config import Settings
from core.records.alerts import HotlistEntry, encode_hotlist
from core.records.reads import Reads
from deploy.grafana.build import build
from ingest.publisher import GatewayPublisher
from ingest.replay import replay
from ingest.simulator.parquet import run_simulation_to_parquet
from stream.geoindex import cells_for
from stream.kafka.progress import wait_drained
from tagtrail.metrics_server import OpsPoller, instrument_api
from tagtrail.up import Pipeline
from tests.deploy import promlive
from tests.deploy.promlive import PROMTOOL, RULES, PrometheusServer, as_bool, operands

PROM_DIR = RULES.parent
# Histograms of events this load does not cause (thefts go straight onto the hotlist, not through
# the API's report route): their quantiles are NaN, still a series. All else needs a number.
NO_EVENTS_HERE = ("tagtrail_report_to_first_alert",)


def _promtool(*args: str) -> str:
    if PROMTOOL is None:
        pytest.skip(promlive.MISSING)
    r = subprocess.run([PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_promtool_checks_config_and_rules() -> None:
    _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in _promtool("check", "rules", "rules.yml")
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml")


def test_committed_dashboards_are_the_build_output() -> None:
    built = build()
    on_disk = {p.name: p.read_text() for p in promlive.DASHBOARDS.glob("*.json")}
    assert on_disk == built, "run: python -m deploy.grafana.build"


def test_every_alert_has_a_runbook_section() -> None:
    doc = (promlive.REPO / "docs" / "operations.md").read_text().lower()
    for rule in promlive.rule_list():
        if "alert" in rule:
            anchor = rule["annotations"]["runbook"].split("#")[1]
            assert f"### {rule['alert'].lower()}" in doc, anchor


def test_operands_split_top_level_set_operators() -> None:
    e = "(a or vector(0)) > 1 and b unless c"
    assert operands(e) == ["(a or vector(0)) > 1", "b", "c"]


def test_as_bool_keeps_label_matchers() -> None:
    e = 'sum(rate(x{status!="5", le="1.0"}[5m])) > 0 unless y == 0 and z >= -1'
    assert as_bool(e) == (
        'sum(rate(x{status!="5", le="1.0"}[5m])) > bool 0 unless y == bool 0 and z >= bool -1'
    )


async def _report_thefts(p: Pipeline, settings: Settings, sim: Path, stolen_at_ms: int) -> None:
    """Put the three most-read tags on the hotlist (the recovery service's record contract)."""
    tags, counts = np.unique(
        pq.read_table(sim / "reads.parquet").column("tag_id"), return_counts=True
    )
    prod = AIOKafkaProducer(bootstrap_servers=p.bootstrap)
    await prod.start()
    try:
        for tag in tags[np.argsort(counts)[-3:]]:
            key, value = encode_hotlist(HotlistEntry(f"case-{tag}", int(tag), stolen_at_ms))
            await prod.send_and_wait(settings.topic_hotlist, value, key=key)
    finally:
        await prod.stop()
    while p.hotlist is None or len(p.hotlist.hotlist) < 3:
        await asyncio.sleep(0.1)


async def _load(p: Pipeline, settings: Settings, sim: Path, start_ms: int) -> None:
    """Readers (with districts), thefts, the simulated reads, bad inputs and API calls."""
    reg = pq.read_table(sim / "readers.parquet").to_pydict()
    admin = {"Authorization": f"Bearer {p.admin_key}"}
    async with httpx.AsyncClient(base_url=p.api_url, timeout=30) as http:
        body = {
            "readers": [
                {"reader_id": r, "lat": la, "lon": lo, "kind": k}
                for r, la, lo, k in zip(
                    reg["reader_id"], reg["lat"], reg["lon"], reg["kind"], strict=True
                )
            ]
        }
        assert (await http.post("/v1/readers", json=body, headers=admin)).status_code == 200
        # The API import has no district field yet: give the store the simulator's districts
        # (a later updated_at wins), as an integrator's registry import would.
        from store.writes import upsert_readers

        n = len(reg["reader_id"])
        lat, lon = np.asarray(reg["lat"], float), np.asarray(reg["lon"], float)
        fixed = np.array([k == "fixed" for k in reg["kind"]])
        r7, r9, r12 = cells_for(np.where(fixed, lat, np.nan), np.where(fixed, lon, np.nan))
        cols = {
            "reader_id": np.asarray(reg["reader_id"], np.uint32),
            "lat": np.where(fixed, lat, np.nan),
            "lon": np.where(fixed, lon, np.nan),
            "kind": np.where(fixed, 1, 2).astype(np.int8),
            "gateway_id": np.asarray(reg["gateway_id"], np.uint32),
            "district": np.asarray(reg["district"], dtype=object),
            "h3_r7": r7,
            "h3_r9": r9,
            "h3_r12": r12,
            "updated_at": np.full(n, int(time.time() * 1000) + 1, np.int64),
        }
        await p.runner.run(upsert_readers, cols)
        while len(p.registry.registry.reader_id) < n:
            await asyncio.sleep(0.1)

        await _report_thefts(p, settings, sim, start_ms)
        await replay(sim / "reads.parquet", p.bootstrap, settings.topic_reads)
        # Bad input on purpose: an unknown reader (invalid reads) and a garbage message.
        now = int(time.time() * 1000)
        bad = Reads.from_columns(
            tag_id=[1, 2], reader_id=[4_000_000_000] * 2, ts_ms=[now, now], rssi_dbm=[-50, -50],
            flags=[0, 0], lat=[np.nan] * 2, lon=[np.nan] * 2,
        )  # fmt: skip
        async with GatewayPublisher(p.bootstrap, settings.topic_reads) as pub:
            await pub.publish(bad, gateway_id=99)
        prod = AIOKafkaProducer(bootstrap_servers=p.bootstrap)
        await prod.start()
        try:
            await prod.send_and_wait(settings.topic_reads, b"not a gateway batch")
        finally:
            await prod.stop()
        await wait_drained(settings, p.bootstrap, timeout_s=60)
        for path in ("/healthz", "/readyz", "/v1/bikes/1/last-seen", "/no-such-route"):
            await http.get(path)


def _check_promql(prom: PrometheusServer, failures: list[str], report: list[str]) -> None:
    for q in promlive.dashboard_queries():
        if q.kind != "promql":
            continue
        expr = q.text.replace("$__rate_interval", "30s")
        got = prom.query(expr)
        values = [float(s["value"][1]) for s in got]
        report.append(f"{q.dashboard} / {q.panel}: {values[:4]}")
        if not got:
            failures.append(f"no data: {q.dashboard} / {q.panel}: {expr}")
        elif not any(n in expr for n in NO_EVENTS_HERE) and not any(map(math.isfinite, values)):
            failures.append(f"no number: {q.dashboard} / {q.panel}: {expr} -> {values}")
    for rule in promlive.rule_list():
        name = rule.get("record") or rule["alert"]
        exprs = [rule["expr"]] if "record" in rule else [as_bool(e) for e in operands(rule["expr"])]
        for expr in exprs:
            if not prom.query(expr):
                failures.append(f"no data: rule {name}: {expr}")
        if "record" in rule and not prom.query(rule["record"]):
            failures.append(f"recorded series missing: {rule['record']}")
    for r in prom.rules():
        if r.get("health") != "ok":
            failures.append(f"rule {r['name']} health {r.get('health')}: {r.get('lastError')}")


async def _check_sql(p: Pipeline, t0_ms: int, failures: list[str], report: list[str]) -> None:
    t1_ms = int(time.time() * 1000) + 60_000
    for q in promlive.dashboard_queries():
        if q.kind != "sql":
            continue
        text = q.text.replace("$__fromTime_ms", f"fromUnixTimestamp64Milli({t0_ms})").replace(
            "$__toTime_ms", f"fromUnixTimestamp64Milli({t1_ms})"
        )
        cols = await p.runner.run(lambda store, s=text: store.backend.query_columns(s))
        rows = len(next(iter(cols.values()))) if cols else 0
        report.append(f"{q.dashboard} / {q.panel}: {rows} rows, columns {list(cols)}")
        if rows == 0:
            failures.append(f"no rows: {q.dashboard} / {q.panel}: {text}")


async def _run(settings: Settings, folder: Path) -> None:
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - 6 * 60_000  # recent reads: inside the reader-silence window
    sim = folder / "sim"
    run_simulation_to_parquet(sim, scale=0.01, duration_s=300, seed=11, start_ms=start_ms)
    failures: list[str] = []
    report: list[str] = []
    p = Pipeline(settings)
    prom: PrometheusServer | None = None
    poller: OpsPoller | None = None
    try:
        await p.start()
        instrument_api(p.api)  # before the first request; a no-op if create_api already did
        poller = OpsPoller(settings, p.bootstrap, p.runner.run, interval_s=1.0)
        await poller.start()
        # Scraped as an operator would: with an ops key (the API's /metrics needs one).
        async with httpx.AsyncClient(base_url=p.api_url, timeout=30) as http:
            r = await http.post(
                "/v1/keys",
                json={"role": "ops", "name": "prometheus"},
                headers={"Authorization": f"Bearer {p.admin_key}"},
            )
            r.raise_for_status()
        target = p.api_url.removeprefix("http://")
        prom = PrometheusServer(folder, [target], RULES, bearer=r.json()["key"])
        await asyncio.to_thread(prom.start)
        # Counters must be scraped before the load too, or their increase is invisible.
        while not await asyncio.to_thread(prom.query, "up == 1"):
            await asyncio.sleep(0.2)
        await _load(p, settings, sim, start_ms)
        # Enough scrapes after the load for 30 s rates, and every rule evaluated on them.
        deadline = time.monotonic() + 30
        polls = poller.polls
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            up = await asyncio.to_thread(prom.query, "count_over_time(up[30s]) >= 8")
            if up and poller.polls > polls + 1:
                break
        await asyncio.sleep(2)
        await asyncio.to_thread(_check_promql, prom, failures, report)
        await _check_sql(p, start_ms - 60_000, failures, report)
    finally:
        if poller is not None:
            await poller.stop()
        if prom is not None:
            await asyncio.to_thread(prom.stop)
        await p.stop()
    print("\n".join(report))
    assert not failures, "\n".join(failures)


def test_every_panel_and_rule_has_data(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    if promlive.PROMETHEUS is None:
        pytest.skip(promlive.MISSING)
    asyncio.run(_run(settings_factory(), tmp_path))
