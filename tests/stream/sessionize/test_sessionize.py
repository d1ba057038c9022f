"""The streaming sessionizer against the reference: batching, order, redelivery, restarts, late."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from stream.sessionize.reference import reference_sightings
from stream.sessionize.sessionizer import (
    CHANGE_DTYPES,
    Sessionizer,
    SightingChanges,
    backfill_window,
    select_window,
)

GAP = 10
REG = ReaderRegistry.from_columns([0, 1, 2], [25.0, 25.1, 25.2], [102.0, 102.1, 102.2])
BIG = 10**15  # a lateness no test data reaches


class Store:
    """A ReplacingMergeTree(version, is_deleted) keyed by identity: max version wins, ties last."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, int], dict] = {}

    def apply(self, ch: SightingChanges) -> None:
        r = ch.rows
        for i in range(len(ch)):
            key = (int(r["tag_id"][i]), int(r["reader_id"][i]), int(r["first_ts"][i]))
            old = self.rows.get(key)
            row = {k: r[k][i].item() for k in r}
            if old is not None and row["version"] == old["version"]:
                # The engine's tie-break is insertion order: only identical replays may tie.
                assert _same_row(row, old), (row, old)
            if old is None or row["version"] >= old["version"]:
                self.rows[key] = row

    def current(self) -> dict[str, np.ndarray]:
        """Live rows sorted by identity, as sighting columns."""
        keys = sorted(k for k, v in self.rows.items() if not v["is_deleted"])
        return {
            k: np.array([self.rows[key][k] for key in keys], dtype=CHANGE_DTYPES[k])
            for k in reference_sightings(Reads.empty())
        }


def _same_row(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)  # NaN-aware


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for k in want:
        if want[k].dtype.kind == "f":
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)  # NaN == NaN here
        else:
            assert got[k].tolist() == want[k].tolist(), k


@st.composite
def read_sets(draw: st.DrawFn, max_size: int = 60) -> Reads:
    """Few keys, a narrow ts range and tied rssi/positions: boundaries and ties happen often."""
    n = draw(st.integers(0, max_size))
    ints = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    flags = draw(ints(0, 1))
    lat = [[np.nan, 25.3, 25.4][i] for i in draw(ints(0, 2))]
    lon = [[np.nan, 102.3, 102.4][i] for i in draw(ints(0, 2))]
    # Extreme tag ids and epoch-ms timestamps: no overflow in hashing, packing or sorting.
    tags = [[0, 2**63 + 5, 2**64 - 1][i] for i in draw(ints(0, 2))]
    return Reads.from_columns(
        tag_id=np.array(tags, dtype=np.uint64),
        reader_id=draw(ints(0, 3)),  # reader 3 is not registered
        ts_ms=np.array(draw(ints(0, 120)), dtype=np.int64) + 1_790_000_000_000,
        rssi_dbm=draw(ints(-62, -60)),
        flags=np.array(flags) * FLAG_MOBILE,
        lat=lat,
        lon=lon,
    )


def split(reads: Reads, data: st.DataObject) -> list[Reads]:
    """A random arrival order cut into random batches."""
    n = len(reads)
    perm = data.draw(st.permutations(range(n))) if n else []
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    idx = np.array(perm, dtype=np.int64)
    return [reads.take(p) for p in np.split(idx, cuts)]


PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(reads=read_sets(), data=st.data())
def test_any_batching_and_order_gives_the_reference(reads: Reads, data: st.DataObject) -> None:
    s, store = Sessionizer(GAP, BIG, REG), Store()
    for v, batch in enumerate(split(reads, data)):
        ch = s.process(batch, v)
        assert len(ch.late) == 0
        store.apply(ch)
    assert_same(store.current(), reference_sightings(reads, GAP, REG))


def _sorted_rows(rows: dict[str, np.ndarray]) -> dict[str, list[object]]:
    order = np.lexsort((rows["first_ts"], rows["reader_id"], rows["tag_id"]))
    return {k: [x if x == x else "nan" for x in v[order].tolist()] for k, v in rows.items()}


@PROP
@given(reads=read_sets(), data=st.data(), lateness=st.integers(1, 200))
def test_first_tags_part_then_the_rest_equals_one_call(
    reads: Reads, data: st.DataObject, lateness: int
) -> None:
    """A worker applies a hotlisted tag's reads before the bulk of the batch, to alert sooner:
    the two parts must add up to exactly one call (rows, version, late reads and state)."""
    whole, parts = Sessionizer(GAP, lateness, REG), Sessionizer(GAP, lateness, REG)
    for v, batch in enumerate(split(reads, data)):
        tags = data.draw(st.lists(st.sampled_from([0, 2**63 + 5, 2**64 - 1])))
        first_tags = np.unique(np.array(tags, dtype=np.uint64))
        one = whole.process(batch, v)
        a, b = parts.process_parts(batch, v, first_tags)
        assert not np.isin(b.rows["tag_id"], first_tags).any()
        assert not (~np.isin(a.rows["tag_id"], first_tags)).any()
        both = {k: np.concatenate([a.rows[k], b.rows[k]]) for k in one.rows}
        assert _sorted_rows(both) == _sorted_rows(one.rows)
        assert a.late.ts_ms.tolist() == one.late.ts_ms.tolist() and len(b.late) == 0
        assert a.n_duplicates + b.n_duplicates == one.n_duplicates
        assert parts.last_version == whole.last_version
    # The layout in memory may differ (keys inserted in another order); the content may not.
    assert (parts.n_state_reads, parts.watermark) == (whole.n_state_reads, whole.watermark)


