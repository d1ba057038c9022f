"""Replay of recorded reads: a Parquet read file published as gateway batches, in send order."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from core.records.reads import Reads
from ingest.exceptions import IngestError
from ingest.publisher import GatewayPublisher

REQUIRED = ("tag_id", "reader_id", "ts_ms", "rssi_dbm", "flags", "lat", "lon", "gateway_id")
MAX_BATCH_READS = 4096


def read_file(path: Path) -> tuple[Reads, np.ndarray, np.ndarray]:
    """(reads, gateway_id, batch boundaries) of a read file; a bad file raises IngestError."""
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise IngestError(f"{path}: not a readable Parquet file ({e})") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)}")
    reads = Reads.from_arrow(table)
    gateway = table.column("gateway_id").to_numpy().astype(np.uint32)
    # A batch is a run of one gateway's reads (and one send, when the file records it).
    keys = [gateway]
    for extra in ("batch_seq", "arrival_ms"):
        if extra in table.column_names:
            keys.append(table.column(extra).to_numpy())
    change = np.zeros(len(reads), bool)
    if len(reads):
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return reads, gateway, starts


def iter_batches(
    reads: Reads, gateway: np.ndarray, starts: np.ndarray
) -> Iterator[tuple[Reads, int]]:
    bounds = np.append(starts, len(reads))
    for a, b in itertools.pairwise(bounds):
        for lo in range(int(a), int(b), MAX_BATCH_READS):
            hi = min(int(b), lo + MAX_BATCH_READS)
            yield reads.take(np.arange(lo, hi)), int(gateway[lo])


async def replay(
    path: Path,
    bootstrap: str,
    topic: str,
    progress: Callable[[int, int], None] | None = None,
    chunk_batches: int = 2000,
) -> tuple[int, int]:
    """Publish a read file; return (messages, reads). Progress gets (reads done, total)."""
    reads, gateway, starts = read_file(path)
    total = messages = done = 0
    total = len(reads)
    async with GatewayPublisher(bootstrap, topic) as pub:
        chunk: list[tuple[Reads, int]] = []
        for item in iter_batches(reads, gateway, starts):
            chunk.append(item)
            if len(chunk) >= chunk_batches:
                stats = await pub.publish_many(chunk)
                messages, done = messages + stats.messages, done + stats.reads
                chunk = []
                if progress:
                    progress(done, total)
        if chunk:
            stats = await pub.publish_many(chunk)
            messages, done = messages + stats.messages, done + stats.reads
        if progress:
            progress(done, total)
    return messages, done
