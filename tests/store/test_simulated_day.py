"""Acceptance: a simulated city, sessionized by the streaming Sessionizer (upserts, retractions,
shuffled batches), stored, and every query compared with the reference sightings in numpy."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from core.config import Settings
from ingest.simulator import CityConfig, simulate
from store import queries as q
from store.open import open_store
from store.store import Store
from stream.followers.registry import registry_from_rows
from stream.sessionize.reference import reference_sightings
from stream.sessionize.sessionizer import Sessionizer
from tagtrail.demo import yesterday_rush_hour_ms

GAP_MS = 30_000
KEY = ("tag_id", "reader_id", "first_ts")


@pytest.fixture(scope="module")
def city() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """(reference sightings, the Sessionizer's change batches, the reader registry)."""
    sim = simulate(
        CityConfig(scale=0.02, duration_s=900, seed=23, start_ms=yesterday_rush_hour_ms())
    )
    reg = sim.readers
    rows = {
        int(r): {"lat": la, "lon": lo, "kind": k}
        for r, la, lo, k in zip(reg["reader_id"], reg["lat"], reg["lon"], reg["kind"], strict=True)
    }
    registry = registry_from_rows(rows)
    reads, gateway = sim.reads, sim.gateway_id
    # Gateway batches, shuffled in rounds: reads arrive out of order, so sessions merge later
    # and earlier identities get retracted.
    bounds = np.flatnonzero(np.diff(gateway.astype(np.int64)) != 0) + 1
    groups = np.split(np.arange(len(reads)), bounds)
    rng = np.random.default_rng(3)
    order = np.concatenate([rng.permutation(r) for r in np.array_split(np.arange(len(groups)), 6)])
    sess = Sessionizer(GAP_MS, 48 * 3_600_000, registry)
    changes = []
    for v, gi in enumerate(order):
        ch = sess.process(reads.take(groups[gi]), v)
        assert len(ch.late) == 0
        if len(ch):
            changes.append(ch.rows)
    ref = reference_sightings(reads, GAP_MS, registry)
    return ref, changes, reg


@pytest.fixture(scope="module")
def day(
    city: tuple, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, dict[str, np.ndarray]]]:
    ref, changes, _ = city
    store = open_store(Settings(data_dir=tmp_path_factory.mktemp("day")))
    try:
        # Many upsert batches make many parts; the queries must be exact before any merge.
        for i in range(0, len(changes), 50):
            part = {k: np.concatenate([c[k] for c in changes[i : i + 50]]) for k in changes[0]}
            q.insert_sightings(store, part, dedup_token=f"c{i}")
        assert sum(int(c["is_deleted"].sum()) for c in changes) > 0, "no retraction exercised"
        yield store, ref
    finally:
        store.close()


def _keys(cols: dict[str, np.ndarray], m: np.ndarray | slice = slice(None)) -> set[tuple]:
    return set(zip(*(cols[k][m].tolist() for k in KEY), strict=True))


def test_export_equals_reference(day: tuple) -> None:
    store, ref = day
    got = q.export_sightings(store)
    order = np.lexsort((ref["reader_id"], ref["first_ts"], ref["tag_id"]))
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v[order], err_msg=k)


def test_track_and_last_seen(day: tuple) -> None:
    store, ref = day
    tags = np.unique(ref["tag_id"])
    lo, hi = int(ref["first_ts"].min()), int(ref["last_ts"].max()) + 1
    mid = (lo + hi) // 2
    for tag in np.random.default_rng(1).choice(tags, 40, replace=False).tolist():
        for a, b in ((lo, hi), (mid, hi), (lo, mid)):
            m = (ref["tag_id"] == tag) & (ref["first_ts"] < b) & (ref["last_ts"] >= a)
            got = q.track(store, tag, a, b)
            order = np.lexsort((ref["reader_id"][m], ref["first_ts"][m]))
            for k in ("reader_id", "first_ts", "last_ts", "n_reads", "max_rssi", "h3_r9"):
                np.testing.assert_array_equal(got[k], ref[k][m][order], err_msg=k)
        mt = np.flatnonzero(ref["tag_id"] == tag)
        best = mt[np.lexsort((ref["reader_id"][mt], ref["first_ts"][mt], ref["last_ts"][mt]))[-1]]
        ls = q.last_seen(store, tag)
        assert ls is not None
        assert (ls.reader_id, ls.first_ts, ls.last_ts, ls.h3_r9) == (
            ref["reader_id"][best], ref["first_ts"][best], ref["last_ts"][best], ref["h3_r9"][best]
        )  # fmt: skip


def test_area(day: tuple) -> None:
    store, ref = day
    lo = int(ref["first_ts"].min()) + 120_000
    hi = lo + 300_000
    cells, counts = np.unique(ref["h3_r9"][ref["h3_r9"] != 0], return_counts=True)
    for cell in cells[np.argsort(counts)[-5:]].tolist():
        m = (ref["h3_r9"] == cell) & (ref["first_ts"] < hi) & (ref["last_ts"] >= lo)
        got = q.sightings_in_area(store, lo, hi, cells=[cell])
        assert len(got["tag_id"]) == m.sum() > 0
        assert _keys(got) == _keys(ref, m)
    lat, lon = float(np.nanmedian(ref["lat"])), float(np.nanmedian(ref["lon"]))
    got = q.sightings_in_area(store, lo, hi, lat=lat, lon=lon, radius_m=1_500.0)
    d = q._haversine_m(ref["lat"], ref["lon"], lat, lon)
    m = (d <= 1_500.0) & (ref["first_ts"] < hi) & (ref["last_ts"] >= lo)
    assert _keys(got) == _keys(ref, m) and m.sum() > 0


@pytest.mark.parametrize("res", [7, 9, 12])
def test_heatmap(day: tuple, res: int) -> None:
    store, ref = day
    lo = (int(ref["first_ts"].min()) // 60_000 + 2) * 60_000
    hi = lo + 600_000
    m = (ref["first_ts"] >= lo) & (ref["first_ts"] < hi) & (ref["h3_r12"] != 0)
    col = {7: "h3_r7", 9: "h3_r9", 12: "h3_r12"}[res]
    cells, inv = np.unique(ref[col][m], return_inverse=True)
    got = q.heatmap(store, res, lo, hi)
    np.testing.assert_array_equal(got["cell"], cells)
    np.testing.assert_array_equal(got["sightings"], np.bincount(inv))
    tags = np.array([len(np.unique(ref["tag_id"][m][inv == i])) for i in range(len(cells))])
    np.testing.assert_array_equal(got["tags"], tags)