@PROP
@given(reads=read_sets(), data=st.data())
def test_redelivered_batches_change_nothing(reads: Reads, data: st.DataObject) -> None:
    s, store = Sessionizer(GAP, BIG, REG), Store()
    batches = split(reads, data)
    for v, batch in enumerate(batches):
        store.apply(s.process(batch, v))
        again = s.process(batch, v)  # immediate redelivery: reads are a set
        assert len(again) == 0
        old = data.draw(st.integers(0, v))  # an older message comes back with its old version
        store.apply(s.process(batches[old], old))
    assert_same(store.current(), reference_sightings(reads, GAP, REG))


@PROP
@given(reads=read_sets(), data=st.data())
def test_crash_restore_and_replay_gives_the_same_result(reads: Reads, data: st.DataObject) -> None:
    batches = split(reads, data)
    checkpoint = data.draw(st.integers(0, len(batches)))
    crash = data.draw(st.integers(checkpoint, len(batches)))
    s, store = Sessionizer(GAP, BIG, REG), Store()
    for v, batch in enumerate(batches[:checkpoint]):
        store.apply(s.process(batch, v))
    blob = s.snapshot()
    for v, batch in enumerate(batches[checkpoint:crash], start=checkpoint):
        store.apply(s.process(batch, v))  # emitted, then the worker dies before the next checkpoint
    s2 = Sessionizer(GAP, BIG, REG)
    s2.restore(blob)
    for v, batch in enumerate(batches[checkpoint:], start=checkpoint):
        store.apply(s2.process(batch, v))
    assert_same(store.current(), reference_sightings(reads, GAP, REG))


@PROP
@given(reads=read_sets(), data=st.data(), lateness=st.integers(1, 60))
def test_late_reads_backfilled_from_raw_reads_give_the_reference(
    reads: Reads, data: st.DataObject, lateness: int
) -> None:
    s, store = Sessionizer(GAP, lateness, REG, evict_every_ms=1), Store()
    received: list[Reads] = []  # the raw-reads table: whatever arrived, late or not
    pending: list[Reads] = []  # the late-reads topic, not yet backfilled
    version = 0
    for batch in split(reads, data):
        ch = s.process(batch, version)
        store.apply(ch)
        received.append(batch)
        pending.append(ch.late)
        version += 1
        if data.draw(st.booleans()):  # backfill now, or later
            _backfill(s, store, Reads.concat(pending), Reads.concat(received), version)
            pending, version = [], version + 1
    _backfill(s, store, Reads.concat(pending), Reads.concat(received), version)
    assert_same(store.current(), reference_sightings(reads, GAP, REG))


def _backfill(s: Sessionizer, store: Store, late: Reads, raw: Reads, version: int) -> None:
    stored = store.current()
    window = backfill_window(late, stored, GAP)
    store.apply(s.backfill(late, select_window(raw, window), stored, version))


def R(*rows: tuple) -> Reads:
    names = ("tag_id", "reader_id", "ts_ms", "rssi_dbm")
    return Reads.from_columns(**dict(zip(names, zip(*rows, strict=True), strict=True)))


def test_a_late_read_merging_two_sightings_retracts_the_second() -> None:
    s = Sessionizer(30_000, BIG, REG)
    first = s.process(R((1, 0, 0, -60), (1, 0, 40_000, -61)), 5)
    assert first.rows["first_ts"].tolist() == [0, 40_000]
    assert first.rows["version"].tolist() == [5, 5]
    ch = s.process(R((1, 0, 20_000, -65)), 6)
    got = sorted(
        zip(
            ch.rows["first_ts"].tolist(),
            ch.rows["is_deleted"].tolist(),
            ch.rows["n_reads"].tolist(),
            strict=True,
        )
    )
    assert got == [(0, 0, 3), (40_000, 1, 1)]
    assert set(ch.rows["version"].tolist()) == {6}


def test_versions_never_go_backwards() -> None:
    s = Sessionizer(30_000, BIG, REG)
    assert s.process(R((1, 0, 0, -60)), 10).rows["version"].tolist() == [10]
    assert s.process(R((1, 0, 5, -60)), 3).rows["version"].tolist() == [11]


def test_reads_behind_the_lateness_horizon_are_returned_not_applied() -> None:
    s = Sessionizer(1_000, 10_000, REG)
    s.process(R((1, 0, 100_000, -60)), 0)
    ch = s.process(R((1, 0, 89_999, -60), (1, 0, 90_000, -60), (2, 0, 5, -60)), 1)
    assert sorted(ch.late.ts_ms.tolist()) == [5, 89_999]
    assert ch.rows["first_ts"].tolist() == [90_000]


