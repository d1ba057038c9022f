"""Per-read validation: reason masks, split_invalid (counts add up), strict decode, dead letters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.records.reads import FLAG_MOBILE, Reads
from ingest import exceptions as ex
from ingest.exceptions import WireError
from ingest.validate import (
    MIN_TS_MS,
    bad_latlon_mask,
    reader_set,
    split_invalid,
    split_invalid_many,
    unknown_reader_mask,
)
from ingest.wire import (
    KIND_MESSAGE,
    KIND_READS,
    dead_letters_for,
    decode_batch,
    decode_dead_letter,
    decode_structure,
    encode_batch,
    encode_dead_letter,
)

NOW = 1_764_320_400_000
KNOWN = reader_set([10, 11, 12, 500])


def mixed_reads() -> Reads:
    """Seven reads: two valid, then one per fault, then a read with two faults."""
    nan = np.nan
    return Reads.from_columns(
        tag_id=np.arange(7, dtype=np.uint64),
        reader_id=[10, 500, 99, 11, 12, 10, 98],
        ts_ms=[NOW, NOW - 1000, NOW, NOW, NOW + 3_600_000, 0, 0],
        flags=[0, FLAG_MOBILE, 0, FLAG_MOBILE, 0, 0, FLAG_MOBILE],
        lat=[nan, 25.0, nan, 95.0, nan, nan, nan],
        lon=[nan, 102.7, nan, 102.7, nan, nan, nan],
    )


def test_split_invalid_assigns_each_read_its_first_reason() -> None:
    batch = decode_structure(encode_batch(mixed_reads(), 3, 4))
    valid, rejected = split_invalid(batch, KNOWN, NOW)
    assert valid.tag_id.tolist() == [0, 1]
    got = {reason: r.tag_id.tolist() for reason, r in rejected}
    # Read 6 (unknown reader, no GPS, ts 0) counts once, under the highest-priority reason.
    assert got == {ex.UNKNOWN_READER: [2, 6], ex.BAD_LATLON: [3], ex.BAD_TIMESTAMP: [4, 5]}
    assert len(valid) + sum(len(r) for _, r in rejected) == len(batch.reads)


def test_optional_checks_are_skipped_without_registry_or_clock() -> None:
    valid, rejected = split_invalid(decode_structure(encode_batch(mixed_reads(), 3, 4)))
    got = {reason: r.tag_id.tolist() for reason, r in rejected}
    assert got == {ex.BAD_LATLON: [3, 6], ex.BAD_TIMESTAMP: [5]}  # ts 0 is always absurd
    assert valid.tag_id.tolist() == [0, 1, 2, 4]


def test_all_valid_batch_is_returned_without_copy() -> None:
    reads = mixed_reads().take(np.array([0, 1]))
    batch = decode_structure(encode_batch(reads, 1, 1))
    valid, rejected = split_invalid(batch, KNOWN, NOW)
    assert rejected == [] and valid is batch.reads


def test_strict_decode_raises_first_reason_with_count() -> None:
    data = encode_batch(mixed_reads(), 3, 4)
    with pytest.raises(WireError) as info:
        decode_batch(data, KNOWN, NOW)
    assert info.value.reason == ex.UNKNOWN_READER and info.value.bad_reads == 5
    assert not info.value.structural


@pytest.mark.parametrize(
    ("lat", "lon", "flags", "bad"),
    [
        (25.0, 102.7, FLAG_MOBILE, False),
        (-90.0, 180.0, FLAG_MOBILE, False),
        (90.0001, 0.5, FLAG_MOBILE, True),
        (0.5, -180.5, FLAG_MOBILE, True),
        (0.0, 0.0, FLAG_MOBILE, True),  # GPS without a fix
        (np.inf, 10.0, FLAG_MOBILE, True),
        (np.nan, 10.0, FLAG_MOBILE, True),
        (np.nan, np.nan, 0, False),
        (25.0, 102.7, 0, True),  # a fixed reader must not carry a position
        (np.nan, 102.7, 0, True),
    ],
)
def test_latlon_rules(lat: float, lon: float, flags: int, bad: bool) -> None:
    reads = Reads.from_columns(tag_id=[1], reader_id=[1], ts_ms=[NOW], flags=[flags], lat=[lat],
                               lon=[lon])  # fmt: skip
    assert bool(bad_latlon_mask(reads)[0]) is bad


def test_timestamp_bounds() -> None:
    ts = [MIN_TS_MS - 1, MIN_TS_MS, NOW + 600_000, NOW + 600_001]
    reads = Reads.from_columns(tag_id=[1, 2, 3, 4], reader_id=[10] * 4, ts_ms=ts)
    _, rejected = split_invalid(decode_structure(encode_batch(reads, 1, 1)), KNOWN, NOW)
    assert [(r, g.tag_id.tolist()) for r, g in rejected] == [(ex.BAD_TIMESTAMP, [1, 4])]


@settings(max_examples=200, deadline=None)
@given(
    known=st.lists(st.integers(0, 2**32 - 1), max_size=30),
    ids=st.lists(st.integers(0, 2**32 - 1), max_size=50),
)
def test_unknown_reader_mask_matches_isin(known: list[int], ids: list[int]) -> None:
    ids_a = np.array(ids + known[:3], dtype=np.uint32)
    expected = ~np.isin(ids_a, np.array(known, dtype=np.uint32))
    assert np.array_equal(unknown_reader_mask(ids_a, reader_set(known)), expected)


@settings(max_examples=200, deadline=None)
@given(
    registries=st.lists(st.lists(st.integers(0, 5000), max_size=30), min_size=1, max_size=4),
    ids=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6000), max_size=50),
)
def test_unknown_reader_mask_by_table_matches_isin(
    registries: list[list[int]], ids: list[int]
) -> None:
    # Small ids take the table path; registries alternate, as when the registry changes.
    ids_a = np.array(ids, dtype=np.uint32)
    sets = [reader_set(known) for known in registries]
    for known in [*sets, *sets]:
        expected = ~np.isin(ids_a, known)
        assert np.array_equal(unknown_reader_mask(ids_a, known), expected)


def test_reader_set_rejects_bad_ids() -> None:
    assert reader_set([5, 3, 5]).tolist() == [3, 5]
    for bad in ([-1], [2**32], [1.5]):
        with pytest.raises(ValueError):
            reader_set(bad)


def test_dead_letters_carry_reason_source_and_replayable_reads() -> None:
    batch = decode_structure(encode_batch(mixed_reads(), 3, 4))
    _, rejected = split_invalid(batch, KNOWN, NOW)
    records = dead_letters_for(batch, rejected, topic="tag-reads", partition=2, offset=77)
    assert len(records) == len(rejected)
    replayed = 0
    for (headers, value), (reason, reads) in zip(records, rejected, strict=True):
        dl = decode_dead_letter(headers, value)
        assert (dl.reason, dl.kind, dl.topic, dl.partition, dl.offset) == (
            reason, KIND_READS, "tag-reads", 2, 77,
        )  # fmt: skip
        again = decode_structure(dl.value)  # the rejected reads, replayable as a normal message
        assert (again.gateway_id, again.batch_seq) == (3, 4)
        assert again.reads.tag_id.tolist() == reads.tag_id.tolist()
        replayed += len(again.reads)
    assert replayed == 5


def test_whole_message_dead_letter_keeps_original_bytes() -> None:
    garbage = b"\x00\x01not a batch"
    headers, value = encode_dead_letter(ex.BAD_MAGIC, "magic 00016e6f", garbage, offset=5)
    dl = decode_dead_letter(headers, value)
    assert dl.value == garbage and dl.kind == KIND_MESSAGE and dl.reason == ex.BAD_MAGIC
    assert (dl.topic, dl.partition, dl.offset) == (None, None, 5)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    with pytest.raises(ValueError):
        encode_dead_letter("nope", "", b"")
    with pytest.raises(ValueError):
        decode_dead_letter([], b"")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.integers(0, 6), max_size=12), st.integers(-3_600_000, 3_600_000)),
        max_size=8,
    )
)
def test_split_invalid_many_equals_split_invalid_per_batch(
    specs: list[tuple[list[int], int]],
) -> None:
    """One vectorised pass gives each message exactly what split_invalid gives it alone, each
    judged at its own time (a worker step validates hundreds of gateway messages at once)."""
    pool = mixed_reads()
    batches = [
        decode_structure(encode_batch(pool.take(np.array(rows, dtype=np.int64)), 1, i))
        for i, (rows, _) in enumerate(specs)
    ]
    nows = [NOW + shift for _, shift in specs]
    valid, rejected, source = split_invalid_many(batches, KNOWN, nows)
    one_by_one = [split_invalid(b, KNOWN, now) for b, now in zip(batches, nows, strict=True)]
    want = Reads.concat([v for v, _ in one_by_one])
    # Each valid read's batch index: where it came from.
    want_source = np.repeat(np.arange(len(batches)), [len(v) for v, _ in one_by_one])
    np.testing.assert_array_equal(source, want_source)
    for k, col in valid.columns().items():
        np.testing.assert_array_equal(col, getattr(want, k))
    assert len(rejected) == len(batches)
    for got_groups, (_, want_groups) in zip(rejected, one_by_one, strict=True):
        assert [r for r, _ in got_groups] == [r for r, _ in want_groups]
        for (_, g), (_, w) in zip(got_groups, want_groups, strict=True):
            for k, col in g.columns().items():
                np.testing.assert_array_equal(col, getattr(w, k))
