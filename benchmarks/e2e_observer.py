"""The e2e benchmark's observer process: alert listeners and resource sampling, off the generator.

Runs in its own process so the generator's CPU work never delays an alert's receive time. It
writes JSON lines to OUT_DIR/alerts.jsonl ({"recv_ms", "source": "topic"|"sse", "alert"}, once
stopped) and appends to OUT_DIR/samples.jsonl (wall time, pipeline counters from /metrics, RSS of
the watched pids) while it runs; it stops on SIGTERM.

    python -m benchmarks.e2e_observer --config OUT_DIR/observer.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
import psutil
from aiokafka import AIOKafkaConsumer

# Counters of the pipeline's /metrics page that the report plots over time.
COUNTERS = (
    "tagtrail_reads_total",
    "tagtrail_sightings_written_total",
    "tagtrail_late_reads_total",
    "tagtrail_invalid_reads_total",
    "tagtrail_dead_letters_total",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_counters(text: str) -> dict[str, float]:
    """Sum each counter of COUNTERS over its labels from Prometheus text exposition."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _write(f: TextIO, row: dict[str, Any]) -> None:
    # No flush per row: a burst of thousands of alerts would cost a write call each, CPU taken
    # from the pipeline being measured. The files are complete once the observer has stopped.
    f.write(json.dumps(row) + "\n")


