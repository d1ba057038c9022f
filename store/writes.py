"""Batch writes: sighting upserts, raw reads and the reader registry, as numpy columns."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.records.reads import READ_DTYPES, Reads
from core.records.sightings import SIGHTING_DTYPES
from store.exceptions import StoreError
from store.store import Store

UPSERT_DTYPES: dict[str, np.dtype] = {
    **SIGHTING_DTYPES,
    "version": np.dtype(np.uint64),
    "is_deleted": np.dtype(np.uint8),
}
READER_DTYPES: dict[str, np.dtype] = {
    "reader_id": np.dtype(np.uint32),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
    "kind": np.dtype(np.int8),  # 1 fixed, 2 mobile
    "gateway_id": np.dtype(np.uint32),
    "district": np.dtype(object),
    "h3_r7": np.dtype(np.uint64),
    "h3_r9": np.dtype(np.uint64),
    "h3_r12": np.dtype(np.uint64),
    "updated_at": np.dtype(np.int64),
}


def _columns(
    cols: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype], what: str
) -> dict[str, np.ndarray]:
    missing = [k for k in dtypes if k not in cols]
    if missing:
        raise StoreError(f"{what}: missing column(s) {', '.join(missing)}")
    out = {k: np.asarray(cols[k]).astype(dt, copy=False) for k, dt in dtypes.items()}
    n = {len(v) for v in out.values()}
    if len(n) > 1:
        raise StoreError(f"{what}: columns of unequal length {sorted(n)}")
    return out


def insert_sightings(
    store: Store,
    columns: Mapping[str, np.ndarray],
    *,
    version: int | np.ndarray | None = None,
    is_deleted: int | np.ndarray | None = None,
    dedup_token: str | None = None,
) -> int:
    """Upsert sightings (SIGHTING_DTYPES plus version/is_deleted); return the row count.

    The identity is (tag_id, reader_id, first_ts); the highest version wins and is_deleted=1
    retracts it. A retraction row must carry the sighting's own columns (h3_r9 above all): the
    area index is keyed by cell and learns of the retraction from that row. `version` and
    `is_deleted` may be given as columns or as scalars for the whole batch. Repeating a call
    with the same `dedup_token` and rows stores them once.
    """
    cols = dict(columns)
    n = len(cols["tag_id"]) if "tag_id" in cols else 0
    for name, value in (("version", version), ("is_deleted", is_deleted)):
        if value is not None:
            cols[name] = np.broadcast_to(np.asarray(value), (n,))
        elif name not in cols:
            if name == "version":
                raise StoreError("insert_sightings: give `version` (column or scalar)")
            cols[name] = np.zeros(n, np.uint8)
    cols = _columns(cols, UPSERT_DTYPES, "insert_sightings")
    store.backend.insert_columns("sightings", cols, dedup_token)
    return n


def insert_raw_reads(store: Store, reads: Reads, *, dedup_token: str | None = None) -> int:
    """Append raw reads (kept for `raw_reads_ttl_days`); feed the per-reader read rates."""
    cols = _columns(reads.columns(), READ_DTYPES, "insert_raw_reads")
    store.backend.insert_columns("raw_reads", cols, dedup_token)
    return len(reads)


def upsert_readers(store: Store, columns: Mapping[str, np.ndarray]) -> int:
    """Insert or update readers (latest `updated_at` wins); return the row count."""
    cols = _columns(columns, READER_DTYPES, "upsert_readers")
    store.backend.insert_columns("readers", cols, None)
    return len(cols["reader_id"])
