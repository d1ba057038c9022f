"""The query library used by the recovery API and the dashboards (numpy columns in, out).

Every answer is exact under the stream's upserts and retractions: sightings are read with FINAL
(latest version, retracted ones gone); the area index, keyed by cell, is checked against the
identity-keyed time index (a sighting may have moved cell or been retracted by a row without its
cell); the heatmap counts live rows of the time index; last_seen reads the per-(tag, reader)
latest sightings. Times are int64 UTC epoch milliseconds; windows
are [from_ms, to_ms) and match sightings that overlap them (heatmap: that begin in them).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
from h3.api import basic_int as h3i

from core.records.sightings import SIGHTING_COLUMNS, SIGHTING_FIELDS, Sighting
from store.health import ReaderHealth, reader_health
from store.store import Store
from store.writes import insert_raw_reads, insert_sightings, upsert_readers

__all__ = [
    "ReaderHealth",
    "Sighting",
    "area_cells",
    "export_sightings",
    "heatmap",
    "insert_raw_reads",
    "insert_sightings",
    "last_seen",
    "reader_health",
    "sightings_in_area",
    "track",
    "upsert_readers",
]

# Every version of a sighting lives in the partition of its first_ts, so FINAL need not merge
# across partitions (much faster on many days).
_FINAL = "SETTINGS do_not_merge_across_partitions_select_final = 1"
# Point queries read a few granules: one thread avoids the cost of starting a pool, which would
# be most of the query's time.
_POINT = _FINAL + ", max_threads = 1"
# A located sighting (core.records.sightings.Sighting); tracks and areas add its read count and
# signal; exports have every contract column.
_LAST_COLS = ", ".join(SIGHTING_FIELDS)
_TRACK_COLS = ", ".join((*SIGHTING_FIELDS, "n_reads", "max_rssi"))
EXPORT_COLS = ", ".join(SIGHTING_COLUMNS)


def track(store: Store, tag_id: int, from_ms: int, to_ms: int) -> dict[str, np.ndarray]:
    """The sightings of one tag overlapping [from_ms, to_ms), ordered by first_ts."""
    return store.backend.query_columns(
        f"SELECT {_TRACK_COLS} FROM sightings FINAL "
        "WHERE tag_id = {tag:UInt64} AND first_ts < {to:Int64} AND last_ts >= {from:Int64} "
        f"ORDER BY first_ts, reader_id {_POINT}",
        {"tag": int(tag_id), "from": int(from_ms), "to": int(to_ms)},
    )


def last_seen(store: Store, tag_id: int) -> Sighting | None:
    """The tag's most recent sighting (by last_ts, then first_ts, reader_id), or None if it was
    never seen (or all its sightings are past retention)."""
    # Each reader's latest (see migration 0005), best first. The first one not retracted is the
    # answer unless a retracted one, whose reader's live sightings end no later than it does,
    # could tie or beat it: then (rarely, in a stream) scan the tag's sightings.
    params = {"tag": int(tag_id)}
    horizon = time.time_ns() // 1_000_000 - store.settings.sightings_ttl_days * 86_400_000
    rows = store.backend.execute(
        "SELECT l.1 AS last_ts, l.3 AS first_ts, reader_id, l.4, l.5, l.6, has(r, l.3) FROM ("
        "SELECT reader_id, max(latest) AS l, groupUniqArrayArray(retracted) AS r "
        "FROM tag_reader_latest WHERE tag_id = {tag:UInt64} GROUP BY reader_id) "
        "WHERE first_ts >= {horizon:Int64} "
        "ORDER BY last_ts DESC, first_ts DESC, reader_id DESC SETTINGS max_threads = 1",
        {**params, "horizon": horizon},
    )
    best = next((row for row in rows if not row[6]), None)
    if best is not None and not any(row[6] and row[0] >= best[0] for row in rows):
        la, f, r, lat, lon, c, _ = best
        return Sighting(int(tag_id), int(r), int(f), int(la), float(lat), float(lon), int(c))
    if best is None and not rows:
        return None  # every live row goes through tag_reader_latest: never seen
    rows = store.backend.execute(
        f"SELECT {_LAST_COLS} FROM sightings FINAL WHERE tag_id = {{tag:UInt64}} "
        f"ORDER BY last_ts DESC, first_ts DESC, reader_id DESC LIMIT 1 {_POINT}",
        params,
    )
    if not rows:
        return None
    t, r, f, la, lat, lon, c = rows[0]
    return Sighting(int(t), int(r), int(f), int(la), float(lat), float(lon), int(c))


def area_cells(lat: float, lon: float, radius_m: float, res: int = 9) -> np.ndarray:
    """Res-`res` cells that together cover the disc of `radius_m` around (lat, lon)."""
    edge_m = h3i.average_hexagon_edge_length(res, unit="m")
    # A point within radius_m lies in a cell whose centre is within radius_m + one edge; cell
    # centres are sqrt(3) edges apart, and edges vary ~±30 % over the globe, hence the margin.
    k = math.ceil((radius_m + edge_m) / (math.sqrt(3) * edge_m * 0.7))
    centre = h3i.latlng_to_cell(lat, lon, res)
    return np.array(sorted(h3i.grid_disk(centre, k)), dtype=np.uint64)


def _haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    p1, p0 = np.radians(lat1), math.radians(lat0)
    dphi, dl = p1 - p0, np.radians(lon1 - lon0)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * math.cos(p0) * np.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


def sightings_in_area(
    store: Store,
    from_ms: int,
    to_ms: int,
    *,
    cells: np.ndarray | list[int] | None = None,
    lat: float | None = None,
    lon: float | None = None,
    radius_m: float | None = None,
) -> dict[str, np.ndarray]:
    """Sightings in res-9 `cells` (or within `radius_m` of lat/lon) overlapping the window.

    Ordered by (first_ts, tag_id, reader_id). With lat/lon the disc is covered by cells, then
    filtered by great-circle distance (sphere of mean Earth radius).
    """
    by_disc = lat is not None and lon is not None and radius_m is not None
    if by_disc:
        cell_list = area_cells(float(lat), float(lon), float(radius_m))  # type: ignore[arg-type]
    elif cells is not None:
        cell_list = np.asarray(cells, dtype=np.uint64)
    else:
        raise ValueError("sightings_in_area: give `cells` or lat, lon and radius_m")
    out = store.backend.query_columns(
        f"SELECT {_TRACK_COLS}, version FROM sightings_by_cell FINAL "
        "WHERE h3_r9 IN {cells:Array(UInt64)} AND first_ts < {to:Int64} "
        "AND last_ts >= {from:Int64} "
        f"ORDER BY first_ts, tag_id, reader_id {_POINT}",
        {"cells": [int(c) for c in cell_list], "from": int(from_ms), "to": int(to_ms)},
    )
    out = _current_only(store, out)
    if by_disc and out:
        keep = _haversine_m(out["lat"], out["lon"], float(lat), float(lon)) <= radius_m  # type: ignore[arg-type]
        out = {k: v[keep] for k, v in out.items()}
    return out


def _current_only(store: Store, cand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The area-index rows that are their sighting's current live version.

    The area index is keyed by cell, so a sighting upserted into another cell, or retracted by a
    row without its cell, leaves its old row live there. sightings_by_time is keyed by identity
    alone, so its FINAL row is the current one: keep a candidate only if it has that version.
    Every true answer is a candidate (its current row went to its cell's index), so this is exact.
    """
    if not cand or len(cand["tag_id"]) == 0:
        return {k: v for k, v in cand.items() if k != "version"}
    cur = store.backend.query_columns(
        "SELECT tag_id, reader_id, first_ts, version FROM sightings_by_time FINAL "
        "WHERE first_ts IN {fs:Array(Int64)} AND tag_id IN {tags:Array(UInt64)} "
        f"{_POINT}",
        {
            "fs": np.unique(cand["first_ts"]).tolist(),
            "tags": np.unique(cand["tag_id"]).tolist(),
        },
    )
    key = ["tag_id", "reader_id", "first_ts", "version"]
    have = (
        pd.MultiIndex.from_arrays([cur[k] for k in key])
        if cur
        else pd.MultiIndex.from_arrays([np.empty(0, np.uint64)] * len(key))
    )
    keep = pd.MultiIndex.from_arrays([cand[k] for k in key]).isin(have)
    return {k: v[keep] for k, v in cand.items() if k != "version"}