class Received:
    """Alerts as received, (recv_ms, source, raw record, broker append ms or None): parsed and
    written once the observer stops, so neither parsing nor writing delays the next receipt (and
    its timestamp) in a burst of thousands, nor takes CPU from the pipeline while it is
    measured."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, bytes | None, int | None]] = []

    def add(
        self, recv_ms: int, source: str, raw: bytes | None, append_ms: int | None = None
    ) -> None:
        self.rows.append((recv_ms, source, raw, append_ms))

    def write(self, f: TextIO) -> None:
        for recv, source, raw, append_ms in self.rows:
            if source == "topic":
                row = {"recv_ms": recv, "source": "topic", "alert": _json(raw)}
                if append_ms is not None:
                    row["append_ms"] = append_ms
                _write(f, row)
            else:
                _sse_alert(f, recv, raw or b"")
        self.rows.clear()


def _json(raw: bytes | None) -> Any:
    return json.loads(raw) if raw else None


async def watch_topic(cfg: dict[str, Any], got: Received, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        cfg["alerts_topic"],
        bootstrap_servers=cfg["bootstrap"],
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,  # latency matters more than fetch efficiency for alerts
        # A burst of thousands of alerts in one fetch, not in 1 MB (~3,000 alert) round trips.
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    ready.set()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=200)
            # Received when the fetch returned, not when this loop reaches the record: parsing
            # and writing a burst of thousands of alerts must not count as pipeline latency.
            recv = now_ms()
            for records in fetched.values():
                for msg in records:
                    # The broker's append time, when the topic stamps it (stream.kafka.topics).
                    appended = msg.timestamp if msg.timestamp_type == 1 else None
                    got.add(recv, "topic", msg.value, appended)
    finally:
        await consumer.stop()


def _sse_alert(f: TextIO, recv: int, data: bytes) -> None:
    try:
        alert = json.loads(data)
    except ValueError:
        return  # keep-alive or non-JSON comment payloads carry no alert
    if isinstance(alert, dict) and isinstance(alert.get("alert"), dict):
        alert = alert["alert"]  # an envelope around the Alert record
    if isinstance(alert, dict) and "read_published_ms" not in alert:
        # The API names the read's publish time created_at.
        alert["read_published_ms"] = alert.get("created_at")
    if isinstance(alert, dict) and "alert_id" in alert:
        _write(f, {"recv_ms": recv, "source": "sse", "alert": alert})


async def watch_sse(cfg: dict[str, Any], got: Received, f: TextIO, ready: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {cfg['police_key']}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(10.0, read=None)
    try:
        async with (
            httpx.AsyncClient(base_url=cfg["api_url"], timeout=timeout) as http,
            # Police access is audited and needs a reason, as the console sends it.
            http.stream(
                "GET", cfg["sse_path"], headers=headers, params={"reason": "benchmark"}
            ) as r,
        ):
            if r.status_code != 200:
                body = (await r.aread()).decode(errors="replace")[:300]
                raise httpx.HTTPError(f"status {r.status_code}: {body}")
            ready.set()
            pending = b""
            async for chunk in r.aiter_bytes():
                # Received when the chunk arrived, as for the topic: parsing a burst of
                # thousands of events here must not count as pipeline latency.
                recv = now_ms()
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()  # an incomplete last line waits for the next chunk
                for raw in lines:
                    if raw.startswith(b"data:"):
                        got.add(recv, "sse", raw[5:].strip())
    except httpx.HTTPError as e:
        # The report states why SSE latency was not measured instead of showing nothing.
        _write(f, {"recv_ms": now_ms(), "source": "sse-error", "error": str(e)})
        ready.set()


async def sample(cfg: dict[str, Any], f: TextIO, interval_s: float) -> None:
    # A name stands for one pid or for a list of them (e.g. several worker processes).
    procs = {
        name: [psutil.Process(p) for p in (pids if isinstance(pids, list) else [pids])]
        for name, pids in cfg["pids"].items()
    }
    # Every process with pipeline counters (the API's process and each separate worker).
    urls = cfg.get("metrics_urls") or [cfg["api_url"] + "/metrics"]
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            row: dict[str, Any] = {"t_ms": now_ms()}
            for url in urls:
                try:
                    r = await http.get(url)
                    for k, v in parse_counters(r.text).items():
                        row[k] = row.get(k, 0.0) + v
                except httpx.HTTPError as e:
                    row["metrics_error"] = f"{url}: {e}"
            for name, ps in procs.items():
                try:
                    # Helper children count for the pipeline and the JVM; the generator's
                    # children are the other measured processes, so it counts alone. A child
                    # counts by the memory only it holds: a worker's forked checkpoint writer
                    # shares the worker's pages, and holds its own only where either changed one.
                    kids = [] if name == "generator" else [
                        c for p in ps for c in p.children(recursive=True)
                    ]  # fmt: skip
                    row[f"rss_{name}_mb"] = (
                        sum(p.memory_info().rss for p in ps) + sum(map(_own_bytes, kids))
                    ) / 1e6
                    # user + system of the processes, of their live children and of the
                    # children they waited for (ended helpers: counted by the parent from then)
                    row[f"cpu_{name}_s"] = sum(sum(p.cpu_times()[:4]) for p in ps) + sum(
                        map(_cpu_s, kids)
                    )
                except psutil.Error:
                    row[f"rss_{name}_mb"] = None
            row["load1"] = psutil.getloadavg()[0]
            _write(f, row)
            await asyncio.sleep(interval_s)


def _own_bytes(child: psutil.Process) -> int:
    """Memory only this child holds (USS); 0 once it has ended (checkpoint writers are brief)."""
    try:
        return int(child.memory_full_info().uss)
    except psutil.NoSuchProcess:
        return 0


def _cpu_s(child: psutil.Process) -> float:
    try:
        return float(sum(child.cpu_times()[:2]))
    except psutil.NoSuchProcess:
        return 0.0  # ended: its parent counts it once it has waited for it


async def main_async(cfg: dict[str, Any]) -> None:
    out = Path(cfg["out_dir"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with (out / "alerts.jsonl").open("a") as fa, (out / "samples.jsonl").open("a") as fs:
        topic_ready, sse_ready = asyncio.Event(), asyncio.Event()
        got = Received()
        tasks = [
            asyncio.create_task(watch_topic(cfg, got, topic_ready)),
            asyncio.create_task(sample(cfg, fs, cfg.get("interval_s", 0.5))),
        ]
        if cfg.get("sse_path"):
            tasks.append(asyncio.create_task(watch_sse(cfg, got, fa, sse_ready)))
        else:
            sse_ready.set()
        await asyncio.wait_for(asyncio.gather(topic_ready.wait(), sse_ready.wait()), 30)
        (out / "observer.ready").write_text(str(now_ms()))
        await stop.wait()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        got.write(fa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    args = ap.parse_args()
    asyncio.run(main_async(json.loads(args.config.read_text())))


if __name__ == "__main__":
    main()
