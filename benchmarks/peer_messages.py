"""The peer's Kafka messages: the same reads as the gateways send, in formats ClickHouse parses
natively (Native, RowBinary) and as JSONEachRow for the client-side reference."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd

from core.records.reads import Reads

ROWS_PER_MESSAGE = 4096
# Column order of the engine's tables and of both binary encodings (ClickHouse type, our field).
ENGINE_COLUMNS = (
    ("tag_id", "UInt64"),
    ("reader_id", "UInt32"),
    ("ts_ms", "Int64"),
    ("rssi_dbm", "Int8"),
    ("flags", "UInt8"),
    ("lat", "Float64"),
    ("lon", "Float64"),
)


def message_bounds(n: int, reads_per_message: float) -> np.ndarray:
    """Start offsets of each message plus n; sizes differ by at most one read around the mean."""
    if reads_per_message < 1:
        raise ValueError(f"reads_per_message must be >= 1, got {reads_per_message}")
    k = max(1, round(n / reads_per_message)) if n else 0
    return np.unique(np.round(np.linspace(0, n, k + 1)).astype(np.int64))


def rowbinary_messages(reads: Reads, bounds: np.ndarray) -> list[bytes]:
    """RowBinary rows are the packed struct of the columns: one vectorised copy, then slices."""
    dt = np.dtype([(name, getattr(reads, name).dtype) for name, _ in ENGINE_COLUMNS])
    rows = np.empty(len(reads), dt)
    for name, _ in ENGINE_COLUMNS:
        rows[name] = getattr(reads, name)
    buf = memoryview(rows.tobytes())
    size = dt.itemsize
    return [bytes(buf[a * size : b * size]) for a, b in pairwise(bounds.tolist())]


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def native_messages(reads: Reads, bounds: np.ndarray) -> list[bytes]:
    """One ClickHouse Native block per message: column count, row count, then per column its
    name, type and raw little-endian array (the layout chdb itself writes for these types)."""
    heads = [_varint(len(n)) + n.encode() + _varint(len(t)) + t.encode() for n, t in ENGINE_COLUMNS]
    bufs = [
        memoryview(np.ascontiguousarray(getattr(reads, n)).view(np.uint8))
        for n, _ in ENGINE_COLUMNS
    ]
    sizes = [getattr(reads, n).dtype.itemsize for n, _ in ENGINE_COLUMNS]
    ncols = _varint(len(ENGINE_COLUMNS))
    out = []
    for a, b in pairwise(bounds.tolist()):
        parts = [ncols, _varint(b - a)]
        for head, buf, size in zip(heads, bufs, sizes, strict=True):
            parts += (head, buf[a * size : b * size])
        out.append(b"".join(parts))
    return out


def json_messages(reads: Reads) -> list[bytes]:
    df = pd.DataFrame({k: getattr(reads, k) for k in Reads.__slots__})
    out = []
    for i in range(0, len(df), ROWS_PER_MESSAGE):
        # pandas writes the lines in C; NaN positions become null (Nullable columns).
        out.append(df.iloc[i : i + ROWS_PER_MESSAGE].to_json(orient="records", lines=True).encode())
    return out
