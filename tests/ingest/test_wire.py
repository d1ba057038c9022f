"""Wire format v1: documented test vectors, round-trip properties, structural errors, fuzzing."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.errors import TagtrailError
from core.records.reads import FLAG_LOW_BATTERY, FLAG_MOBILE, FLAG_TAMPER, READ_DTYPES, Reads
from ingest import exceptions as ex
from ingest.exceptions import WireError
from ingest.wire import (
    HEADER_SIZE,
    decode_batch,
    decode_structure,
    encode_batch,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def doc_vectors() -> dict[str, bytes]:
    """The hex blocks of docs/wire-format.md, keyed by name (comments after '#' stripped)."""
    text = DOC.read_text()
    out = {}
    for name, block in re.findall(r"<!-- test-vector: (\w+) -->\s*```text\n(.*?)```", text, re.S):
        hexdigits = "".join(line.split("#", 1)[0] for line in block.splitlines())
        out[name] = bytes.fromhex(hexdigits)
    return out


# The values the document's tables state for vector 1 ("mixed").
VECTOR_MIXED = Reads.from_columns(
    tag_id=np.array([0x0123456789ABCDEF, 42, 0xFEDCBA9876543210], dtype=np.uint64),
    reader_id=[1001, 1002, 900001],
    ts_ms=[1764320400000, 1764320400250, 1764320401000],
    rssi_dbm=[-52, -71, -80],
    flags=[0, FLAG_LOW_BATTERY, FLAG_MOBILE | FLAG_TAMPER],
    lat=[np.nan, np.nan, 25.0406],
    lon=[np.nan, np.nan, 102.7123],
)


def assert_reads_equal(a: Reads, b: Reads) -> None:
    assert len(a) == len(b)
    for k in READ_DTYPES:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype, k
        assert np.array_equal(x, y, equal_nan=k in ("lat", "lon")), k


def test_documented_vectors_decode_to_documented_values() -> None:
    vectors = doc_vectors()
    assert set(vectors) == {"mixed", "fixed"}
    mixed = decode_batch(vectors["mixed"])
    assert (mixed.gateway_id, mixed.batch_seq) == (258, 4294967297)
    assert_reads_equal(mixed.reads, VECTOR_MIXED)
    fixed = decode_batch(vectors["fixed"])
    assert (fixed.gateway_id, fixed.batch_seq) == (258, 4294967298)
    assert_reads_equal(fixed.reads, VECTOR_MIXED.take(np.array([0, 1])))
    # Our encoder produces exactly the documented bytes (what firmware must match).
    assert encode_batch(VECTOR_MIXED, 258, 4294967297) == vectors["mixed"]
    assert encode_batch(VECTOR_MIXED.take(np.array([0, 1])), 258, 4294967298) == vectors["fixed"]
    assert len(vectors["mixed"]) == 146 and len(vectors["fixed"]) == 76


def test_crc_is_zlib_crc32_over_all_but_the_crc_field() -> None:
    data = doc_vectors()["mixed"]
    (crc,) = struct.unpack_from("<I", data, 28)
    assert crc == zlib.crc32(data[:28] + data[32:])
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the documented check value


def test_decode_is_zero_copy() -> None:
    data = encode_batch(VECTOR_MIXED, 1, 1)
    reads = decode_structure(data).reads
    raw = np.frombuffer(data, np.uint8)
    for k in READ_DTYPES:
        assert np.shares_memory(getattr(reads, k), raw), k
        assert not getattr(reads, k).flags.writeable


reads_strategy = st.integers(0, 40).flatmap(
    lambda n: st.builds(
        Reads,
        **{
            k: hnp.arrays(dt, n, elements=hnp.from_dtype(dt, allow_nan=True))
            for k, dt in READ_DTYPES.items()
        },
    )
)


@settings(max_examples=300, deadline=None)
@given(reads=reads_strategy, gateway_id=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**64 - 1))
def test_roundtrip(reads: Reads, gateway_id: int, seq: int) -> None:
    data = encode_batch(reads, gateway_id, seq)
    batch = decode_structure(data)
    assert (batch.gateway_id, batch.batch_seq) == (gateway_id, seq)
    assert_reads_equal(batch.reads, reads)
    assert encode_batch(batch.reads, gateway_id, seq) == data  # canonical: re-encoding is stable


@pytest.mark.parametrize(("gateway_id", "seq"), [(-1, 0), (2**32, 0), (0, -1), (0, 2**64)])
def test_encode_rejects_out_of_range_ids(gateway_id: int, seq: int) -> None:
    with pytest.raises(ValueError):
        encode_batch(VECTOR_MIXED, gateway_id, seq)


def recrc(data: bytes | bytearray) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<I", buf, 28, zlib.crc32(bytes(buf[32:]), zlib.crc32(bytes(buf[:28]))))
    return bytes(buf)


def reason_of(data: bytes) -> str:
    with pytest.raises(WireError) as info:
        decode_structure(data)
    return info.value.reason


def test_each_structural_reason() -> None:
    good = encode_batch(VECTOR_MIXED, 7, 9)
    assert reason_of(b"") == ex.TRUNCATED
    assert reason_of(b"TTR") == ex.TRUNCATED
    assert reason_of(b"XXXX" + good[4:]) == ex.BAD_MAGIC
    assert reason_of(b"TTRD") == ex.TRUNCATED
    assert reason_of(good[:4] + b"\x02" + good[5:]) == ex.UNKNOWN_VERSION
    assert reason_of(good[:20]) == ex.TRUNCATED
    assert reason_of(good[:-1]) == ex.TRUNCATED
    assert reason_of(good + b"\x00") == ex.LENGTH_MISMATCH
    flipped = bytearray(good)
    flipped[HEADER_SIZE + 3] ^= 0x10
    assert reason_of(bytes(flipped)) == ex.CHECKSUM
    assert reason_of(recrc(good[:5] + b"\x03" + good[6:])) == ex.BAD_HEADER  # unknown header flag
    assert reason_of(recrc(good[:6] + b"\x01\x00" + good[8:])) == ex.BAD_HEADER  # reserved
    assert reason_of(recrc(good[:12] + struct.pack("<I", 2) + good[16:])) == ex.COUNT_MISMATCH
    assert reason_of(recrc(good[:5] + b"\x00" + good[6:])) == ex.COUNT_MISMATCH  # lost positions


def test_wire_error_contract() -> None:
    err = WireError(ex.CHECKSUM, "x")
    assert isinstance(err, TagtrailError) and not err.retriable and err.structural
    assert not WireError(ex.UNKNOWN_READER, "x", bad_reads=2).structural
    with pytest.raises(ValueError):
        WireError("no_such_reason", "x")


def _must_be_wire_error_or_valid(data: bytes, seen: dict[str, int]) -> None:
    try:
        batch = decode_structure(data)
    except WireError as e:
        assert e.reason in ex.STRUCTURAL_REASONS
        seen[e.reason] = seen.get(e.reason, 0) + 1
        return
    seen["ok"] = seen.get("ok", 0) + 1
    # A structurally valid message may still hold any garbage values: strict decode must then
    # raise only WireError with a per-read reason.
    try:
        decode_batch(data, np.array([1001, 1002], np.uint32), now_ms=1764320400000)
    except WireError as e:
        assert e.reason in ex.READ_REASONS and e.bad_reads > 0
    assert len(batch.reads) == struct.unpack_from("<I", data, 12)[0]


def test_fuzzed_and_mutated_messages_only_raise_wire_errors() -> None:
    rng = np.random.default_rng(20261128)
    seeds = [encode_batch(VECTOR_MIXED, 258, 1), encode_batch(VECTOR_MIXED.take([0, 1]), 258, 2)]
    seen: dict[str, int] = {}
    cases = 0
    for _ in range(1500):  # random bytes, sometimes with our magic and version in front
        data = rng.bytes(int(rng.integers(0, 200)))
        if rng.random() < 0.5:
            data = b"TTRD\x01" + data
        _must_be_wire_error_or_valid(data, seen)
        cases += 1
    for _ in range(2000):  # 1-4 bit flips of valid messages
        buf = bytearray(seeds[int(rng.integers(2))])
        for bit in rng.integers(0, len(buf) * 8, int(rng.integers(1, 5))):
            buf[bit // 8] ^= 1 << (bit % 8)
        _must_be_wire_error_or_valid(bytes(buf), seen)
        cases += 1
    for s in seeds:  # every truncation and some extensions
        for cut in range(len(s)):
            _must_be_wire_error_or_valid(s[:cut], seen)
            cases += 1
        _must_be_wire_error_or_valid(s + rng.bytes(8), seen)
    for _ in range(1500):  # random header fields and bodies with a valid crc: deeper checks
        n = int(rng.integers(0, 6))
        header = bytearray(rng.bytes(HEADER_SIZE))
        header[:5] = b"TTRD\x01"
        header[5] = int(rng.choice([0, 1, 1, 2]))
        header[6:8] = b"\x00\x00" if rng.random() < 0.9 else rng.bytes(2)
        struct.pack_into("<I", header, 12, n if rng.random() < 0.8 else int(rng.integers(2**32)))
        body = rng.bytes(n * int(rng.choice([22, 38])))
        struct.pack_into("<I", header, 24, len(body))
        _must_be_wire_error_or_valid(recrc(bytes(header) + body), seen)
        cases += 1
    assert cases > 5000
    # The corpus reaches every structural check and the decoder too.
    assert set(seen) >= {*ex.STRUCTURAL_REASONS, "ok"}, seen
