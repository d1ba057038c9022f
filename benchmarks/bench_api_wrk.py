"""Recovery API under wrk: police last-seen, owners' theft reports (with their back-search) and
/healthz, each from an external load generator on kept-alive connections (issue 22's acceptance).

    .venv/bin/python -m benchmarks.bench_api_wrk                  # ~3 min: seed, bikes, 3 x 15 s
    .venv/bin/python -m benchmarks.bench_api_wrk --profile --logs DIR  # up under cProfile
    .venv/bin/python -m benchmarks.bench_api_wrk --time-store     # + its store calls per route

`tagtrail up` runs as a process of its own (own data folder, own local broker, own port), with the
limits per client address and per key lifted (every request comes from this machine, and the
run measures the service, not its limiter). It is seeded as a user would: `tagtrail simulate
--start yesterday` (a day of a city at --scale), `tagtrail readers import`, `tagtrail replay
--wait`; then the pipeline is idle. Keys are minted on the API (POST /v1/keys with the run's
admin key), owners register bikes seen that day (POST /v1/bikes), and wrk (`--latency`, one
script, benchmarks/wrk_requests.lua, rotating over a file of requests) loads each route for
--seconds with --connections kept-alive connections. Statuses are counted per route (a theft
report of a bike whose case is already open answers 409: counted apart, not as served).
Saves results/bench_api_wrk.json and prints a table beside the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.e2e_procs import env_for, free_port, spawn, stop, wait_up
from core.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
LUA = Path(__file__).resolve().with_name("wrk_requests.lua")
REASON = "bench+wrk+load+test"
# Issue 22, idle pipeline, keep-alive, 16 connections.
TARGETS = {
    "last_seen_police": {"req_per_s": 1500.0, "p99_ms": 20.0},
    "post_thefts": {"req_per_s": 300.0, "p99_ms": 50.0},
}
LIFTED = {  # measure the service, not its limiter: one client address, few keys
    "TAGTRAIL_API_RATE_PER_S": "1e9",
    "TAGTRAIL_API_RATE_BURST": str(10**9),
    "TAGTRAIL_API_ADDRESS_RATE_PER_S": "1e9",
    "TAGTRAIL_API_ADDRESS_RATE_BURST": str(10**9),
}


# ---- wrk: request files and its output ----------------------------------------------------------


def request_line(method: str, path: str, key: str | None = None, body: Any = None) -> str:
    """One line of a wrk_requests.lua request file."""
    payload = "-" if body is None else json.dumps(body, separators=(",", ":"))
    for field in (method, path, key or "-", payload):
        if "\t" in field or "\n" in field:
            raise ValueError(f"tab or newline in a request field: {field!r}")
    return f"{method}\t{path}\t{key or '-'}\t{payload}"


def write_requests(path: Path, lines: list[str]) -> Path:
    if not lines:
        raise ValueError("no requests")
    path.write_text("\n".join(lines) + "\n")
    return path


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if m is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, latency percentiles (ms), counts and statuses from `wrk --latency` with our script."""
    out: dict[str, Any] = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{text[-2000:]}")
    out["req_per_s"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", text, re.M)
    if m is not None:
        out["requests"] = int(m.group(1))
        out["duration_s"] = round(_ms(m.group(2)) / 1000, 2)
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", text, re.M):
        out[f"p{pct}_ms"] = round(_ms(value), 3)
    m = re.search(r"^\s*Non-2xx or 3xx responses: (\d+)", text, re.M)
    out["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
        if m
        else {}
    )
    m = re.search(r"^STATUS (\{.*\})$", text, re.M)
    out["statuses"] = {k: int(v) for k, v in json.loads(m.group(1)).items()} if m else {}
    m = re.search(r"^LATENCY_US (\{.*\})$", text, re.M)
    if m is not None:
        lat = json.loads(m.group(1))
        out["p999_ms"] = round(lat["p999"] / 1000, 3)
        out["max_ms"] = round(lat["max"] / 1000, 3)
        out["mean_ms"] = round(lat["mean"] / 1000, 3)
    served = sum(v for k, v in out["statuses"].items() if k.startswith("2"))
    if "duration_s" in out and out["duration_s"] > 0:
        out["served_2xx_per_s"] = round(served / out["duration_s"], 1)
    return out


def wrk_command(
    url: str, requests_file: Path, *, seconds: float, connections: int, threads: int
) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        "--timeout", "10s", "-s", str(LUA), url, "--", str(requests_file), str(threads),
    ]  # fmt: skip


def run_wrk(
    url: str, requests_file: Path, *, seconds: float, connections: int, threads: int
) -> dict[str, Any]:
    cmd = wrk_command(url, requests_file, seconds=seconds, connections=connections, threads=threads)
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr[-2000:]}")
    return {"load_1min_at_start": round(load, 2), **parse_wrk(p.stdout), "wrk_output": p.stdout}


# ---- the service ---------------------------------------------------------------------------------


