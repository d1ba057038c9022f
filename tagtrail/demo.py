"""`tagtrail demo`: a small simulated city through the whole real pipeline, then a summary."""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from core.config import Settings
from ingest.replay import replay
from ingest.simulator.config import DEFAULT_START_MS
from ingest.simulator.parquet import run_simulation_to_parquet
from stream.kafka.progress import wait_drained
from tagtrail.up import Pipeline

RUSH_HOUR_MS = int(7.5 * 3600 * 1000)
DAY_MS = 86_400_000


def yesterday_rush_hour_ms() -> int:
    """Yesterday's morning rush hour (local time): recent enough for retention, all in the past."""
    days = (int(time.time() * 1000) - DEFAULT_START_MS) // DAY_MS - 1
    return DEFAULT_START_MS + days * DAY_MS + RUSH_HOUR_MS


async def _demo(
    settings: Settings, scale: float, minutes: int, seed: int, console: Console
) -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        sim_dir = Path(tmp)
        with console.status("simulating the city"):
            run_simulation_to_parquet(
                sim_dir,
                scale=scale,
                duration_s=minutes * 60,
                seed=seed,
                start_ms=yesterday_rush_hour_ms(),
            )
        readers = (
            pq.read_table(sim_dir / "readers.parquet")
            .select(["reader_id", "lat", "lon", "kind"])
            .to_pylist()
        )
        with console.status("starting Kafka, the store, the worker and the API"):
            pipeline = await Pipeline(settings).start()
        try:
            async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=60) as http:
                admin = {"Authorization": f"Bearer {pipeline.admin_key}"}
                r = await http.post("/v1/readers", json={"readers": readers}, headers=admin)
                r.raise_for_status()
                while len(pipeline.registry.registry.reader_id) < len(readers):
                    await asyncio.sleep(0.1)
                with console.status("replaying reads through Kafka"):
                    t1 = time.monotonic()
                    messages, n_reads = await replay(
                        sim_dir / "reads.parquet", pipeline.bootstrap, settings.topic_reads
                    )
                    await wait_drained(settings, pipeline.bootstrap)
                    elapsed = time.monotonic() - t1
                r = await http.post(
                    "/v1/keys", json={"role": "police", "name": "demo desk"}, headers=admin
                )
                police = {"Authorization": f"Bearer {r.json()['key']}"}
                got = await http.get("/v1/export/sightings", headers=admin)
                sightings = pq.read_table(io.BytesIO(got.content))
                tags = sightings.column("tag_id").to_numpy()
                if len(tags) == 0:
                    raise SystemExit(
                        f"demo failed: no sightings were stored (worker: "
                        f"{pipeline.app.state}, sink: {pipeline.sink.counters})"
                    )
                # The most-seen bike makes the most telling sample.
                uniq, counts = np.unique(tags, return_counts=True)
                sample_tag = int(uniq[counts.argmax()])
                last = await http.get(
                    f"/v1/bikes/{sample_tag}/last-seen", params={"reason": "demo"}, headers=police
                )
        finally:
            await pipeline.stop()
    table = Table(title="tagtrail demo", show_header=False)
    table.add_row("reads published", f"{n_reads:,} in {messages:,} gateway batches")
    table.add_row("sightings stored", f"{sightings.num_rows:,} for {len(np.unique(tags)):,} bikes")
    table.add_row(
        "replay -> stored", f"{elapsed:.1f} s ({n_reads / max(elapsed, 1e-9):,.0f} reads/s)"
    )
    table.add_row(f"last seen, tag {sample_tag}", last.text)
    table.add_row("total time", f"{time.monotonic() - t0:.1f} s")
    console.print(table)
    if last.status_code != 200 or sightings.num_rows == 0:
        raise SystemExit(1)


def run_demo(
    settings: Settings, *, scale: float, minutes: int, seed: int, console: Console
) -> None:
    asyncio.run(_demo(settings, scale, minutes, seed, console))
