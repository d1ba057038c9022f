"""The query library used by the recovery API and the dashboards (numpy columns in, out).

Every read of sightings uses FINAL, so an upserted or retracted sighting is seen once, in its
latest version, never beside the row it replaced. Times are int64 UTC epoch milliseconds;
windows are [from_ms, to_ms) and match sightings that overlap them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from h3.api import basic_int as h3i

from store.health import ReaderHealth, reader_health
from store.store import Store
from store.writes import insert_raw_reads, insert_sightings, upsert_readers

__all__ = [
    "LastSeen",
    "ReaderHealth",
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
_TRACK_COLS = "tag_id, reader_id, first_ts, last_ts, n_reads, max_rssi, lat, lon, h3_r9"
EXPORT_COLS = (
    "tag_id, reader_id, first_ts, last_ts, n_reads, max_rssi, lat, lon, h3_r7, h3_r9, h3_r12"
)


@dataclass(frozen=True, slots=True)
class LastSeen:
    tag_id: int
    reader_id: int
    first_ts: int
    last_ts: int
    lat: float
    lon: float
    h3_r9: int


def track(store: Store, tag_id: int, from_ms: int, to_ms: int) -> dict[str, np.ndarray]:
    """The sightings of one tag overlapping [from_ms, to_ms), ordered by first_ts."""
    return store.backend.query_columns(
        f"SELECT {_TRACK_COLS} FROM sightings FINAL "
        "WHERE tag_id = {tag:UInt64} AND first_ts < {to:Int64} AND last_ts >= {from:Int64} "
        f"ORDER BY first_ts, reader_id {_FINAL}",
        {"tag": int(tag_id), "from": int(from_ms), "to": int(to_ms)},
    )


def last_seen(store: Store, tag_id: int) -> LastSeen | None:
    """The tag's most recent sighting (by last_ts), or None if it was never seen."""
    rows = store.backend.execute(
        "SELECT tag_id, reader_id, first_ts, last_ts, lat, lon, h3_r9 FROM sightings FINAL "
        "WHERE tag_id = {tag:UInt64} "
        f"ORDER BY last_ts DESC, first_ts DESC, reader_id DESC LIMIT 1 {_FINAL}",
        {"tag": int(tag_id)},
    )
    if not rows:
        return None
    t, r, f, la, lat, lon, c = rows[0]
    return LastSeen(int(t), int(r), int(f), int(la), float(lat), float(lon), int(c))


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
        f"SELECT {_TRACK_COLS} FROM sightings_by_cell FINAL "
        "WHERE h3_r9 IN {cells:Array(UInt64)} AND first_ts < {to:Int64} "
        "AND last_ts >= {from:Int64} "
        f"ORDER BY first_ts, tag_id, reader_id {_FINAL}",
        {"cells": [int(c) for c in cell_list], "from": int(from_ms), "to": int(to_ms)},
    )
    if by_disc and out:
        keep = _haversine_m(out["lat"], out["lon"], float(lat), float(lon)) <= radius_m  # type: ignore[arg-type]
        out = {k: v[keep] for k, v in out.items()}
    return out


def heatmap(store: Store, res: int, from_ms: int, to_ms: int) -> dict[str, np.ndarray]:
    """Per res-`res` cell: distinct tags and sightings that began in the window.

    Resolutions up to 9 come from the per-minute aggregates (window floored to whole minutes);
    finer ones from the sightings themselves. Columns: cell, tags, sightings (by cell).
    """
    if not 0 <= res <= 12:
        raise ValueError(f"heatmap: resolution {res} outside 0..12")
    params = {"res": res, "from": int(from_ms), "to": int(to_ms)}
    if res <= 9:
        return store.backend.query_columns(
            "SELECT h3ToParent(h3_r9, {res:UInt8}) AS cell, uniqMerge(tags) AS tags, "
            "uniqMerge(sightings) AS sightings FROM cell_minute "
            "WHERE h3_r9 != 0 AND minute_ms >= intDiv({from:Int64}, 60000) * 60000 "
            "AND minute_ms < {to:Int64} "
            "GROUP BY cell ORDER BY cell",
            params,
        )
    return store.backend.query_columns(
        "SELECT h3ToParent(h3_r12, {res:UInt8}) AS cell, uniqExact(tag_id) AS tags, "
        "count() AS sightings FROM sightings FINAL "
        "WHERE h3_r12 != 0 AND first_ts >= {from:Int64} AND first_ts < {to:Int64} "
        f"GROUP BY cell ORDER BY cell {_FINAL}",
        params,
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
