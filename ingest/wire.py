"""The gateway -> Kafka wire format (v1): encode and decode columnar read batches, and dead letters.

The byte layout is specified in docs/wire-format.md (the contract for gateway firmware); this module
implements it. Decoding is zero-copy: the returned arrays are read-only views into the message.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.records.reads import FLAG_MOBILE, Reads
from ingest import exceptions as ex
from ingest.exceptions import WireError
from ingest.validate import DEFAULT_MAX_FUTURE_MS, check_reads

MAGIC = b"TTRD"
VERSION = 1
HAS_POSITIONS = 0x01  # header flag: lat/lon columns present (for all reads, NaN for fixed)
# magic, version, header flags, reserved, gateway_id, count, batch_seq, body_len, crc32
HEADER = struct.Struct("<4sBBHIIQII")
HEADER_SIZE = HEADER.size  # 32: keeps every column naturally aligned
_CRC_OFFSET = 28

# Body columns in wire order: 8-byte columns first, then 4, then 1, so no padding is ever needed.
_COLS_8 = (("tag_id", "<u8"), ("ts_ms", "<i8"))
_COLS_POS = (("lat", "<f8"), ("lon", "<f8"))
_COLS_TAIL = (("reader_id", "<u4"), ("rssi_dbm", "i1"), ("flags", "u1"))
ROW_BYTES = 8 + 8 + 4 + 1 + 1  # 22
ROW_BYTES_POSITIONS = ROW_BYTES + 16  # 38
_NATIVE_LE = sys.byteorder == "little"


@dataclass(frozen=True, slots=True)
class Batch:
    """One decoded gateway message: who sent it, its sequence number and its reads."""

    gateway_id: int
    batch_seq: int
    reads: Reads


def _layout(has_positions: bool) -> tuple[tuple[str, str], ...]:
    return (*_COLS_8, *_COLS_POS, *_COLS_TAIL) if has_positions else (*_COLS_8, *_COLS_TAIL)


# (name, dtype, item size) per layout, built once: decoding runs per gateway message.
_DECODE_LAYOUT = {
    has_pos: tuple((name, np.dtype(dt), np.dtype(dt).itemsize) for name, dt in _layout(has_pos))
    for has_pos in (False, True)
}


def _crc(buf: memoryview) -> int:
    """CRC-32 (zlib, ISO-HDLC) over header bytes 0..27, then the body: all but the crc field."""
    return zlib.crc32(buf[HEADER_SIZE:], zlib.crc32(buf[:_CRC_OFFSET]))


def needs_positions(reads: Reads) -> bool:
    """True when the lat/lon columns must be sent: a mobile read, or any position given at all."""
    if len(reads) == 0:
        return False
    if ((reads.flags & FLAG_MOBILE) != 0).any():
        return True
    return not (np.isnan(reads.lat).all() and np.isnan(reads.lon).all())


def encode_batch(reads: Reads, gateway_id: int, batch_seq: int) -> bytes:
    """Encode reads as one v1 message. Lossless: decode_structure gives back the same arrays.

    Raises ValueError when gateway_id or batch_seq do not fit u32/u64 or the batch is too large
    for the u32 body length. No read-level validation happens here: bad reads are encoded as they
    are and rejected (then dead-lettered) by the consumer, so nothing is lost at the gateway.
    """
    if not 0 <= gateway_id <= 0xFFFF_FFFF:
        raise ValueError(f"gateway_id {gateway_id} does not fit in u32")
    if not 0 <= batch_seq <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"batch_seq {batch_seq} does not fit in u64")
    n = len(reads)
    has_pos = needs_positions(reads)
    body_len = n * (ROW_BYTES_POSITIONS if has_pos else ROW_BYTES)
    if body_len > 0xFFFF_FFFF:
        raise ValueError(f"{n} reads do not fit in one message; split the batch")
    buf = bytearray(HEADER_SIZE + body_len)
    HEADER.pack_into(
        buf, 0, MAGIC, VERSION, HAS_POSITIONS if has_pos else 0, 0, gateway_id, n, batch_seq,
        body_len, 0,
    )  # fmt: skip
    off = HEADER_SIZE
    for name, dt in _layout(has_pos):
        width = np.dtype(dt).itemsize
        if n:
            np.frombuffer(buf, dtype=dt, count=n, offset=off)[:] = getattr(reads, name)
        off += n * width
    with memoryview(buf) as mv:
        struct.pack_into("<I", buf, _CRC_OFFSET, _crc(mv))
    return bytes(buf)


def _column(data: object, dt: str | np.dtype, n: int, off: int) -> np.ndarray:
    a = np.frombuffer(data, dtype=dt, count=n, offset=off)  # type: ignore[call-overload]
    # On a big-endian host convert once; on little-endian (every target we know) this is a view.
    return a if _NATIVE_LE else a.astype(a.dtype.newbyteorder("="))


def decode_structure(data: bytes | bytearray | memoryview) -> Batch:
    """Decode a message, checking only its structure (whole-message errors).

    Raises WireError with reason bad_magic, unknown_version, truncated, length_mismatch, checksum,
    bad_header or count_mismatch, in that order of checking. Read-level checks are left to
    `ingest.validate.split_invalid`, so a consumer can keep the valid reads of a message.
    The arrays are views into `data` (read-only when it is bytes) that keep it alive: no copy.
    """
    mv = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    size = mv.nbytes
    if size < len(MAGIC):
        raise WireError(ex.TRUNCATED, f"{size} bytes, shorter than the magic")
    if mv[:4] != MAGIC:
        raise WireError(ex.BAD_MAGIC, f"magic {bytes(mv[:4]).hex()} is not {MAGIC.hex()}")
    if size < 5:
        raise WireError(ex.TRUNCATED, f"{size} bytes, no version byte")
    if mv[4] != VERSION:
        raise WireError(ex.UNKNOWN_VERSION, f"version {mv[4]}, this decoder reads {VERSION}")
    if size < HEADER_SIZE:
        raise WireError(ex.TRUNCATED, f"{size} bytes, shorter than the {HEADER_SIZE}-byte header")
    _, _, hflags, reserved, gateway_id, n, batch_seq, body_len, crc = HEADER.unpack_from(mv)
    if size < HEADER_SIZE + body_len:
        raise WireError(ex.TRUNCATED, f"{size} bytes, header declares {HEADER_SIZE + body_len}")
    if size > HEADER_SIZE + body_len:
        raise WireError(
            ex.LENGTH_MISMATCH, f"{size} bytes, header declares {HEADER_SIZE + body_len}"
        )
    actual = _crc(mv)
    if actual != crc:
        raise WireError(ex.CHECKSUM, f"crc32 {actual:08x}, header says {crc:08x}")
    if hflags & ~HAS_POSITIONS or reserved:
        raise WireError(ex.BAD_HEADER, f"header flags {hflags:#04x}, reserved {reserved:#06x}")
    has_pos = bool(hflags & HAS_POSITIONS)
    expected = n * (ROW_BYTES_POSITIONS if has_pos else ROW_BYTES)
    if body_len != expected:
        raise WireError(ex.COUNT_MISMATCH, f"{n} reads need {expected} body bytes, got {body_len}")
    cols: dict[str, np.ndarray] = {}
    off = HEADER_SIZE
    for name, dt, width in _DECODE_LAYOUT[has_pos]:
        cols[name] = _column(mv, dt, n, off)
        off += n * width
    if not has_pos:
        cols["lat"] = cols["lon"] = np.full(n, np.nan)
    return Batch(gateway_id=gateway_id, batch_seq=batch_seq, reads=Reads(**cols))


def decode_batch(
    data: bytes | bytearray | memoryview,
    known_readers: np.ndarray | None = None,
    now_ms: int | None = None,
    *,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Batch:
    """Decode and fully validate a message; any invalid read rejects it (strict mode).

    known_readers: sorted unique uint32 reader ids (see ingest.validate.reader_set); None skips
    the unknown-reader check. now_ms: the consumer's clock; None skips the too-far-ahead check
    (reads before 2015 are always rejected). Raises WireError carrying the reason. Consumers that
    must keep the valid reads of a partly bad message use decode_structure + split_invalid.
    """
    batch = decode_structure(data)
    check_reads(batch.reads, known_readers, now_ms, max_future_ms)
    return batch


# ---- dead letters -----------------------------------------------------------------------------
# A dead letter is a Kafka record on the DLQ topic: value = bytes to replay, headers = why/where.
H_REASON = "tagtrail-reason"
H_DETAIL = "tagtrail-detail"
H_KIND = "tagtrail-kind"  # "message": the original bytes; "reads": re-encoded rejected reads
H_TOPIC, H_PARTITION, H_OFFSET = (
    "tagtrail-src-topic",
    "tagtrail-src-partition",
    "tagtrail-src-offset",
)
KIND_MESSAGE, KIND_READS = "message", "reads"
_MAX_DETAIL_BYTES = 1024

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A decoded dead-letter record (see encode_dead_letter)."""

    reason: str
    detail: str
    kind: str
    value: bytes
    topic: str | None
    partition: int | None
    offset: int | None


