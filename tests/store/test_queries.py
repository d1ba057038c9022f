"""Query library against a numpy reference: write sightings (with retries, upserts, retractions),
read them back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from h3.api import basic_int as h3i

from benchmarks.synthetic import make_readers, make_sightings
from core.records.reads import Reads
from core.records.sightings import SIGHTING_DTYPES
from store import queries as q
from store.store import Store
from tests.store.conftest import TODAY_MS

DAY0 = TODAY_MS - 86_400_000
CELL = h3i.latlng_to_cell(25.0, 102.7, 9)


@pytest.fixture
def loaded(store: Store) -> tuple[Store, dict[str, np.ndarray], dict[str, np.ndarray]]:
    readers = make_readers(60)
    s = make_sightings(20_000, readers, n_tags=500, day_start_ms=DAY0)
    n = len(s["tag_id"])
    half = n // 2
    parts = [{k: v[:half] for k, v in s.items()}, {k: v[half:] for k, v in s.items()}]
    q.insert_sightings(store, parts[0], version=1, dedup_token="b0")
    q.insert_sightings(store, parts[0], version=1, dedup_token="b0")  # a retried batch
    q.insert_sightings(store, parts[1], version=1, dedup_token="b1")
    # Upsert every 7th sighting (longer, more reads), retract every 11th.
    up = np.arange(0, n, 7)
    upd = {k: v[up].copy() for k, v in s.items()}
    upd["last_ts"] += 5_000
    upd["n_reads"] += 1
    q.insert_sightings(store, upd, version=2, dedup_token="u")
    rt = np.arange(0, n, 11)
    q.insert_sightings(store, {k: v[rt] for k, v in s.items()}, version=3, is_deleted=1)
    ref = {k: v.copy() for k, v in s.items()}
    ref["last_ts"][up] += 5_000
    ref["n_reads"][up] += 1
    alive = np.ones(n, bool)
    alive[rt] = False
    ref = {k: v[alive] for k, v in ref.items()}
    return store, ref, s


def test_retried_batch_stored_once(loaded: tuple) -> None:
    store, ref, s = loaded
    n = len(s["tag_id"])
    rows = store.backend.execute("SELECT count() FROM sightings")[0][0]
    # inserts: n rows + upserts + retractions; the retried half is not there twice
    assert rows == n + len(range(0, n, 7)) + len(range(0, n, 11))
    agg = q.heatmap(store, 9, DAY0, DAY0 + 86_400_000)
    assert int(agg["sightings"].sum()) == len(ref["tag_id"])  # live sightings, each once
    # The per-reader aggregates saw the retried batch once, and subtract the retractions.
    h = q.reader_health(store, DAY0, DAY0 + 86_400_000)
    assert int(h.sightings.sum()) == len(ref["tag_id"])


def test_export_matches_reference(loaded: tuple) -> None:
    store, ref, _ = loaded
    got = q.export_sightings(store)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_track_and_last_seen(loaded: tuple) -> None:
    store, ref, _ = loaded
    for tag in (1, 17, 250, 499):
        lo, hi = DAY0 + 3_600_000, DAY0 + 15 * 3_600_000
        m = (ref["tag_id"] == tag) & (ref["first_ts"] < hi) & (ref["last_ts"] >= lo)
        got = q.track(store, tag, lo, hi)
        order = np.lexsort((ref["reader_id"][m], ref["first_ts"][m]))
        for k in ("reader_id", "first_ts", "last_ts", "n_reads", "lat"):
            np.testing.assert_array_equal(got[k], ref[k][m][order], err_msg=k)
        mt = ref["tag_id"] == tag
        ls = q.last_seen(store, tag)
        assert ls is not None and ls.last_ts == ref["last_ts"][mt].max()
    assert q.last_seen(store, 10**12) is None


def test_area_by_cells_and_radius(loaded: tuple) -> None:
    store, ref, _ = loaded
    lo, hi = DAY0 + 10 * 3_600_000, DAY0 + 11 * 3_600_000
    cells = np.unique(ref["h3_r9"])[:5]
    got = q.sightings_in_area(store, lo, hi, cells=cells)
    m = np.isin(ref["h3_r9"], cells) & (ref["first_ts"] < hi) & (ref["last_ts"] >= lo)
    assert len(got["tag_id"]) == m.sum() > 0
    assert set(zip(got["tag_id"], got["first_ts"], strict=True)) == set(
        zip(ref["tag_id"][m], ref["first_ts"][m], strict=True)
    )
    lat, lon, r = 25.03, 102.72, 2_500.0
    got = q.sightings_in_area(store, lo, hi, lat=lat, lon=lon, radius_m=r)
    d = q._haversine_m(ref["lat"], ref["lon"], lat, lon)
    m = (d <= r) & (ref["first_ts"] < hi) & (ref["last_ts"] >= lo)
    assert len(got["tag_id"]) == m.sum() > 0


def test_heatmap(loaded: tuple) -> None:
    store, ref, s = loaded
    lo, hi = DAY0 + 8 * 3_600_000, DAY0 + 9 * 3_600_000
    got = q.heatmap(store, 7, lo, hi)
    # Live sightings only: upserts counted once, retractions not at all.
    m = (ref["first_ts"] >= lo) & (ref["first_ts"] < hi)
    cells, counts = np.unique(ref["h3_r7"][m], return_counts=True)
    np.testing.assert_array_equal(got["cell"], cells)
    np.testing.assert_array_equal(got["sightings"], counts)
    fine = q.heatmap(store, 12, lo, hi)
    assert int(fine["sightings"].sum()) == m.sum()
    assert len(s["tag_id"]) > len(ref["tag_id"])  # retractions were exercised


def test_reader_health(store: Store) -> None:
    readers = make_readers(10)
    q.upsert_readers(store, readers)
    t0 = TODAY_MS - 3_600_000
    reads = Reads.from_columns(
        tag_id=np.array([1, 2, 2, 3]), reader_id=np.array([1, 1, 2, 42]),
        ts_ms=np.array([t0, t0 + 1, t0 + 61_000, t0 + 5]), rssi_dbm=np.full(4, -50),
    )  # fmt: skip
    q.insert_raw_reads(store, reads, dedup_token="r")
    q.insert_raw_reads(store, reads, dedup_token="r")
    h = q.reader_health(store, t0, t0 + 3_600_000)
    by_id = dict(zip(h.reader_id.tolist(), h.reads.tolist(), strict=True))
    assert by_id[1] == 2 and by_id[2] == 1 and by_id[42] == 1
    assert set(h.reader_id[h.silent].tolist()) == set(range(3, 11))
    assert not h.registered[h.reader_id == 42][0]


def _one(tag: int, reader: int, first: int, last: int, cell: int) -> dict[str, np.ndarray]:
    cols = {k: np.zeros(1, dt) for k, dt in SIGHTING_DTYPES.items()}
    cols.update(tag_id=np.array([tag]), reader_id=np.array([reader]), first_ts=np.array([first]))
    cols.update(last_ts=np.array([last]), h3_r9=np.array([cell]), h3_r7=np.array([cell]))
    cols.update(h3_r12=np.array([cell]), n_reads=np.array([1]))
    return cols


def test_last_seen_when_the_latest_is_retracted(store: Store) -> None:
    t0 = DAY0 + 3_600_000
    q.insert_sightings(store, _one(5, 1, t0, t0 + 10, CELL), version=1)
    q.insert_sightings(store, _one(5, 2, t0 + 100, t0 + 200, CELL), version=2)
    assert q.last_seen(store, 5).reader_id == 2  # type: ignore[union-attr]
    # The later sighting is retracted by a row without its cell (as a backfill sends them).
    q.insert_sightings(store, _one(5, 2, t0 + 100, t0 + 100, 0), version=3, is_deleted=1)
    assert q.last_seen(store, 5).reader_id == 1  # type: ignore[union-attr]
    q.insert_sightings(store, _one(5, 1, t0, t0 + 10, CELL), version=4, is_deleted=1)
    assert q.last_seen(store, 5) is None


def test_area_index_follows_a_sighting_that_moved_cell(store: Store) -> None:
    t0 = DAY0 + 3_600_000
    a, b = (h3i.latlng_to_cell(25.0, lon, 9) for lon in (102.70, 102.75))
    # A mobile reader's sighting: a later version has another representative read and cell.
    q.insert_sightings(store, _one(6, 90, t0, t0 + 10, a), version=1)
    q.insert_sightings(store, _one(6, 90, t0, t0 + 20, b), version=2)
    q.insert_sightings(store, _one(7, 91, t0, t0 + 10, a), version=1)
    q.insert_sightings(store, _one(7, 91, t0, t0, 0), version=2, is_deleted=1)
    lo, hi = t0 - 1000, t0 + 1000
    assert len(q.sightings_in_area(store, lo, hi, cells=[a])["tag_id"]) == 0
    got = q.sightings_in_area(store, lo, hi, cells=[b])
    assert got["tag_id"].tolist() == [6] and got["last_ts"].tolist() == [t0 + 20]
    assert q.heatmap(store, 9, lo, hi)["sightings"].tolist() == [1]