def heatmap(store: Store, res: int, from_ms: int, to_ms: int) -> dict[str, np.ndarray]:
    """Per res-`res` cell: distinct tags and live sightings with first_ts in [from_ms, to_ms).

    Exact under upserts and retractions (read with FINAL from the identity-keyed time index).
    A sighting's cell is taken from its own cell at the nearest stored resolution at or above
    `res` (7, 9 or 12), then its parent. Columns: cell, tags, sightings (by cell).
    """
    if not 0 <= res <= 12:
        raise ValueError(f"heatmap: resolution {res} outside 0..12")
    col = "h3_r7" if res <= 7 else "h3_r9" if res <= 9 else "h3_r12"
    return store.backend.query_columns(
        f"SELECT h3ToParent({col}, {{res:UInt8}}) AS cell, uniqExact(tag_id) AS tags, "
        "count() AS sightings FROM sightings_by_time FINAL "
        f"WHERE first_ts >= {{from:Int64}} AND first_ts < {{to:Int64}} AND {col} != 0 "
        f"GROUP BY cell ORDER BY cell {_FINAL}",
        {"res": res, "from": int(from_ms), "to": int(to_ms)},
    )


def export_sightings(
    store: Store, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, np.ndarray]:
    """The current state of all sightings (first_ts in the window if given), in key order."""
    lo = -(2**63) if from_ms is None else int(from_ms)
    hi = 2**63 - 1 if to_ms is None else int(to_ms)
    return store.backend.query_columns(
        f"SELECT {EXPORT_COLS} FROM sightings FINAL "
        "WHERE first_ts >= {from:Int64} AND first_ts < {to:Int64} "
        f"ORDER BY tag_id, first_ts, reader_id {_FINAL}",
        {"from": lo, "to": hi},
    )