def encode_dead_letter(
    reason: str,
    detail: str,
    original: bytes,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    kind: str = KIND_MESSAGE,
) -> tuple[Headers, bytes]:
    """Build (headers, value) for the DLQ topic; the value is `original` unchanged, for replay.

    Source coordinates are optional (a gateway may dead-letter before producing).
    """
    if reason not in ex.REASONS:
        raise ValueError(f"unknown reason {reason!r}")
    if kind not in (KIND_MESSAGE, KIND_READS):
        raise ValueError(f"unknown dead-letter kind {kind!r}")
    headers: Headers = [
        (H_REASON, reason.encode()),
        (H_DETAIL, detail.encode("utf-8", "replace")[:_MAX_DETAIL_BYTES]),
        (H_KIND, kind.encode()),
    ]
    for name, v in ((H_TOPIC, topic), (H_PARTITION, partition), (H_OFFSET, offset)):
        if v is not None:
            headers.append((name, str(v).encode()))
    return headers, bytes(original)


def decode_dead_letter(headers: Sequence[tuple[str, bytes]], value: bytes) -> DeadLetter:
    """Parse a DLQ record back (for replay tools and tests); ValueError if not one of ours."""
    h = {k: v for k, v in headers}
    if H_REASON not in h or H_KIND not in h:
        raise ValueError("record lacks tagtrail dead-letter headers")

    def num(key: str) -> int | None:
        return int(h[key]) if key in h else None

    return DeadLetter(
        reason=h[H_REASON].decode(),
        detail=h.get(H_DETAIL, b"").decode("utf-8", "replace"),
        kind=h[H_KIND].decode(),
        value=value,
        topic=h[H_TOPIC].decode() if H_TOPIC in h else None,
        partition=num(H_PARTITION),
        offset=num(H_OFFSET),
    )


def dead_letters_for(
    batch: Batch,
    rejected: list[tuple[str, Reads]],
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> list[tuple[Headers, bytes]]:
    """DLQ records for the groups split_invalid rejected: each group re-encoded as a v1 message
    with the batch's gateway_id and batch_seq, so replaying it feeds the reads back unchanged."""
    out = []
    for reason, reads in rejected:
        value = encode_batch(reads, batch.gateway_id, batch.batch_seq)
        detail = f"{len(reads)} reads of gateway {batch.gateway_id} batch {batch.batch_seq}"
        out.append(
            encode_dead_letter(
                reason,
                detail,
                value,
                topic=topic,
                partition=partition,
                offset=offset,
                kind=KIND_READS,
            )
        )
    return out
