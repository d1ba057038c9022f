"""The compact sessionizer state (stream.sessionize.state) at its edges: ts offsets that rebase,
widen to
int64 and narrow back; the side pool of positions; free lists and compaction; snapshot formats."""

from __future__ import annotations

import io
import mmap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.records.reads import FLAG_MOBILE, Reads
from stream.sessionize.kernels import NO_POS
from stream.sessionize.reference import reference_sightings
from stream.sessionize.sessionizer import Sessionizer, backfill_window, select_window
from tests.stream.sessionize.test_sessionize import BIG, GAP, REG, Store, assert_same, split

T0 = 1_790_000_000_000
DAY = 86_400_000
U32 = 2**32


@st.composite
def era_reads(draw: st.DrawFn, max_size: int = 50) -> Reads:
    """Reads in clusters up to 2^33 ms apart (either side of the uint32 range), mobile or not."""
    n = draw(st.integers(0, max_size))
    ints = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    eras = np.array([0, 2**31, U32 - 30, U32 + 7, 2**33, -(2**32)], np.int64)
    era = eras[np.array(draw(ints(0, len(eras) - 1)), dtype=np.int64)]
    mobile = np.array(draw(ints(0, 1)), dtype=bool)
    pos = np.array([np.nan, 25.3, 25.4])
    return Reads.from_columns(
        tag_id=draw(ints(0, 2)),
        reader_id=draw(ints(0, 3)),
        ts_ms=T0 + era + np.array(draw(ints(0, 60)), dtype=np.int64),
        rssi_dbm=draw(ints(-62, -60)),
        flags=mobile * FLAG_MOBILE,
        lat=np.where(mobile, pos[np.array(draw(ints(0, 2)), dtype=np.int64)], np.nan),
        lon=np.where(mobile, pos[np.array(draw(ints(0, 2)), dtype=np.int64)], np.nan),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reads=era_reads(), data=st.data())
def test_far_apart_ts_and_positions_survive_batching_and_restore(
    reads: Reads, data: st.DataObject
) -> None:
    batches = split(reads, data)
    checkpoint = data.draw(st.integers(0, len(batches)))
    s, store = Sessionizer(GAP, BIG, REG), Store()
    for v, batch in enumerate(batches):
        if v == checkpoint:
            s2 = Sessionizer(GAP, BIG, REG)
            s2.restore(s.snapshot())
            s = s2
        store.apply(s.process(batch, v))
    assert_same(store.current(), reference_sightings(reads, GAP, REG))


def _stream(s: Sessionizer, store: Store, parts: list[Reads]) -> None:
    for v, batch in enumerate(parts, start=1 + max(s.last_version, 0)):
        ch = s.process(batch, v)
        assert len(ch.late) == 0
        store.apply(ch)


def _burst(t: int, tag: int = 1) -> Reads:
    return Reads.from_columns(
        tag_id=[tag, tag, tag + 1], reader_id=[0, 0, 2], ts_ms=[t, t + 5, t], rssi_dbm=[-60] * 3
    )


def test_offsets_rebase_as_time_moves_on_without_widening() -> None:
    s, store = Sessionizer(30_000, 10 * DAY, REG, evict_every_ms=DAY), Store()
    parts = [_burst(T0 + d * DAY) for d in (0, 30, 60, 100, 140)]
    bases = []
    for p in parts:
        _stream(s, store, [p])
        bases.append(s._store.ts_base)
        assert not s._store.wide
    assert len(set(bases)) > 2  # rebased on the way
    assert_same(store.current(), reference_sightings(Reads.concat(parts), 30_000, REG))


def test_a_state_spanning_more_than_49_days_widens_then_narrows_after_eviction() -> None:
    s, store = Sessionizer(30_000, 100 * DAY, REG, evict_every_ms=DAY), Store()
    parts = [_burst(T0), _burst(T0 + 60 * DAY, tag=5)]
    _stream(s, store, parts)
    assert s._store.wide  # 60 days do not fit uint32 ms offsets
    late = [_burst(T0 + 61 * DAY, tag=1), _burst(T0 - 3 * DAY, tag=7)]  # either side, still exact
    _stream(s, store, late)
    assert s._store.wide
    blob = s.snapshot()
    s = Sessionizer(30_000, 100 * DAY, REG, evict_every_ms=DAY)
    s.restore(blob)  # a wide state round-trips
    assert s._store.wide
    last = [_burst(T0 + 200 * DAY, tag=9)]  # evicts everything before day 100: span fits again
    _stream(s, store, last)
    assert not s._store.wide
    assert s.n_state_reads == 3  # only the last burst
    last.append(_burst(T0 + 200 * DAY + 9, tag=9))  # merges with the narrowed reads
    _stream(s, store, last[1:])
    assert_same(
        store.current(), reference_sightings(Reads.concat(parts + late + last), 30_000, REG)
    )


def test_an_earlier_batch_rebases_down() -> None:
    s, store = Sessionizer(30_000, BIG, REG), Store()
    parts = [_burst(T0), _burst(T0 - 30 * DAY, tag=3), _burst(T0 - 45 * DAY, tag=1)]
    bases = []
    for p in parts:
        _stream(s, store, [p])
        bases.append(s._store.ts_base)
    assert bases[0] > bases[1] and not s._store.wide
    assert_same(store.current(), reference_sightings(Reads.concat(parts), 30_000, REG))