def cli(args: list[str], env: dict[str, str], log: Path, timeout_s: float = 600) -> None:
    with log.open("ab") as f:
        f.write(f"$ tagtrail {' '.join(args)}\n".encode())
        f.flush()
        p = subprocess.run(
            [sys.executable, "-m", "tagtrail.cli", *args],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )
    if p.returncode != 0:
        raise RuntimeError(f"tagtrail {args[0]} failed ({p.returncode}): {log.read_text()[-2000:]}")


async def mint_key(http: httpx.AsyncClient, admin: str, role: str, name: str) -> str:
    body = {"role": role, "name": name, "owner_id": name if role == "owner" else None}
    r = await http.post("/v1/keys", json=body, headers={"Authorization": f"Bearer {admin}"})
    r.raise_for_status()
    return str(r.json()["key"])


async def register_bikes(
    http: httpx.AsyncClient, owners: list[str], tags: list[int], concurrency: int = 8
) -> list[tuple[str, int]]:
    """Bike i to owner i % len(owners); (key, tag) of each bike registered."""
    todo = [(owners[i % len(owners)], tag) for i, tag in enumerate(tags)]
    done: list[tuple[str, int]] = []
    it = iter(todo)

    async def one() -> None:
        for key, tag in it:
            body = {"tag_id": tag, "plate": f"B{tag % 10**9}", "model": "bench", "colour": "grey"}
            r = await http.post("/v1/bikes", json=body, headers={"Authorization": f"Bearer {key}"})
            if r.status_code == 201:
                done.append((key, tag))

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


def seen_tags(sim: Path) -> list[int]:
    t = pq.read_table(sim / "truth_passages.parquet", columns=["tag_id"])
    return sorted(int(x) for x in pc.unique(t["tag_id"]).to_pylist())