# -- inputs of a late-read backfill (stream.sinks.late_merge)
# ------------------------------------------


def partition_watermarks(store: Store, n_partitions: int, from_ms: int) -> dict[int, int]:
    """Per reads-topic partition (reader_id mod n_partitions): the newest stored raw read ts or
    sighting last_ts at or after `from_ms` (partitions without one are left out). A lower bound
    of what the worker of that partition has seen, once it has caught up with the raw-read sink.

    Sightings count too: raw reads expire `raw_reads_ttl_days` after their event time, so for
    reads older than that (a replay of old data) raw_reads holds nothing, while every sighting
    row was written from reads its worker had seen (last_ts: one of them)."""
    rows = store.backend.execute(
        "SELECT part, max(ts) FROM ("
        "SELECT reader_id % {n:UInt32} AS part, max(ts_ms) AS ts FROM raw_reads "
        "WHERE ts_ms >= {from:Int64} GROUP BY part "
        "UNION ALL "
        "SELECT reader_id % {n:UInt32} AS part, max(last_ts) AS ts FROM sightings "
        "WHERE last_ts >= {from:Int64} GROUP BY part"
        ") GROUP BY part",
        {"n": int(n_partitions), "from": int(from_ms)},
    )
    return {int(p): int(ts) for p, ts in rows}


def sightings_of_keys(
    store: Store, tag_id: np.ndarray, reader_id: np.ndarray
) -> dict[str, np.ndarray]:
    """The current (FINAL, live) sightings of the given (tag_id, reader_id) keys, all columns."""
    if len(tag_id) == 0:
        return {}
    got = store.backend.query_columns(
        f"SELECT {EXPORT_COLS} FROM sightings FINAL "
        "WHERE tag_id IN {tags:Array(UInt64)} AND reader_id IN {readers:Array(UInt32)} "
        f"{_FINAL}",
        {"tags": np.unique(tag_id).tolist(), "readers": np.unique(reader_id).tolist()},
    )
    if not got:
        return {}
    want = pd.MultiIndex.from_arrays([tag_id, reader_id])
    keep = pd.MultiIndex.from_arrays([got["tag_id"], got["reader_id"]]).isin(want)
    return {k: v[keep] for k, v in got.items()}


def raw_reads_between(
    store: Store, tag_id: np.ndarray, reader_id: np.ndarray, from_ms: int, to_ms: int
) -> dict[str, np.ndarray]:
    """Stored raw reads of those tags and readers with from_ms <= ts_ms <= to_ms (a superset of
    the keys' windows: callers narrow it with stream.sessionize.sessionizer.select_window)."""
    if len(tag_id) == 0:
        return {}
    return store.backend.query_columns(
        "SELECT tag_id, reader_id, ts_ms, rssi_dbm, flags, lat, lon FROM raw_reads "
        "WHERE reader_id IN {readers:Array(UInt32)} AND ts_ms >= {from:Int64} "
        "AND ts_ms <= {to:Int64} AND tag_id IN {tags:Array(UInt64)}",
        {
            "tags": np.unique(tag_id).tolist(),
            "readers": np.unique(reader_id).tolist(),
            "from": int(from_ms),
            "to": int(to_ms),
        },
    )


def max_sighting_version(store: Store, tag_id: np.ndarray) -> int:
    """The highest version of any stored row (live or retracted) of these tags; 0 if none."""
    if len(tag_id) == 0:
        return 0
    rows = store.backend.execute(
        "SELECT max(version) FROM sightings WHERE tag_id IN {tags:Array(UInt64)}",
        {"tags": np.unique(tag_id).tolist()},
    )
    return int(rows[0][0] or 0) if rows else 0