def _city_like(n: int, seed: int) -> Reads:
    """Many keys, 10% of them on mobile readers (3) with positions, over ~2,000 s."""
    rng = np.random.default_rng(seed)
    reader = rng.integers(0, 4, n)
    mobile = (reader == 3) & (rng.random(n) < 0.9)
    return Reads.from_columns(
        tag_id=rng.integers(0, 2_000, n),
        reader_id=reader,
        ts_ms=np.sort(rng.integers(0, 2_000_000, n)) + rng.integers(-3_000, 3_000, n),
        rssi_dbm=rng.integers(-70, -50, n),
        flags=mobile * FLAG_MOBILE,
        lat=np.where(mobile, 25.0 + rng.integers(0, 3, n) / 10, np.nan),
        lon=np.where(mobile, 102.0 + rng.integers(0, 3, n) / 10, np.nan),
    )


def test_positions_free_lists_compaction_and_restore_on_a_longer_stream() -> None:
    reads = _city_like(40_000, seed=11)
    s, store = Sessionizer(2_000, 20_000, REG, evict_every_ms=1_000), Store()
    late, compacted = [], 0
    for v, idx in enumerate(np.array_split(np.arange(len(reads)), 41)):
        n_keys = s._store.n_keys
        ch = s.process(reads.take(idx), v)
        compacted += s._store.n_keys < n_keys
        store.apply(ch)
        late.append(ch.late)
        st_ = s._store
        live = st_.k_len[: st_.n_keys] > 0
        with_pos = st_.k_pos[: st_.n_keys] != NO_POS
        # Only keys of the mobile reader carry a side segment.
        assert set(st_.k_reader[: st_.n_keys][with_pos & live].tolist()) <= {3}
        if v % 10 == 5:
            s2 = Sessionizer(2_000, 20_000, REG, evict_every_ms=1_000)
            s2.restore(s.snapshot())
            s = s2
    assert compacted > 0
    # Free lists recycle outgrown segments: the pool stays close to the reads it holds.
    assert s._store.p_used <= 2 * s.n_state_reads + 4_096
    all_late = Reads.concat(late)
    stored = store.current()
    window = backfill_window(all_late, stored, 2_000)
    store.apply(s.backfill(all_late, select_window(reads, window), stored, 100))
    assert_same(store.current(), reference_sightings(reads, 2_000, REG))


def _previous_format_blob(s: Sessionizer) -> bytes:
    """What the npz snapshot of the previous state layout held for the same state."""
    st_ = s._store
    keys = np.flatnonzero(st_.k_len[: st_.n_keys] > 0)
    cols: dict[str, list] = {k: [] for k in ("ts", "rssi", "flags", "lat", "lon")}
    for k in keys:
        a, n = int(st_.k_start[k]), int(st_.k_len[k])
        cols["ts"] += (st_.pool["ts"][a : a + n].astype(np.int64) + st_.ts_base).tolist()
        cols["rssi"] += st_.pool["rssi"][a : a + n].tolist()
        cols["flags"] += st_.pool["flags"][a : a + n].tolist()
        q = int(st_.k_pos[k])
        for c in ("lat", "lon"):
            cols[c] += st_.pos[c][q : q + n].tolist() if q != NO_POS else [np.nan] * n
    dts = {"ts": np.int64, "rssi": np.int8, "flags": np.uint8, "lat": float, "lon": float}
    meta = {"format": 1, "gap_ms": s.gap_ms, "max_lateness_ms": s.max_lateness_ms}
    meta |= {"watermark": s.watermark, "last_version": s.last_version, "evicted_at": _NO_TS}
    buf = io.BytesIO()
    np.savez(
        buf,
        tag=st_.k_tag[keys],
        reader=st_.k_reader[keys],
        len=st_.k_len[keys].astype(np.int64),
        **{k: np.array(v, dtype=dts[k]) for k, v in cols.items()},
        **{f"meta_{k}": np.array([v], np.int64) for k, v in meta.items()},
    )
    return buf.getvalue()


_NO_TS = np.iinfo(np.int64).min


def test_a_checkpoint_of_the_previous_format_is_restored() -> None:
    reads = _city_like(6_000, seed=3)
    first, rest = reads.take(np.arange(3_000)), reads.take(np.arange(3_000, 6_000))
    s, store = Sessionizer(2_000, BIG, REG), Store()
    store.apply(s.process(first, 0))
    blob = _previous_format_blob(s)
    s2 = Sessionizer(2_000, BIG, REG)
    s2.restore(blob)
    assert s2.n_state_reads == s.n_state_reads
    store.apply(s2.process(rest, 1))
    assert_same(store.current(), reference_sightings(reads, 2_000, REG))


def test_a_truncated_or_foreign_snapshot_is_a_clear_error() -> None:
    s = Sessionizer(30_000, BIG, REG)
    s.process(_city_like(500, seed=1), 0)
    blob = s.snapshot()
    for bad in (blob[:-3], blob[:20], b"TTSTATE2" + b"\xff" * 30, blob + b"x"):
        with pytest.raises(ValueError, match="not a sessionizer snapshot"):
            Sessionizer(30_000, BIG, REG).restore(bad)
    s._store.k_len[0] = 10**6  # a corrupt segment would make the kernels write out of bounds
    with pytest.raises(ValueError, match="out of bounds"):
        Sessionizer(30_000, BIG, REG).restore(s.snapshot())


def test_snapshot_parts_written_to_a_file_restore_from_an_mmap(tmp_path: Path) -> None:
    reads = _city_like(4_000, seed=5)
    s, store = Sessionizer(2_000, BIG, REG), Store()
    store.apply(s.process(reads.take(np.arange(2_000)), 0))
    path = tmp_path / "state.bin"
    with open(path, "wb") as f:
        f.writelines(s.snapshot_parts())
    assert path.read_bytes() == s.snapshot()
    s2 = Sessionizer(2_000, BIG, REG)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        s2.restore(mm)
    store.apply(s2.process(reads.take(np.arange(2_000, 4_000)), 1))
    assert_same(store.current(), reference_sightings(reads, 2_000, REG))