async def prepare(url: str, admin: str, sim: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Keys, bikes and the three request files; figures of the preparation."""
    rng = random.Random(22)
    tags = seen_tags(sim)
    rng.shuffle(tags)
    start_ms = json.loads((sim / "manifest.json").read_text())["config"]["start_ms"]
    work = sim.parent
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        police = await mint_key(http, admin, "police", "bench-police")
        owners = [await mint_key(http, admin, "owner", f"bench-owner-{i}") for i in range(a.owners)]
        t = time.perf_counter()
        bikes = await register_bikes(http, owners, tags[: a.bikes])
        register_s = time.perf_counter() - t
    # Stolen on the simulated day's morning: the back-search finds that day's sightings since.
    stolen_at = start_ms + 6 * 3_600_000
    files = {
        "healthz": write_requests(work / "healthz.tsv", [request_line("GET", "/healthz")]),
        "last_seen_police": write_requests(
            work / "last_seen.tsv",
            [
                request_line("GET", f"/v1/bikes/{tag}/last-seen?reason={REASON}", police)
                for tag in tags[: a.lookup_tags]
            ],
        ),
        "post_thefts": write_requests(
            work / "thefts.tsv",
            [
                request_line("POST", "/v1/thefts", key, {"tag_id": tag, "stolen_at": stolen_at})
                for key, tag in bikes
            ],
        ),
    }
    return {
        "files": files,
        "tags_seen": len(tags),
        "owners": a.owners,
        "bikes_registered": len(bikes),
        "register_s": round(register_s, 1),
        "lookup_tags": min(a.lookup_tags, len(tags)),
        "stolen_at": stolen_at,
    }


def store_calls(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    """The store calls `up_store_timed` counted since the last ask (and a fresh count)."""
    path.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("up_store_timed wrote no store_calls.json")
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def seed(env: dict[str, str], sim: Path, a: argparse.Namespace, log: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    cli(
        ["simulate", str(sim), "--start", "yesterday", "--scale", str(a.scale),
         "--duration-s", str(a.duration_s)],
        env, log,
    )  # fmt: skip
    t1 = time.perf_counter()
    cli(["readers", "import", str(sim / "readers.parquet")], env, log)
    cli(["replay", str(sim / "reads.parquet"), "--wait"], env, log, timeout_s=1800)
    t2 = time.perf_counter()
    manifest = json.loads((sim / "manifest.json").read_text())
    return {
        "scale": a.scale,
        "duration_s": a.duration_s,
        "reads": manifest["reads"],
        "readers": manifest["readers"],
        "passages": manifest["passages"],
        "simulate_s": round(t1 - t0, 1),
        "import_and_replay_s": round(t2 - t1, 1),
    }


def run(a: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (deploy/apt-packages.txt lists it)")
    out: dict[str, Any] = {
        "command": "python -m benchmarks.bench_api_wrk " + " ".join(sys.argv[1:]),
        "args": {k: v for k, v in vars(a).items() if k not in ("logs", "out")},
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "targets": TARGETS,
        "connections": a.connections,
        "threads": a.threads,
        "seconds": a.seconds,
        "lifted_limits": LIFTED,
    }
    with tempfile.TemporaryDirectory(prefix="bench_api_wrk_") as tmp:
        work = Path(tmp)
        settings = load_settings(data_dir=work / "data")
        port = free_port()
        env = env_for(settings, "", TAGTRAIL_API_PORT=str(port), **LIFTED)
        logs = Path(a.logs) if a.logs else work
        logs.mkdir(parents=True, exist_ok=True)
        up_log = logs / "up.log"
        timings = work / "store_calls.json"
        if a.time_store:  # the same `tagtrail up`, its store calls timed (up_store_timed.py)
            with up_log.open("wb") as f:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.up_store_timed", str(timings), "up"],
                    env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        else:
            proc = spawn(["up"], env, up_log, profile=a.profile)
        try:
            up = asyncio.run(wait_up(settings, proc, up_log))
            out["seed"] = seed(env, work / "sim", a, logs / "seed.log")
            print(f"seeded: {out['seed']}", flush=True)
            prep = asyncio.run(prepare(up.api_url, up.admin_key, work / "sim", a))
            files = prep.pop("files")
            out["prepare"] = prep
            print(f"prepared: {prep}", flush=True)
            # The replay's work (merges, the broker) winds down before anything is measured.
            time.sleep(a.settle_s)
            out["load_1min_after_settle"] = round(os.getloadavg()[0], 2)
            kw = {"seconds": a.seconds, "connections": a.connections, "threads": a.threads}
            # Warm-up (discarded): first queries, connection set-up, code paths.
            run_wrk(up.api_url, files["last_seen_police"], **(kw | {"seconds": 2}))
            out["routes"] = {}
            for name in ("healthz", "last_seen_police", "post_thefts"):
                if a.time_store:
                    store_calls(proc, timings)  # from here on: this route's calls
                r = run_wrk(up.api_url, files[name], **kw)
                if a.time_store:
                    r["store_calls"] = store_calls(proc, timings)
                r["command"] = " ".join(wrk_command(up.api_url, files[name], **kw))
                out["routes"][name] = r
                print(f"{name}: {r['req_per_s']:.0f} req/s, statuses {r['statuses']}", flush=True)
        finally:
            stop(proc)
            if a.profile:
                out["profile"] = str(up_log.with_suffix(".prof"))
    out["load_1min_at_end"] = round(os.getloadavg()[0], 2)
    out["met"] = {
        name: (
            out["routes"][name]["req_per_s"] >= t["req_per_s"]
            and out["routes"][name].get("p99_ms", float("inf")) <= t["p99_ms"]
        )
        for name, t in TARGETS.items()
    }
    return out


def table(out: dict[str, Any]) -> str:
    rows = [
        "| route | req/s | p50 ms | p99 ms | statuses | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in out["routes"].items():
        t = TARGETS.get(name)
        target = "floor"
        if t is not None:
            ok = "met" if out["met"][name] else "MISSED"
            target = f">= {t['req_per_s']:,.0f} req/s, p99 <= {t['p99_ms']:.0f} ms: {ok}"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        rows.append(
            f"| {name} | {r['req_per_s']:,.0f} | {r.get('p50_ms', float('nan')):.1f} | "
            f"{r.get('p99_ms', float('nan')):.1f} | {statuses} | {target} |"
        )
    return "\n".join(rows)


def store_notes(out: dict[str, Any]) -> list[str]:
    """Per route (with --time-store): how busy the one store thread was, and on what."""
    notes = []
    for name, r in out["routes"].items():
        calls = r.get("store_calls")
        if not calls:
            continue
        busy = sum(c["run_s_total"] for c in calls.values())
        top = sorted(calls.items(), key=lambda kv: -kv[1]["run_s_total"])[:4]
        what = ", ".join(
            f"{n.rsplit('.', 1)[-1]} {c['calls']} x {c['run_ms_mean']:.1f} ms" for n, c in top
        )
        n = max(sum(int(v) for v in r["statuses"].values()), 1)
        notes.append(
            f"{name}: store thread busy {busy:.1f} s of {r.get('duration_s', 0):g} s "
            f"({busy / n * 1000:.1f} ms per request): {what}"
        )
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.02, help="city scale of the simulated day")
    ap.add_argument("--duration-s", type=float, default=86_400, help="simulated seconds")
    ap.add_argument("--seconds", type=float, default=15, help="wrk duration per route")
    ap.add_argument("--settle-s", type=float, default=30, help="idle wait before measuring")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--owners", type=int, default=50)
    ap.add_argument("--bikes", type=int, default=3000, help="bikes registered (theft reports)")
    ap.add_argument("--lookup-tags", type=int, default=20_000, help="tags police look up")
    ap.add_argument("--profile", action="store_true", help="run tagtrail up under cProfile")
    ap.add_argument("--time-store", action="store_true", help="time up's store calls per route")
    ap.add_argument("--logs", default="", help="keep up.log and seed.log in this folder")
    ap.add_argument("--out", default=str(RESULTS / "bench_api_wrk.json"))
    a = ap.parse_args()
    if a.profile and not a.logs:
        ap.error("--profile needs --logs (where up.prof is kept)")
    out = run(a)
    print(table(out))
    for note in store_notes(out):
        print(note)
    s = out["seed"]
    print(
        f"store: {s['reads']:,} reads replayed ({s['passages']:,} passages, scale {s['scale']}); "
        f"{out['prepare']['bikes_registered']:,} bikes; load {out['load_1min_at_start']} at start"
    )
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for r in out["routes"].values():
        r.pop("wrk_output", None)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
