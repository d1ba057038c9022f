"""Sighting upserts on the `sightings` topic: one Arrow IPC stream per message, columnar."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stream.records import SIGHTING_DTYPES

UPSERT_DTYPES: dict[str, np.dtype] = {
    **SIGHTING_DTYPES,
    "version": np.dtype(np.uint64),  # higher wins in the store's ReplacingMergeTree
    "is_deleted": np.dtype(np.uint8),  # 1 retracts the identity (tag_id, reader_id, first_ts)
}


def encode_upserts(cols: dict[str, np.ndarray]) -> bytes:
    table = pa.table({k: np.asarray(cols[k], dtype=dt) for k, dt in UPSERT_DTYPES.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_upserts(data: bytes) -> dict[str, np.ndarray]:
    table = pa.ipc.open_stream(data).read_all()
    return {k: table.column(k).to_numpy().astype(dt, copy=False) for k, dt in UPSERT_DTYPES.items()}


def concat_upserts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.empty(0, dt) for k, dt in UPSERT_DTYPES.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in UPSERT_DTYPES}