def test_final_sessions_are_evicted_from_state() -> None:
    s = Sessionizer(1_000, 10_000, REG, evict_every_ms=1)
    s.process(R((1, 0, 0, -60), (1, 0, 500, -60), (2, 0, 100, -60)), 0)
    assert s.n_state_reads == 3
    # Horizon 1_400, cutoff 400: tag 1's session ending at 500 may still grow, tag 2's is final.
    s.process(R((1, 0, 11_400, -60)), 1)
    assert s.n_state_reads == 3
    s.process(R((3, 0, 12_000, -60)), 2)  # cutoff 1_000 > 500: tag 1's first session is final
    assert s.n_state_reads == 2


def test_restore_rejects_garbage_and_another_gap() -> None:
    s = Sessionizer(30_000, BIG, REG)
    s.process(R((1, 0, 0, -60)), 0)
    with pytest.raises(ValueError, match="snapshot"):
        s.restore(b"not a snapshot")
    with pytest.raises(ValueError, match="gap_ms"):
        Sessionizer(10_000, BIG, REG).restore(s.snapshot())


def test_larger_random_stream_with_growth_eviction_and_compaction() -> None:
    rng = np.random.default_rng(7)
    n = 40_000
    reads = Reads.from_columns(
        tag_id=rng.integers(0, 3_000, n),
        reader_id=rng.integers(0, 4, n),
        ts_ms=np.sort(rng.integers(0, 2_000_000, n)) + rng.integers(-3_000, 3_000, n),
        rssi_dbm=rng.integers(-70, -50, n),
    )
    s, store = Sessionizer(2_000, 20_000, REG, evict_every_ms=1_000), Store()
    late = []
    for v, idx in enumerate(np.array_split(np.arange(n), 37)):
        ch = s.process(reads.take(idx), v)
        store.apply(ch)
        late.append(ch.late)
    assert s.n_state_reads < n // 5  # eviction keeps the state near the horizon
    all_late = Reads.concat(late)
    stored = store.current()
    window = backfill_window(all_late, stored, 2_000)
    ch = s.backfill(all_late, select_window(reads, window), stored, 100)
    store.apply(ch)
    assert_same(store.current(), reference_sightings(reads, 2_000, REG))


def test_a_new_registry_places_rows_emitted_from_then_on() -> None:
    s = Sessionizer(30_000, BIG, REG)
    assert s.process(R((1, 0, 0, -60)), 0).rows["lat"].tolist() == [25.0]
    s.set_registry(ReaderRegistry.from_columns([0], [26.5], [103.5]))
    rows = s.process(R((1, 0, 10, -60)), 1).rows
    assert rows["lat"].tolist() == [26.5] and rows["lon"].tolist() == [103.5]


def test_empty_batches_and_backfills_emit_nothing() -> None:
    s = Sessionizer(30_000, BIG, REG)
    assert len(s.process(Reads.empty(), 0)) == 0
    ident = {
        k: np.empty(0, CHANGE_DTYPES[k]) for k in ("tag_id", "reader_id", "first_ts", "last_ts")
    }
    assert len(s.backfill(Reads.empty(), Reads.empty(), ident, 1)) == 0


def test_a_batch_spanning_more_than_49_days_is_sorted_correctly() -> None:
    s, store = Sessionizer(30_000, BIG, REG), Store()
    far = 2**33  # beyond the 32-bit ts offset of the fast (slot, ts) sort
    reads = R((1, 0, far, -60), (1, 0, 0, -60), (1, 0, far + 5, -61), (2, 1, 7, -60))
    store.apply(s.process(reads, 0))
    assert_same(store.current(), reference_sightings(reads, 30_000, REG))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2), st.integers(0, 120)), max_size=60),
    st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2), st.integers(0, 120)), max_size=60),
)
def test_duplicates_are_counted_exactly(
    a: list[tuple[int, int, int]], b: list[tuple[int, int, int]]
) -> None:
    """n_duplicates: reads of a batch whose identity the state (or the batch itself) held."""

    def reads(rows: list[tuple[int, int, int]]) -> Reads:
        n = len(rows)
        return Reads.from_columns(
            tag_id=[r[0] for r in rows], reader_id=[r[1] for r in rows],
            ts_ms=[1_000_000 + 1000 * r[2] for r in rows], rssi_dbm=[-50] * n, flags=[0] * n,
            lat=[np.nan] * n, lon=[np.nan] * n,
        )  # fmt: skip

    s = Sessionizer(gap_ms=30_000, max_lateness_ms=10**9, registry=REG)
    first = s.process(reads(a), version=1) if a else None
    assert first is None or first.n_duplicates == len(a) - len(set(a))
    second = s.process(reads(b), version=2) if b else None
    assert second is None or second.n_duplicates == len(b) - len(set(b) - set(a))
