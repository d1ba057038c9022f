"""A sighting's columns, shared by the sessionizer, the store and the API; and its upserts on the
`sightings` topic (one Arrow IPC stream per message, columnar)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.records.fields import described, field_names

# A sighting: consecutive distinct reads of one tag at one reader with gaps <= GAP.
SIGHTING_DTYPES: dict[str, np.dtype] = {
    "tag_id": np.dtype(np.uint64),
    "reader_id": np.dtype(np.uint32),
    "first_ts": np.dtype(np.int64),  # UTC epoch ms
    "last_ts": np.dtype(np.int64),
    "n_reads": np.dtype(np.uint32),  # distinct (tag, reader, ts_ms) reads
    "max_rssi": np.dtype(np.int8),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
    "h3_r7": np.dtype(np.uint64),
    "h3_r9": np.dtype(np.uint64),
    "h3_r12": np.dtype(np.uint64),
}

# Contract columns, in order; the store adds version/is_deleted for exact upserts.
SIGHTING_COLUMNS: tuple[str, ...] = tuple(SIGHTING_DTYPES)
H3_RESOLUTIONS: tuple[int, ...] = (7, 9, 12)


# The fields the service answers with: the contract columns less read count, signal and the
# other cell resolutions.
@dataclass(frozen=True, slots=True)
class Sighting:
    """Where and when a tag was seen (by one reader, over consecutive reads)."""

    tag_id: int = described("the bike's RFID tag id")
    reader_id: int = described("the reader that saw the tag")
    first_ts: int = described("its first read of the tag, UTC epoch ms")
    last_ts: int = described("its last read of the tag, UTC epoch ms")
    lat: float = described("the reader's latitude (WGS 84) at the sighting")
    lon: float = described("the reader's longitude (WGS 84) at the sighting")
    h3_r9: int = described("the resolution-9 H3 cell of (lat, lon)", h3_cell=True)


# The located sighting's fields, in order (columns of store.queries' answers).
SIGHTING_FIELDS: tuple[str, ...] = field_names(Sighting)

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
