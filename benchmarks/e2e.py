"""`tagtrail bench e2e`: the whole system on this machine, measured as a city would judge it.

Layout (separate processes, so each one's memory and CPU are measured on its own):
  this process: simulator -> gateway buffers flushed on the wall clock -> publisher, and the
    theft reports (benchmarks.e2e_owners: straight onto the hotlist topic, or by bike owners on
    the API with `reports="api"`); every read is spooled to disk for the checks
  Kafka broker: deploy.kafka.LocalKafka (a JVM)
  `tagtrail up --no-worker` subprocess: sink + embedded store + recovery API, and `workers`
    `tagtrail worker` subprocesses (one consumer group); with workers=0, `tagtrail up` runs the
    worker in its own process as well (one GIL for everything)
  observer subprocess: alerts topic consumer, SSE client (if the API has the route), sampler
Afterwards the stored sightings are exported and checked against the reference sessionizer,
one tag bucket of the spool at a time.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from aiokafka import AIOKafkaProducer

from benchmarks import e2e_checks as checks
from benchmarks import e2e_procs as ep
from benchmarks.e2e_feed import FeedResult, feed
from benchmarks.e2e_owners import HotlistReports, Owners, Reporter
from benchmarks.e2e_scale import Scale
from benchmarks.e2e_spool import ReadSpool
from core.config import Settings, load_settings
from core.priority import renice_threads, reset_threads
from core.records.readers import ReaderRegistry
from core.runtime import RunningPipeline
from ingest.publisher import GatewayPublisher
from ingest.simulator import Simulation
from stream.kafka.progress import wait_drained
from stream.kafka.topics import ensure_topics
from stream.sessionize.reference import reference_sightings
from tagtrail.broker.launcher import LocalKafka

SSE_PATH = "/v1/alerts/stream"
# The reference sessionizer (pandas) needs ~10x its reads' size: buckets keep a day's peak ~2 GB.
SPOOL_READS_PER_BUCKET = 4_000_000
# nice value of the generator (this process) while it replays: see _measure.
GENERATOR_NICE = 10


@dataclass(frozen=True, slots=True)
class E2EOptions:
    scale: Scale
    work_dir: Path
    seed: int = 7
    partitions: int = 4
    # More thefts than the city's 60/day, reported sooner than its 1 h median: a run of an
    # hour or less then has enough cases for latency percentiles and recovery shares.
    theft_rate_per_day: float = 2000.0
    report_delay_median_s: float = 600.0
    rate_reads_per_s: float = 0.0  # 0: as fast as the publisher goes
    slice_ms: int = 1000
    flush_ms: int = 1000  # gateways flush every this many wall ms (a real uplink's interval)
    # Each gateway flushes at one of this many phases of flush_ms, as independent uplinks do; 1:
    # all at the same moment (the worst case).
    flush_slots: int = 20
    # "topic": theft reports go straight onto the hotlist topic; "api": owners register the
    # bikes and report the thefts on the recovery API (its case path runs under the load).
    reports: str = "topic"
    workers: int = 1  # `tagtrail worker` processes; 0: the worker runs inside `tagtrail up`
    profile: bool = False  # run the pipeline processes under cProfile (raw/*.prof)
    drain_timeout_s: float = 3600.0
    alert_settle_s: float = 3.0
    peer: bool = True
    peer_max_reads: int = 2_000_000


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def run_e2e(opts: E2EOptions, out: Path) -> dict[str, Any]:
    """Run the benchmark; raw observations go to `out`, the summary is returned."""
    out.mkdir(parents=True, exist_ok=True)
    work = opts.work_dir
    base = load_settings()
    cfg = opts.scale.config(
        seed=opts.seed,
        theft_rate_per_day=opts.theft_rate_per_day,
        report_delay_median_s=opts.report_delay_median_s,
    )
    t0 = time.perf_counter()
    sim = Simulation(cfg)
    sim_setup_s = time.perf_counter() - t0
    broker = LocalKafka(
        work / "kafka", base.kafka_cache_dir, heap_mb=base.kafka_heap_mb, partitions=opts.partitions
    )
    await asyncio.to_thread(broker.start)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = load_settings(
            data_dir=work / "data", kafka=broker.bootstrap, api_port=0, partitions=opts.partitions
        )
        await ensure_topics(settings, broker.bootstrap)
        up_proc = ep.start_up(
            settings,
            broker.bootstrap,
            out / "up.log",
            worker=not opts.workers,
            profile=opts.profile,
        )
        procs.append(up_proc)
        workers = ep.start_workers(settings, broker.bootstrap, out, opts.workers, opts.profile)
        procs.extend(p for p, _ in workers)
        up = await ep.wait_up(settings, up_proc, out / "up.log")
        spool = ReadSpool(
            work / "spool",
            n_buckets=max(1, opts.scale.expected_reads // SPOOL_READS_PER_BUCKET),
            keep_head=opts.peer_max_reads if opts.peer else 0,
        )
        result = await _measure(
            opts, out, sim, settings, broker, up, up_proc, workers, spool, procs
        )
        result["simulator_setup_s"] = round(sim_setup_s, 2)
        for p, _ in workers:
            ep.stop(p)
        ep.stop(up_proc)
        result["disk"] = _disk(settings, result)
        if opts.peer:
            from benchmarks.peer_kafka_engine import run_peer

            # The peer runs here, on its own: at the generator's nice only if this process may
            # not lower it back (recorded).
            result["scale"]["peer_nice"] = 0 if reset_threads(0) else GENERATOR_NICE

            # Like for like: the peer's messages carry as many reads as the feed's did.
            rpm = result["ingest"].get("reads_per_message") or 1000.0
            result["peer_kafka_engine"] = await run_peer(
                broker.bootstrap, spool.head(), work / "peer", max_reads=opts.peer_max_reads,
                reads_per_message=max(1.0, float(rpm)), engine_formats=("RowBinary",),
            )  # fmt: skip
        return result
    finally:
        for p in procs:
            ep.stop(p)
        await asyncio.to_thread(broker.stop)
        broker.kill()


def _disk(settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    store = _du(settings.store_dir)
    n_reads = result["ingest"]["reads"]
    n_sight = result["correctness"]["stored_sightings"]
    return {
        "store_bytes": store,
        "store_bytes_per_read": round(store / n_reads, 2) if n_reads else None,
        "store_bytes_per_sighting": round(store / n_sight, 2) if n_sight else None,
        "note": "embedded chdb folder after `tagtrail up` stopped (raw reads table included, "
        "parts not force-merged)",
    }


async def _measure(
    opts: E2EOptions,
    out: Path,
    sim: Simulation,
    settings: Settings,
    broker: LocalKafka,
    up: RunningPipeline,
    up_proc: subprocess.Popen[bytes],
    workers: list[tuple[subprocess.Popen[bytes], int]],
    spool: ReadSpool,
    procs: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {up.admin_key}"}
    async with httpx.AsyncClient(base_url=up.api_url, timeout=300, headers=admin) as http:
        paths = set((await http.get("/openapi.json")).json().get("paths", {}))
        reg = sim.city.registry_columns()
        rows = [
            {"reader_id": int(r), "lat": float(la), "lon": float(lo), "kind": str(k)}
            for r, la, lo, k in zip(
                reg["reader_id"], reg["lat"], reg["lon"], reg["kind"], strict=True
            )
        ]
        (await http.post("/v1/readers", json={"readers": rows})).raise_for_status()
        r = await http.post("/v1/keys", json={"role": "police", "name": "benchmark desk"})
        r.raise_for_status()
        police = {"Authorization": f"Bearer {r.json()['key']}"}
        sse_path = SSE_PATH if SSE_PATH in paths else ""
        obs = ep.start_observer(
            out,
            {
                "out_dir": str(out),
                "bootstrap": broker.bootstrap,
                "alerts_topic": settings.topic_alerts,
                "api_url": up.api_url,
                "police_key": police["Authorization"].split(" ", 1)[1],
                "sse_path": sse_path,
                "metrics_urls": [f"{up.api_url}/metrics"]
                + [f"http://127.0.0.1:{port}/metrics" for _, port in workers],
                "pids": {
                    "pipeline": [up_proc.pid, *(p.pid for p, _ in workers)],
                    "up": [up_proc.pid],
                    "workers": [p.pid for p, _ in workers],
                    "broker": [broker.proc.pid],
                    "generator": [os.getpid()],
                },
            },
        )
        procs.append(obs)
        deadline = time.monotonic() + 60
        while not (out / "observer.ready").exists():
            if obs.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"observer failed: {(out / 'observer.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        # The worker validates reader ids against the registry it follows: give it time to
        # read the imported readers before the first read arrives (else: unknown-reader DLQ).
        await asyncio.sleep(3.0)
        # The generator stands in for the city's gateways, which do not share the pipeline's
        # cores: from here on it gives way to the processes measured (it cannot delay a
        # publish timestamp, only the send after it, which only adds to the latency measured).
        renice_threads(GENERATOR_NICE)
        hot = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await hot.start()
        try:
            reporter: Reporter = (
                await Owners.create(http, up.admin_key)
                if opts.reports == "api"
                else HotlistReports(hot, settings.topic_hotlist)
            )
            async with GatewayPublisher(broker.bootstrap, settings.topic_reads) as pub:
                fr = await feed(
                    sim,
                    pub,
                    reporter,
                    flush_ms=opts.flush_ms,
                    flush_slots=opts.flush_slots,
                    slice_ms=opts.slice_ms,
                    rate_reads_per_s=opts.rate_reads_per_s,
                    spool=spool,
                )
        finally:
            await hot.stop()
        await wait_drained(settings, broker.bootstrap, timeout_s=opts.drain_timeout_s)
        drained_ms = time.time_ns() // 1_000_000
        stage = await ep.stage_metrics(
            http, [f"http://127.0.0.1:{port}/metrics" for _, port in workers]
        )
        await asyncio.sleep(opts.alert_settle_s)
        got = await http.get("/v1/export/sightings")
        got.raise_for_status()
        stored = pq.read_table(io.BytesIO(got.content)).to_pandas()
        last_seen: dict[int, dict[str, Any] | None] = {}
        for tag in fr.cases:
            r = await http.get(
                f"/v1/bikes/{tag}/last-seen", params={"reason": "benchmark"}, headers=police
            )
            last_seen[tag] = r.json() if r.status_code == 200 else None
        # The service marks a case spotted at its first alert: every alerted case should be.
        spotted = None
        if opts.reports == "api":
            r = await http.get(
                "/v1/thefts", params={"reason": "benchmark", "limit": 5000}, headers=police
            )
            r.raise_for_status()
            ours = {c.case_id for c in fr.cases.values()}
            spotted = sum(c["status"] == "spotted" and c["case_id"] in ours for c in r.json())
    ep.stop(obs, timeout_s=10)
    # It holds the run's police key: the results folder may be committed.
    (out / "observer.json").unlink()
    (out / "observer.ready").unlink(missing_ok=True)
    result = _summarise(
        opts, sim, settings, fr, spool, stored, last_seen, drained_ms, out, sse_path
    )
    result["stages"] = stage
    # Theft reports the API refused (409: the bike already had an open case), with its reason.
    result["recovery"]["reports_refused"] = reporter.refused
    result["recovery"]["reports"] = opts.reports
    if spotted is not None:
        result["recovery"]["cases_marked_spotted"] = spotted
    if reporter.answer_ms:
        result["recovery"]["theft_report_answer"] = checks.percentiles(np.array(reporter.answer_ms))
        result["recovery"]["theft_report_due_to_answer"] = checks.percentiles(
            np.array(reporter.due_to_answer_ms)
        )
    return result


def _summarise(
    opts: E2EOptions,
    sim: Simulation,
    settings: Settings,
    fr: FeedResult,
    spool: ReadSpool,
    stored: pd.DataFrame,
    last_seen: dict[int, dict[str, Any] | None],
    drained_ms: int,
    out: Path,
    sse_path: str,
) -> dict[str, Any]:
    reg = sim.city.registry_columns()
    fixed = reg["kind"] == "fixed"
    registry = ReaderRegistry.from_columns(
        reg["reader_id"][fixed], reg["lat"][fixed], reg["lon"][fixed]
    )
    samples = _read_jsonl(out / "samples.jsonl")
    alerts = _read_jsonl(out / "alerts.jsonl")
    # The checks below need the reference rows of stolen or alerted bikes only.
    watch = [int(t) for th in fr.thefts for t in th["tag_id"]]
    watch += [int(a["alert"]["tag_id"]) for a in alerts if a.get("alert")]
    t = time.perf_counter()
    correctness, reference = _check_buckets(
        spool, stored, settings.gap_ms, registry, np.array(watch, np.uint64)
    )
    reference_s = time.perf_counter() - t
    elapsed_s = (drained_ms - fr.first_publish_ms) / 1000
    publish_s = (fr.last_publish_ms - fr.first_publish_ms) / 1000
    last = samples[-1] if samples else {}
    correctness["dead_lettered_reads"] = int(last.get("tagtrail_invalid_reads_total", 0))
    correctness["late_reads"] = int(last.get("tagtrail_late_reads_total", 0))
    correctness["reference_s"] = round(reference_s, 2)
    cpu = {
        name: round(samples[-1][f"cpu_{name}_s"] - samples[0][f"cpu_{name}_s"], 1)
        for name in ("up", "workers", "broker", "generator")
        if samples and f"cpu_{name}_s" in samples[-1] and f"cpu_{name}_s" in samples[0]
    }
    rss = {
        name: max((s.get(f"rss_{name}_mb") or 0) for s in samples) if samples else None
        for name in ("pipeline", "up", "workers", "broker", "generator")
    }
    ingest = {
        "reads": fr.n_reads,
        "gateway_messages": fr.n_messages,
        "gateway_flushes": fr.n_flushes,
        "flush_ms": opts.flush_ms,
        "flush_phases": opts.flush_slots,
        "reads_per_message": round(fr.n_reads / fr.n_messages, 1) if fr.n_messages else None,
        "wire_mb_uncompressed": round(fr.wire_bytes / 1e6, 1),
        "publish_s": round(publish_s, 2),
        "publish_reads_per_s": round(fr.n_reads / publish_s) if publish_s > 0 else None,
        "first_publish_to_drained_s": round(elapsed_s, 2),
        "sustained_reads_per_s": round(fr.n_reads / elapsed_s) if elapsed_s > 0 else None,
        "sightings_upserts_written": int(last.get("tagtrail_sightings_written_total", 0)),
        "sightings_per_s": round(len(stored) / elapsed_s) if elapsed_s > 0 else None,
        "lag_after_last_publish_s": round((drained_ms - fr.last_publish_ms) / 1000, 2),
        "peak_processed_reads_per_s_5s": _peak_rate(samples, "tagtrail_reads_total", 5000),
    }
    topic_alerts = [a for a in alerts if a["source"] == "topic"]
    sse_alerts = [a for a in alerts if a["source"] == "sse"]
    sse_errors = [a["error"] for a in alerts if a["source"] == "sse-error"]
    latency: dict[str, Any] = {}
    lat_topic, src = checks.alert_latencies(topic_alerts, fr)
    if len(lat_topic):
        latency["topic"] = checks.percentiles(lat_topic) | {"source": src}
    else:
        why = (
            "no theft case was reported during the run"
            if not fr.cases
            else f"no alert arrived on topic {settings.topic_alerts!r} "
            f"({len(fr.cases)} cases on the hotlist): hotlist matching is not running"
        )
        latency["topic"] = {"not_measured": why}
    # The same alerts timed by the broker: its append time (the alerts topic is stamped with
    # LogAppendTime), i.e. when any consumer could read it, apart from the observer's own delay.
    appended = [{**a, "recv_ms": a["append_ms"]} for a in topic_alerts if a.get("append_ms")]
    lat_append, src = checks.alert_latencies(appended, fr)
    if len(lat_append):
        latency["topic_append"] = checks.percentiles(lat_append) | {
            "source": f"{src}; broker append time"
        }
    if not sse_path:
        latency["sse"] = {"not_measured": f"the API has no {SSE_PATH} route"}
    elif sse_errors:
        latency["sse"] = {"not_measured": f"SSE client failed: {sse_errors[0]}"}
    else:
        lat_sse, src = checks.alert_latencies(sse_alerts, fr)
        latency["sse"] = (
            checks.percentiles(lat_sse) | {"source": src}
            if len(lat_sse)
            else {"not_measured": "no alert arrived on the SSE stream"}
        )
    (out / "latency_ms.json").write_text(
        json.dumps({"topic": lat_topic.tolist(), "sse": lat_sse_all(sse_alerts, fr).tolist()})
    )
    (out / "publish_progress.json").write_text(json.dumps(fr.progress))
    rec = checks.recovery(alerts, fr, reference, last_seen, sim.cfg.max_skew_ms + 60_000)
    _save_track(out, fr, reference, alerts)
    return {
        "scale": {
            "label": opts.scale.label,
            "city_scale": opts.scale.city_scale,
            "duration_s": opts.scale.duration_s,
            "start_ms": sim.cfg.start_ms,
            "bikes": sim.cfg.n_bikes,
            "readers": int(sim.city.n_readers),
            "theft_rate_per_day": opts.theft_rate_per_day,
            "report_delay_median_s": opts.report_delay_median_s,
            "partitions": opts.partitions,
            "rate_limit_reads_per_s": opts.rate_reads_per_s or None,
            "worker_processes": opts.workers,
            "layout": f"{opts.workers} x `tagtrail worker` + `tagtrail up --no-worker`"
            if opts.workers
            else "`tagtrail up` (worker, sink, store, API in one process)",
            "spool_buckets": spool.n_buckets,
            "generator_nice": GENERATOR_NICE,
        },
        "ingest": ingest,
        "memory_max_rss_mb": {k: round(v) if v is not None else None for k, v in rss.items()},
        "cpu_seconds_while_observed": cpu,
        "correctness": correctness,
        "alert_latency": latency,
        "recovery": rec,
    }


def _check_buckets(
    spool: ReadSpool,
    stored: pd.DataFrame,
    gap_ms: int,
    registry: ReaderRegistry,
    watch_tags: np.ndarray,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Compare the store with the reference bucket by bucket; keep reference rows of watch_tags."""
    totals = dict.fromkeys(
        ("reference_sightings", "stored_sightings", "lost", "extra_or_different", "duplicated"), 0
    )
    stored_bucket = spool.bucket_of(stored["tag_id"].to_numpy(np.uint64))
    kept = []
    for k, reads in spool.buckets():
        ref = pd.DataFrame(reference_sightings(reads, gap_ms, registry))
        del reads
        for key, v in checks.compare_sightings(stored[stored_bucket == k], ref).items():
            totals[key] += v
        kept.append(ref[ref["tag_id"].isin(watch_tags)])
    return dict(totals), pd.concat(kept, ignore_index=True)


