"""Columnar tag reads: the one in-memory shape every stage passes around (no per-read objects)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Bits of the `flags` column.
FLAG_MOBILE = 0x01  # read by a reader on a patrol vehicle; lat/lon carried by the read
FLAG_TAMPER = 0x02  # the tag reported its tamper switch
FLAG_LOW_BATTERY = 0x04

READ_DTYPES: dict[str, np.dtype] = {
    "tag_id": np.dtype(np.uint64),
    "reader_id": np.dtype(np.uint32),
    "ts_ms": np.dtype(np.int64),
    "rssi_dbm": np.dtype(np.int8),
    "flags": np.dtype(np.uint8),
    "lat": np.dtype(np.float64),  # NaN for fixed readers
    "lon": np.dtype(np.float64),
}

_DTYPE_ITEMS = tuple(READ_DTYPES.items())


@dataclass(frozen=True, slots=True)
class Reads:
    """A batch of reads as parallel numpy arrays of equal length (dtypes in READ_DTYPES)."""

    tag_id: np.ndarray
    reader_id: np.ndarray
    ts_ms: np.ndarray
    rssi_dbm: np.ndarray
    flags: np.ndarray
    lat: np.ndarray
    lon: np.ndarray

    def __post_init__(self) -> None:
        # Built for every gateway message a worker decodes: no dataclasses.fields() call here.
        n = len(self.tag_id)
        for name, dt in _DTYPE_ITEMS:
            a = getattr(self, name)
            if a.dtype != dt:
                raise TypeError(f"Reads.{name}: dtype {a.dtype}, expected {dt}")
            if len(a) != n:
                raise ValueError(f"Reads.{name}: length {len(a)}, expected {n}")

    def __len__(self) -> int:
        return len(self.tag_id)

    @classmethod
    def empty(cls) -> Reads:
        return cls(**{k: np.empty(0, dt) for k, dt in READ_DTYPES.items()})

    @classmethod
    def from_columns(cls, **cols: object) -> Reads:
        """Build from array-likes, casting each to its dtype (lat/lon default to NaN)."""
        n = len(cols["tag_id"])  # type: ignore[arg-type]
        out = {}
        for k, dt in READ_DTYPES.items():
            if k in cols:
                out[k] = np.ascontiguousarray(cols[k], dtype=dt)
            elif k in ("lat", "lon"):
                out[k] = np.full(n, np.nan)
            else:
                out[k] = np.zeros(n, dt)
        return cls(**out)

    @classmethod
    def concat(cls, parts: list[Reads]) -> Reads:
        if not parts:
            return cls.empty()
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in READ_DTYPES})

    def take(self, idx: np.ndarray) -> Reads:
        return Reads(**{k: getattr(self, k)[idx] for k in READ_DTYPES})

    def columns(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in READ_DTYPES}

    def to_arrow(self) -> pa.Table:
        return pa.table(self.columns())

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Reads:
        missing = [k for k in ("tag_id", "reader_id", "ts_ms") if k not in table.column_names]
        if missing:
            raise ValueError(f"read table lacks column(s): {', '.join(missing)}")
        return cls.from_columns(
            **{k: table.column(k).to_numpy() for k in READ_DTYPES if k in table.column_names}
        )
