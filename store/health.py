"""Reader health for operators: read rates per reader and the registered readers gone silent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store.store import Store


@dataclass(frozen=True, slots=True)
class ReaderHealth:
    """Parallel arrays, one entry per reader (registered, or active in the window), by reader_id."""

    reader_id: np.ndarray  # uint32
    registered: np.ndarray  # bool: present in the readers registry
    reads: np.ndarray  # uint64 raw reads in the window (0 if raw reads are not stored)
    tags: np.ndarray  # uint64 distinct tags seen
    sightings: np.ndarray  # uint64 live sightings begun (retracted identities subtracted)
    last_active_ms: np.ndarray  # int64 start of the last active minute, -1 if none
    reads_per_min: np.ndarray  # float64 over the whole window

    @property
    def silent(self) -> np.ndarray:
        """Registered readers with neither reads nor sightings in the window."""
        return self.registered & (self.last_active_ms < 0)


def reader_health(store: Store, from_ms: int, to_ms: int) -> ReaderHealth:
    """Activity of every reader over [from_ms, to_ms) (floored to whole minutes)."""
    b = store.backend
    reg = b.query_columns("SELECT reader_id FROM readers FINAL ORDER BY reader_id")
    act = b.query_columns(
        "SELECT reader_id, sum(reads) AS reads, uniqMerge(tags) AS tags, "
        "greatest(toInt64(uniqMerge(sightings)) - toInt64(uniqMerge(retracted)), 0) AS sightings, "
        "max(minute_ms) AS last_minute "
        "FROM reader_minute "
        "WHERE minute_ms >= intDiv({from:Int64}, 60000) * 60000 AND minute_ms < {to:Int64} "
        "GROUP BY reader_id ORDER BY reader_id",
        {"from": int(from_ms), "to": int(to_ms)},
    )
    reg_ids = reg.get("reader_id", np.empty(0, np.uint32)).astype(np.uint32)
    act_ids = act.get("reader_id", np.empty(0, np.uint32)).astype(np.uint32)
    ids = np.union1d(reg_ids, act_ids)
    pos = np.searchsorted(ids, act_ids)

    def spread(name: str, dtype: type, fill: int) -> np.ndarray:
        out = np.full(len(ids), fill, dtype=dtype)
        if len(act_ids):
            out[pos] = act[name].astype(dtype)
        return out

    reads = spread("reads", np.uint64, 0)
    minutes = max((to_ms - from_ms) / 60_000, 1e-9)
    return ReaderHealth(
        reader_id=ids,
        registered=np.isin(ids, reg_ids),
        reads=reads,
        tags=spread("tags", np.uint64, 0),
        sightings=spread("sightings", np.uint64, 0),
        last_active_ms=spread("last_minute", np.int64, -1),
        reads_per_min=reads / minutes,
    )
