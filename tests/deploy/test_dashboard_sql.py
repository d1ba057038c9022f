"""The dashboards' ClickHouse panels count live sightings: a late read that merges two sightings
(one retracted) must not leave the retracted one in the per-cell and per-reader counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from h3.api import basic_int as h3i

from core.config import Settings
from core.records.sightings import SIGHTING_DTYPES
from store import queries as q
from store.open import open_store
from store.store import Store
from store.writes import upsert_readers
from tests.deploy import promlive
from tests.store.conftest import TODAY_MS

T0 = TODAY_MS - 86_400_000 + 3_600_000
CELL = h3i.latlng_to_cell(25.0, 102.7, 9)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        yield s
    finally:
        s.close()


def _sighting(tag: int, reader: int, first: int, last: int) -> dict[str, np.ndarray]:
    cols = {k: np.zeros(1, dt) for k, dt in SIGHTING_DTYPES.items()}
    cols.update(tag_id=np.array([tag]), reader_id=np.array([reader]), first_ts=np.array([first]))
    cols.update(last_ts=np.array([last]), n_reads=np.array([2]))
    cols.update(h3_r7=np.array([CELL]), h3_r9=np.array([CELL]), h3_r12=np.array([CELL]))
    return cols


def _panel_sql(title: str) -> str:
    texts = [x.text for x in promlive.dashboard_queries() if x.kind == "sql" and x.panel == title]
    assert len(texts) == 1, f"one SQL target expected on panel {title!r}, found {len(texts)}"
    window = (
        ("$__fromTime_ms", f"fromUnixTimestamp64Milli({T0 - 3_600_000})"),
        ("$__toTime_ms", f"fromUnixTimestamp64Milli({T0 + 3_600_000})"),
    )
    text = texts[0]
    for macro, value in window:
        text = text.replace(macro, value)
    return text


@pytest.mark.parametrize(
    ("title", "column"),
    [
        ("Sightings per minute, whole city", "sightings"),
        ("Busiest cells", "sightings"),
        ("Readers by last activity (silent first)", "sightings"),
    ],
)
def test_sql_panels_subtract_retracted_sightings(store: Store, title: str, column: str) -> None:
    # Tag 1 at reader 7: two sightings 40 s apart, in one minute; then a late read between them
    # merges them: the second identity is retracted, the first one extended.
    q.insert_sightings(store, _sighting(1, 7, T0, T0 + 1_000), version=1)
    q.insert_sightings(store, _sighting(1, 7, T0 + 41_000, T0 + 42_000), version=2)
    q.insert_sightings(store, _sighting(2, 7, T0 + 5_000, T0 + 6_000), version=3)
    r7, r9, r12 = (np.array([CELL], np.uint64) for _ in range(3))
    upsert_readers(
        store,
        {
            "reader_id": np.array([7], np.uint32), "lat": np.array([25.0]),
            "lon": np.array([102.7]), "kind": np.array([1], np.int8),
            "gateway_id": np.array([1], np.uint32), "district": np.array(["north"], object),
            "h3_r7": r7, "h3_r9": r9, "h3_r12": r12,
            "updated_at": np.array([1], np.int64),
        },
    )  # fmt: skip
    before = store.backend.query_columns(_panel_sql(title))[column]
    assert int(np.sum(before)) == 3
    q.insert_sightings(store, _sighting(1, 7, T0, T0 + 42_000), version=4)
    q.insert_sightings(store, _sighting(1, 7, T0 + 41_000, T0 + 41_000), version=4, is_deleted=1)
    after = store.backend.query_columns(_panel_sql(title))[column]
    assert int(np.sum(after)) == 2
