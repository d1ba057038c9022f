"""The reader registry's records: one reader on the readers topic, and the registry as arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

KINDS = ("fixed", "mobile")


def encode_reader(reader_id: int, lat: float, lon: float, kind: str) -> tuple[bytes, bytes]:
    """(key, value) of one registry record on the readers topic."""
    if kind not in KINDS:
        raise ValueError(f"reader kind must be one of {KINDS}, not {kind!r}")
    key = int(reader_id).to_bytes(4, "big")
    value = json.dumps({"reader_id": int(reader_id), "lat": lat, "lon": lon, "kind": kind})
    return key, value.encode()


@dataclass(frozen=True, slots=True)
class ReaderRegistry:
    """Registered positions of fixed readers: `reader_id` sorted ascending and unique."""

    reader_id: np.ndarray  # uint32, sorted, unique
    lat: np.ndarray  # float64
    lon: np.ndarray  # float64

    def __post_init__(self) -> None:
        if not (len(self.reader_id) == len(self.lat) == len(self.lon)):
            raise ValueError("ReaderRegistry: reader_id, lat and lon must have equal lengths")
        if len(self.reader_id) > 1 and not np.all(np.diff(self.reader_id.astype(np.int64)) > 0):
            raise ValueError("ReaderRegistry: reader_id must be sorted ascending without repeats")

    @classmethod
    def empty(cls) -> ReaderRegistry:
        return cls(np.empty(0, np.uint32), np.empty(0), np.empty(0))

    @classmethod
    def from_columns(cls, reader_id: object, lat: object, lon: object) -> ReaderRegistry:
        """Build from unsorted array-likes (a later duplicate reader_id wins)."""
        rid = np.asarray(reader_id, dtype=np.uint32)
        la, lo = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        # Keep the last occurrence of each id: reverse, take first of each unique, sort.
        rev_ids, rev_idx = np.unique(rid[::-1], return_index=True)
        idx = len(rid) - 1 - rev_idx
        return cls(rev_ids, la[idx].copy(), lo[idx].copy())

    def lookup(self, reader_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Registered (lat, lon) per reader id; NaN for readers not in the registry."""
        n = len(self.reader_id)
        lat, lon = np.full(len(reader_id), np.nan), np.full(len(reader_id), np.nan)
        if n == 0 or len(reader_id) == 0:
            return lat, lon
        pos = np.searchsorted(self.reader_id, reader_id)
        pos_c = np.minimum(pos, n - 1)
        hit = self.reader_id[pos_c] == reader_id
        lat[hit], lon[hit] = self.lat[pos_c[hit]], self.lon[pos_c[hit]]
        return lat, lon
