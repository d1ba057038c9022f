"""Recovery API benchmark: requests/s and latency of POST /v1/thefts (with its back-search) and
GET /v1/bikes/{tag}/last-seen (police, audited) on a store holding a simulated day of sightings.

    .venv/bin/python -m benchmarks.bench_api                       # 1 M sightings (quick)
    .venv/bin/python -m benchmarks.bench_api --sightings 9000000   # a full city's day

The service runs in this process (its own event loop and thread, real chdb store, real local Kafka
broker started here); the load generator is an httpx client with `--concurrency` requests in
flight, so client and server share the machine (and the GIL). Prints the figures and saves them
to results/bench_api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.background_api import Service, running_service
from benchmarks.synthetic import DAY_MS, make_readers, make_sightings
from core.config import Settings, load_settings
from recovery.auth import Role, new_key
from recovery.ratelimit import RateLimiter
from store import accounts
from store.writes import insert_sightings, upsert_readers
from tagtrail.broker.launcher import LocalKafka

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _seed(svc: Service, n_sightings: int, n_tags: int, n_bikes: int, owner_id: str) -> int:
    """A day of sightings ending now, and `n_bikes` of its tags registered to one owner."""
    day0 = int(time.time() * 1000) - DAY_MS
    readers = make_readers(2000)
    s = make_sightings(n_sightings, readers, n_tags=n_tags, day_start_ms=day0)

    def load(store: object) -> int:
        upsert_readers(store, readers)  # type: ignore[arg-type]
        order = np.argsort(s["first_ts"], kind="stable")
        for i, lo in enumerate(range(0, len(order), 500_000)):
            idx = order[lo : lo + 500_000]
            insert_sightings(
                store,  # type: ignore[arg-type]
                {k: v[idx] for k, v in s.items()},
                version=1,
                dedup_token=f"bench{i}",
            )
        t = accounts.now_ms()
        n = n_bikes
        store.backend.insert_columns(  # type: ignore[attr-defined]
            "bikes",
            {
                "tag_id": np.arange(1, n + 1, dtype=np.uint64),
                "owner_id": np.full(n, owner_id, dtype=object),
                "make": np.full(n, "", dtype=object),
                "model": np.full(n, "bench", dtype=object),
                "color": np.full(n, "grey", dtype=object),
                "frame_no": np.full(n, "", dtype=object),
                "plate": np.array([f"B{i}" for i in range(1, n + 1)], dtype=object),
                "webhook_url": np.full(n, "", dtype=object),
                "registered_at": np.full(n, t, np.int64),
                "updated_at": np.full(n, t, np.int64),
                "is_deleted": np.zeros(n, np.uint8),
            },
        )
        return len(s["tag_id"])

    return svc.call(svc.ctx.runner.run(load), timeout_s=1800)


def _key(svc: Service, role: Role, owner_id: str | None = None) -> str:
    key, key_id, key_hash = new_key(role)
    svc.call(
        svc.ctx.runner.run(
            accounts.insert_key,
            key_hash=key_hash,
            key_id=key_id,
            name=f"bench {role.value}",
            role=role.value,
            owner_id=owner_id or key_id,
        )
    )
    return key


async def _load(
    url: str, requests: list[tuple[str, str, dict]], concurrency: int, expect: set[int]
) -> dict[str, float]:
    lat = np.zeros(len(requests))
    it = iter(enumerate(requests))
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i, (method, path, kw) in it:
            t = time.perf_counter()
            r = await client.request(method, path, **kw)
            lat[i] = (time.perf_counter() - t) * 1000
            errors += r.status_code not in expect

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(requests),
        "errors": errors,
        "req_per_s": len(requests) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


def run(settings: Settings, args: argparse.Namespace) -> dict:
    limiter = RateLimiter(rate_per_s=1e9, burst=10**9)  # measure the service, not the limiter
    # (every request comes from this machine: nor the limit per client address)
    settings = settings.model_copy(
        update={"api_address_rate_per_s": 1e9, "api_address_rate_burst": 10**9}
    )
    with running_service(settings, limiter=limiter) as svc:
        owner_key = _key(svc, Role.owner, owner_id="bench-owner")
        police_key = _key(svc, Role.police)
        t = time.perf_counter()
        stored = _seed(svc, args.sightings, args.tags, 2 * args.requests, "bench-owner")
        seed_s = time.perf_counter() - t
        now = int(time.time() * 1000)
        owner = {"Authorization": f"Bearer {owner_key}"}
        police = {"Authorization": f"Bearer {police_key}"}
        rng = np.random.default_rng(3)
        out: dict = {"sightings": stored, "tags": args.tags, "seed_s": seed_s, "runs": []}
        for k, conc in enumerate(sorted({1, args.concurrency})):
            # Each run reports thefts of bikes no earlier run used (one open case per bike).
            tags = range(k * args.requests + 1, (k + 1) * args.requests + 1)
            thefts = [
                ("POST", "/v1/thefts",
                 {"json": {"tag_id": tag, "stolen_at": now - 6 * 3_600_000}, "headers": owner})
                for tag in tags
            ]  # fmt: skip
            seen = [
                ("GET", f"/v1/bikes/{int(tag)}/last-seen",
                 {"params": {"reason": "bench"}, "headers": police})
                for tag in rng.integers(1, args.tags + 1, args.requests)
            ]  # fmt: skip
            out["runs"].append(
                {
                    "concurrency": conc,
                    "post_thefts": asyncio.run(_load(svc.url, thefts, conc, {201})),
                    # A random tag may never have been seen that day: 404 is a correct answer.
                    "get_last_seen_police": asyncio.run(_load(svc.url, seen, conc, {200, 404})),
                }
            )
    out["loadavg"] = os.getloadavg()
    out["cpus"] = os.cpu_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sightings", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", base.kafka_cache_dir, heap_mb=512, partitions=1)
        broker.start()
        try:
            settings = load_settings(data_dir=Path(tmp) / "data", kafka=broker.bootstrap)
            out = run(settings, args)
        finally:
            broker.stop(timeout_s=10)
            broker.kill()
    for run_ in out["runs"]:
        for name in ("post_thefts", "get_last_seen_police"):
            r = run_[name]
            print(
                f"{name:22s} concurrency {run_['concurrency']:2d}  {r['req_per_s']:7.1f} req/s  "
                f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}"
            )
    n, tags, seed_s = out["sightings"], out["tags"], out["seed_s"]
    print(f"store: {n:,} sightings of {tags:,} tags (seeded in {seed_s:.1f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_api.json").write_text(json.dumps(out, indent=2))
    print(f"saved {RESULTS / 'bench_api.json'}")


if __name__ == "__main__":
    main()