def lat_sse_all(sse_alerts: list[dict[str, Any]], fr: FeedResult) -> np.ndarray:
    return checks.alert_latencies(sse_alerts, fr)[0] if sse_alerts else np.empty(0)


def _peak_rate(samples: list[dict[str, Any]], key: str, window_ms: int) -> int | None:
    if len(samples) < 2:
        return None
    t = np.array([s["t_ms"] for s in samples], np.float64)
    v = np.array([s.get(key, 0) for s in samples], np.float64)
    j = np.searchsorted(t, t + window_ms)
    ok = j < len(t)
    if not ok.any():
        return round(float((v[-1] - v[0]) / max(t[-1] - t[0], 1) * 1000))
    rates = (v[j[ok]] - v[ok]) / (t[j[ok]] - t[ok]) * 1000
    return round(float(rates.max()))


def _save_track(
    out: Path, fr: FeedResult, reference: pd.DataFrame, alerts: list[dict[str, Any]]
) -> None:
    """Truth track, sightings and alerts of one stolen bike (the most alerted) for the map."""
    tracks = pd.DataFrame(checks._cat(fr.tracks)) if fr.tracks else pd.DataFrame()
    alerted = [a["alert"] for a in alerts if a["source"] == "topic" and a["alert"]]
    alerted_tags = {a["tag_id"] for a in alerted}
    # The alerted bike with the most sightings draws the most telling map.
    counts = reference[reference["tag_id"].isin(alerted_tags)]["tag_id"].value_counts()
    if len(counts):
        tag = int(counts.index[0])
    elif not tracks.empty:
        tag = int(tracks["tag_id"].value_counts().index[0])
    else:
        return
    case = fr.cases.get(tag)
    data = {
        "tag_id": tag,
        "stolen_at_ms": case.stolen_at_ms if case else None,
        "reported_at_ms": case.reported_at_ms if case else None,
        "track": tracks[tracks["tag_id"] == tag][["t_ms", "lat", "lon"]].to_dict("list")
        if not tracks.empty
        else {},
        "sightings": reference[reference["tag_id"] == tag][["first_ts", "lat", "lon"]].to_dict(
            "list"
        ),
        "alerts": [[a["first_ts"], a["lat"], a["lon"]] for a in alerted if a["tag_id"] == tag],
    }
    (out / "track.json").write_text(json.dumps(data, default=float))
