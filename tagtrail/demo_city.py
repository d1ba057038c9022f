"""The demo's city: a small simulated morning split into history and a live part, the bike
whose theft the demo reports, and the live part's reads published at their own pace."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from core.errors import TagtrailError
from core.records.reads import FLAG_MOBILE
from ingest.publisher import GatewayPublisher
from ingest.replay import read_file
from ingest.simulator.config import DEFAULT_START_MS, LOCAL_UTC_OFFSET_MS
from ingest.simulator.parquet import run_simulation_to_parquet

RUSH_HOUR_MS = int(7.5 * 3600 * 1000)
DAY_MS = 86_400_000
LIVE_TICK_S = 0.05  # batches due within this are sent together


def yesterday_rush_hour_ms() -> int:
    """Yesterday's morning rush hour (local time): recent enough for retention, all in the past."""
    days = (int(time.time() * 1000) - DEFAULT_START_MS) // DAY_MS - 1
    return DEFAULT_START_MS + days * DAY_MS + RUSH_HOUR_MS


def clock(ms: int) -> str:
    """A time of the simulated city, on its local clock (UTC+8)."""
    return time.strftime("%H:%M:%S", time.gmtime((ms + LOCAL_UTC_OFFSET_MS) / 1000))


@dataclass
class City:
    """The simulated city's files, split into history (replayed at once) and the live part."""

    folder: Path
    readers: list[dict[str, Any]]
    start_ms: int
    split_ms: int
    end_ms: int
    n_reads: int = 0


@dataclass
class Bike:
    tag_id: int
    plate: str
    stolen_at: int


def simulate(folder: Path, *, scale: float, minutes: int, seed: int) -> City:
    start = yesterday_rush_hour_ms()
    run_simulation_to_parquet(
        folder, scale=scale, duration_s=minutes * 60, seed=seed, start_ms=start
    )
    live_min = max(2, minutes // 5)
    end = start + minutes * 60_000
    city = City(
        folder=folder,
        readers=pq.read_table(folder / "readers.parquet")
        .select(["reader_id", "lat", "lon", "kind"])
        .to_pylist(),
        start_ms=start,
        split_ms=end - live_min * 60_000,
        end_ms=end,
    )
    # Both parts stay in send order (arrival at Kafka), as reads.parquet is.
    table = pq.read_table(folder / "reads.parquet")
    city.n_reads = table.num_rows
    early = table.column("arrival_ms").to_numpy() < city.split_ms
    pq.write_table(table.filter(early), folder / "history.parquet")
    pq.write_table(table.filter(~early), folder / "live.parquet")
    return city


def choose_bike(city: City) -> Bike:
    """A bike seen before the split and then at the most fixed readers in the live part."""
    cols = ["tag_id", "reader_id", "ts_ms", "flags"]
    hist = pq.read_table(city.folder / "history.parquet", columns=cols)
    live = pq.read_table(city.folder / "live.parquet", columns=cols)
    fixed = (live.column("flags").to_numpy() & FLAG_MOBILE) == 0
    ok = fixed & (live.column("ts_ms").to_numpy() >= city.split_ms)
    pairs = np.unique(
        np.stack([live.column("tag_id").to_numpy()[ok], live.column("reader_id").to_numpy()[ok]]),
        axis=1,
    )
    tags, n_readers = np.unique(pairs[0], return_counts=True)
    seen_before = np.isin(tags, hist.column("tag_id").to_numpy())
    if not seen_before.any():
        raise TagtrailError(
            "the simulated city is too small for the story (no bike seen both before and "
            "during the live part): give a larger --scale or --minutes"
        )
    tag = int(tags[seen_before][np.argmax(n_readers[seen_before])])
    # Stolen a minute before the live part: the report comes in as it starts.
    stolen_at = (city.split_ms - 60_000) // 60_000 * 60_000
    return Bike(tag_id=tag, plate=f"KM-{tag % 100_000:05d}", stolen_at=stolen_at)


async def publish_paced(path: Path, bootstrap: str, topic: str, speed: float) -> int:
    """Publish a read file's gateway batches when they arrived, `speed` times faster."""
    reads, gateway, starts = read_file(path)
    if not len(reads):
        return 0
    arrival = pq.read_table(path, columns=["arrival_ms"]).column("arrival_ms").to_numpy()
    due = (arrival[starts] - arrival[0]) / 1000.0 / speed
    bounds = np.append(starts, len(reads))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = i = 0
    async with GatewayPublisher(bootstrap, topic) as pub:
        while i < len(starts):
            wait = t0 + float(due[i]) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            horizon = loop.time() - t0 + LIVE_TICK_S
            chunk = []
            while i < len(starts) and due[i] <= horizon:
                chunk.append((reads.take(np.arange(bounds[i], bounds[i + 1])), int(gateway[i])))
                i += 1
            sent += (await pub.publish_many(chunk)).reads
    return sent
