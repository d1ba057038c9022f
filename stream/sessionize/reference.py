"""The sighting contract written plainly: `reference_sightings(reads)` is the oracle that tests hold
the streaming sessionizer and the stored sightings to.

The contract, with the tie-breaks it leaves open made explicit:

* A read's identity is (tag_id, reader_id, ts_ms). Several reads with one identity are one read:
  the *winner* has the highest rssi, then the smallest lat, then the smallest lon (NaN sorts after
  every number), then the smallest flags. Only the winner's fields count from then on.
* For one (tag_id, reader_id), distinct reads ordered by ts_ms; a new sighting starts where the gap
  to the previous read exceeds `gap_ms` (gap == gap_ms continues the sighting).
* n_reads counts distinct reads; max_rssi is the highest rssi of the sighting.
* The sighting's *representative* read is its strongest distinct read, the earliest on ties. If the
  representative carries FLAG_MOBILE, the sighting's position is the representative's lat/lon (a
  patrol-vehicle reader reports where it was); otherwise it is the reader's registered position.
  An unregistered fixed reader (or a mobile read without a position) gives NaN lat/lon.
* Cells: H3 cells at resolutions 7, 9, 12 of that position (same ids as h3-py); 0 where lat/lon is
  NaN (the H3 "null" index).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from core.records.sightings import SIGHTING_DTYPES
from stream.geoindex import cells_for


def sighting_positions(
    reader_id: np.ndarray,
    rep_flags: np.ndarray,
    rep_lat: np.ndarray,
    rep_lon: np.ndarray,
    registry: ReaderRegistry,
) -> tuple[np.ndarray, np.ndarray]:
    """The contract's position rule: a mobile representative gives its lat/lon, else registry."""
    reg_lat, reg_lon = registry.lookup(reader_id)
    mobile = (rep_flags & FLAG_MOBILE) != 0
    return np.where(mobile, rep_lat, reg_lat), np.where(mobile, rep_lon, reg_lon)


def reference_sightings(
    reads: Reads, gap_ms: int = 30_000, positions: ReaderRegistry | None = None
) -> dict[str, np.ndarray]:
    """The sightings of a set of reads, per the contract above; columns of SIGHTING_DTYPES.

    Rows are sorted by (tag_id, reader_id, first_ts). Plain pandas, O(n log n); meant to be read.
    """
    registry = positions if positions is not None else ReaderRegistry.empty()
    if len(reads) == 0:
        return {k: np.empty(0, dt) for k, dt in SIGHTING_DTYPES.items()}
    df = pd.DataFrame(reads.columns())
    # NaN positions sort after every number in the winner rule.
    df["lat_key"] = df["lat"].fillna(np.inf)
    df["lon_key"] = df["lon"].fillna(np.inf)

    # 1. One read per identity: the winner sorts first within its identity.
    df = df.sort_values(
        ["tag_id", "reader_id", "ts_ms", "rssi_dbm", "lat_key", "lon_key", "flags"],
        ascending=[True, True, True, False, True, True, True],
        kind="mergesort",
    )
    distinct = df.drop_duplicates(["tag_id", "reader_id", "ts_ms"], keep="first").copy()

    # 2. Sessions: a new one at a new (tag, reader) or where the gap exceeds gap_ms.
    new_key = (distinct["tag_id"] != distinct["tag_id"].shift()) | (
        distinct["reader_id"] != distinct["reader_id"].shift()
    )
    gap_break = distinct["ts_ms"].diff() > gap_ms
    distinct["sid"] = (new_key | gap_break).cumsum()

    # 3. Aggregates per session.
    g = distinct.groupby("sid", sort=True)
    agg = g.agg(
        tag_id=("tag_id", "first"),
        reader_id=("reader_id", "first"),
        first_ts=("ts_ms", "min"),
        last_ts=("ts_ms", "max"),
        n_reads=("ts_ms", "size"),
        max_rssi=("rssi_dbm", "max"),
    )

    # 4. The representative: strongest distinct read, earliest on ties.
    rep = distinct.sort_values(["sid", "rssi_dbm", "ts_ms"], ascending=[True, False, True])
    rep = rep.drop_duplicates("sid", keep="first").set_index("sid").loc[agg.index]
    lat, lon = sighting_positions(
        agg["reader_id"].to_numpy(np.uint32),
        rep["flags"].to_numpy(np.uint8),
        rep["lat"].to_numpy(np.float64),
        rep["lon"].to_numpy(np.float64),
        registry,
    )
    r7, r9, r12 = cells_for(lat, lon)
    cols = {k: agg[k].to_numpy() for k in ("tag_id", "reader_id", "first_ts", "last_ts")}
    cols |= {"n_reads": agg["n_reads"].to_numpy(), "max_rssi": agg["max_rssi"].to_numpy()}
    cols |= {"lat": lat, "lon": lon, "h3_r7": r7, "h3_r9": r9, "h3_r12": r12}
    return {k: np.asarray(cols[k], dtype=dt) for k, dt in SIGHTING_DTYPES.items()}
