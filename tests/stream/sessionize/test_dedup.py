"""The offline reference of the sighting contract on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from h3.api import basic_int

from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from core.records.sightings import SIGHTING_DTYPES
from stream.geoindex import cells_for
from stream.sessionize.reference import reference_sightings

REG = ReaderRegistry.from_columns([7, 3], [25.05, 25.01], [102.71, 102.65])


def reads(*rows: tuple) -> Reads:
    """rows of (tag, reader, ts, rssi[, flags, lat, lon])."""
    cols = list(zip(*[r + (0, np.nan, np.nan)[len(r) - 4 :] for r in rows], strict=True))
    names = ("tag_id", "reader_id", "ts_ms", "rssi_dbm", "flags", "lat", "lon")
    return Reads.from_columns(**dict(zip(names, cols, strict=True)))


def test_gap_equal_to_gap_ms_continues_and_one_more_ms_splits() -> None:
    s = reference_sightings(reads((1, 3, 0, -60), (1, 3, 30_000, -60)), 30_000, REG)
    assert s["first_ts"].tolist() == [0] and s["last_ts"].tolist() == [30_000]
    s = reference_sightings(reads((1, 3, 0, -60), (1, 3, 30_001, -60)), 30_000, REG)
    assert s["first_ts"].tolist() == [0, 30_001] and s["n_reads"].tolist() == [1, 1]


def test_duplicate_identity_is_one_read_with_the_strongest_rssi() -> None:
    s = reference_sightings(reads((1, 3, 5, -70), (1, 3, 5, -50), (1, 3, 9, -80)), 30_000, REG)
    assert s["n_reads"].tolist() == [2]
    assert s["max_rssi"].tolist() == [-50]


def test_columns_and_dtypes_follow_the_contract() -> None:
    s = reference_sightings(reads((1, 3, 5, -70)), 30_000, REG)
    assert list(s) == list(SIGHTING_DTYPES)
    assert all(s[k].dtype == dt for k, dt in SIGHTING_DTYPES.items())
    empty = reference_sightings(Reads.empty(), 30_000, REG)
    assert all(len(v) == 0 and v.dtype == SIGHTING_DTYPES[k] for k, v in empty.items())


def test_fixed_reader_takes_its_registered_position_and_cells() -> None:
    s = reference_sightings(reads((1, 7, 5, -70), (2, 99, 5, -70)), 30_000, REG)
    assert s["lat"][0] == 25.05 and s["lon"][0] == 102.71
    assert int(s["h3_r9"][0]) == basic_int.latlng_to_cell(25.05, 102.71, 9)
    assert int(s["h3_r12"][0]) == basic_int.latlng_to_cell(25.05, 102.71, 12)
    # An unregistered fixed reader has no position: NaN and the null cell 0.
    assert np.isnan(s["lat"][1]) and int(s["h3_r7"][1]) == 0


def test_mobile_position_is_the_strongest_read_earliest_on_ties() -> None:
    m = FLAG_MOBILE
    s = reference_sightings(
        reads(
            (1, 50, 1000, -60, m, 25.1, 102.1),
            (1, 50, 2000, -55, m, 25.2, 102.2),  # strongest, earliest of the two ties
            (1, 50, 3000, -55, m, 25.3, 102.3),
            (1, 50, 4000, -70, m, 25.4, 102.4),
        ),
        30_000,
        REG,
    )
    assert (s["lat"][0], s["lon"][0]) == (25.2, 102.2)
    assert int(s["h3_r7"][0]) == basic_int.latlng_to_cell(25.2, 102.2, 7)


def test_duplicate_identity_with_different_positions_resolves_to_min_lat_lon() -> None:
    m = FLAG_MOBILE
    rows = [(1, 50, 1000, -55, m, 25.3, 102.0), (1, 50, 1000, -55, m, 25.2, 102.9)]
    for order in (rows, rows[::-1]):
        s = reference_sightings(reads(*order), 30_000, REG)
        assert s["n_reads"].tolist() == [1]
        assert (s["lat"][0], s["lon"][0]) == (25.2, 102.9)
    # A stronger duplicate wins over a smaller lat.
    s = reference_sightings(reads(rows[1], (1, 50, 1000, -40, m, 25.9, 102.0)), 30_000, REG)
    assert (s["lat"][0], s["max_rssi"][0]) == (25.9, -40)


def test_a_late_read_in_the_gap_merges_two_sightings() -> None:
    base = [(1, 3, 0, -60), (1, 3, 40_000, -61)]
    assert len(reference_sightings(reads(*base), 30_000, REG)["tag_id"]) == 2
    s = reference_sightings(reads(*base, (1, 3, 20_000, -65)), 30_000, REG)
    assert s["first_ts"].tolist() == [0] and s["last_ts"].tolist() == [40_000]
    assert s["n_reads"].tolist() == [3] and s["max_rssi"].tolist() == [-60]


def test_keys_are_sessionized_independently_and_rows_sorted() -> None:
    s = reference_sightings(
        reads((2, 3, 10, -60), (1, 7, 10, -60), (1, 3, 10, -60), (1, 3, 15, -60)), 30_000, REG
    )
    assert list(zip(s["tag_id"].tolist(), s["reader_id"].tolist(), strict=True)) == [
        (1, 3),
        (1, 7),
        (2, 3),
    ]
    assert s["n_reads"].tolist() == [2, 1, 1]


def test_cells_for_matches_h3py_and_maps_nan_to_zero() -> None:
    lat = np.array([25.0, -33.9, np.nan, 89.9])
    lon = np.array([102.7, 151.2, 3.0, -179.9])
    cells = cells_for(lat, lon)
    for res, c in zip((7, 9, 12), cells, strict=True):
        assert c.dtype == np.uint64
        assert int(c[2]) == 0
        for i in (0, 1, 3):
            assert int(c[i]) == basic_int.latlng_to_cell(lat[i], lon[i], res)


def test_registry_rejects_unsorted_ids_and_from_columns_sorts() -> None:
    with pytest.raises(ValueError, match="sorted"):
        ReaderRegistry(np.array([3, 1], np.uint32), np.zeros(2), np.zeros(2))
    reg = ReaderRegistry.from_columns([9, 2, 9], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert reg.reader_id.tolist() == [2, 9] and reg.lat.tolist() == [2.0, 3.0]
