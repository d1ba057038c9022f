"""Synthetic readers and sightings (numpy only) for tests, benchmarks and demos of the store."""

from __future__ import annotations

import numpy as np
from h3.api import basic_int as h3i

from core.records.sightings import SIGHTING_DTYPES

# Kunming's central districts, roughly.
LAT_RANGE = (24.95, 25.12)
LON_RANGE = (102.62, 102.82)
DAY_MS = 86_400_000


def make_readers(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """`n` fixed readers scattered over the city with their H3 cells (res 7, 9, 12)."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(*LAT_RANGE, n)
    lon = rng.uniform(*LON_RANGE, n)
    # One H3 call per reader (thousands), not per sighting: sightings copy their reader's cells.
    cells = {
        r: np.array([h3i.latlng_to_cell(a, o, r) for a, o in zip(lat, lon, strict=True)], np.uint64)
        for r in (7, 9, 12)
    }
    return {
        "reader_id": np.arange(1, n + 1, dtype=np.uint32),
        "lat": lat,
        "lon": lon,
        "kind": np.ones(n, np.int8),
        "gateway_id": (np.arange(n) // 16 + 1).astype(np.uint32),
        "district": np.array([f"d{i % 6}" for i in range(n)], dtype=object),
        "h3_r7": cells[7],
        "h3_r9": cells[9],
        "h3_r12": cells[12],
        "updated_at": np.zeros(n, np.int64),
    }


def make_sightings(
    n: int, readers: dict[str, np.ndarray], *, n_tags: int, day_start_ms: int, seed: int = 2
) -> dict[str, np.ndarray]:
    """About `n` sightings over one day, unique by (tag_id, reader_id, first_ts), key-sorted."""
    rng = np.random.default_rng(seed)
    ri = rng.integers(0, len(readers["reader_id"]), n)
    tag = rng.integers(1, n_tags + 1, n).astype(np.uint64)
    first = day_start_ms + rng.integers(0, DAY_MS, n).astype(np.int64)
    # Sighting identity must be unique; sort by the table key so batches look like real ones.
    order = np.lexsort((readers["reader_id"][ri], first, tag))
    tag, first, ri = tag[order], first[order], ri[order]
    keep = np.ones(len(tag), bool)
    keep[1:] = (tag[1:] != tag[:-1]) | (first[1:] != first[:-1]) | (ri[1:] != ri[:-1])
    tag, first, ri = tag[keep], first[keep], ri[keep]
    m = len(tag)
    cols = {
        "tag_id": tag,
        "reader_id": readers["reader_id"][ri],
        "first_ts": first,
        "last_ts": first + rng.integers(0, 120_000, m),
        "n_reads": rng.integers(1, 30, m).astype(np.uint32),
        "max_rssi": rng.integers(-90, -30, m).astype(np.int8),
        "lat": readers["lat"][ri],
        "lon": readers["lon"][ri],
        "h3_r7": readers["h3_r7"][ri],
        "h3_r9": readers["h3_r9"][ri],
        "h3_r12": readers["h3_r12"][ri],
    }
    return {k: v.astype(SIGHTING_DTYPES[k], copy=False) for k, v in cols.items()}
