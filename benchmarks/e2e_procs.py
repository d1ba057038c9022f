"""The e2e benchmark's processes: `tagtrail up`, `tagtrail worker`s and the observer, and the
pipeline's own stage histograms read from their /metrics pages after the drain.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from core.config import Settings
from core.runtime import RunningPipeline, find_running


def env_for(settings: Settings, bootstrap: str, **extra: str) -> dict[str, str]:
    return (
        os.environ
        | {
            "TAGTRAIL_DATA_DIR": str(settings.data_dir),
            "TAGTRAIL_KAFKA": bootstrap,
            "TAGTRAIL_API_PORT": "0",
            "TAGTRAIL_PARTITIONS": str(settings.partitions),
            # The observer scrapes /metrics without a key, and every client is this machine.
            "TAGTRAIL_METRICS_OPEN": "true",
            "TAGTRAIL_API_ADDRESS_RATE_PER_S": "1e9",
            "TAGTRAIL_API_ADDRESS_RATE_BURST": str(10**9),
        }
        | extra
    )


def spawn(
    args: list[str], env: dict[str, str], log: Path, profile: bool = False
) -> subprocess.Popen[bytes]:
    # cProfile writes its file when the process ends cleanly (SIGTERM stops it cleanly).
    prof = ["-m", "cProfile", "-o", str(log.with_suffix(".prof"))] if profile else []
    with log.open("wb") as f:
        return subprocess.Popen(
            [sys.executable, *prof, "-m", "tagtrail.cli", *args],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_up(
    settings: Settings, bootstrap: str, log: Path, *, worker: bool = True, profile: bool = False
) -> subprocess.Popen[bytes]:
    args = ["up"] if worker else ["up", "--no-worker"]
    return spawn(args, env_for(settings, bootstrap), log, profile)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(
    settings: Settings, bootstrap: str, out: Path, n: int, profile: bool = False
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """n `tagtrail worker` processes, each serving its metrics on a port of its own."""
    procs = []
    for i in range(n):
        port = free_port()
        env = env_for(settings, bootstrap, TAGTRAIL_METRICS_PORT=str(port))
        procs.append((spawn(["worker"], env, out / f"worker-{i}.log", profile), port))
    return procs


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def wait_up(settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> RunningPipeline:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tagtrail up exited ({proc.returncode}): {log.read_text()[-2000:]}")
        up = find_running(settings)
        if up is not None and up.pid == proc.pid:
            return up
        await asyncio.sleep(0.2)
    raise RuntimeError(f"tagtrail up did not start within 180 s: {log.read_text()[-2000:]}")


def start_observer(out: Path, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    path = out / "observer.json"
    path.write_text(json.dumps(cfg))
    with (out / "observer.log").open("wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.e2e_observer", "--config", str(path)],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# Histograms of the pipeline's own /metrics that split the alert latency and the work by stage.
STAGE_HISTOGRAMS = (
    "tagtrail_alert_latency_seconds",  # worker: read published -> alert produced
    "tagtrail_worker_queue_seconds",  # worker: oldest message's broker append -> step start
    "tagtrail_worker_batch_seconds",  # worker: one step (many gateway messages)
    "tagtrail_sink_insert_seconds",
    "tagtrail_sink_batch_rows",
)


async def stage_metrics(http: httpx.AsyncClient, worker_urls: list[str]) -> dict[str, Any]:
    """Count, sum and bucket counts of STAGE_HISTOGRAMS, summed over the pipeline's processes."""
    texts = [(await http.get("/metrics")).text]
    for url in worker_urls:
        texts.append((await http.get(url)).text)
    out: dict[str, Any] = {}
    for text in texts:
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            base = name.split("{", 1)[0]
            for h in STAGE_HISTOGRAMS:
                if base in (f"{h}_count", f"{h}_sum"):
                    d = out.setdefault(h, {})
                    key = base.rsplit("_", 1)[1]
                    d[key] = d.get(key, 0.0) + float(value)
                elif base == f"{h}_bucket":
                    le = name.split('le="', 1)[1].split('"', 1)[0]
                    b = out.setdefault(h, {}).setdefault("le", {})
                    b[le] = b.get(le, 0.0) + float(value)
    for d in out.values():
        if d.get("count"):
            d["mean"] = round(d["sum"] / d["count"], 4)
    return out
