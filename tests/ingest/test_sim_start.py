"""The simulated city's first day (`tagtrail simulate --start`): midnight on the city's clock."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.simulator.config import DAY_MS, DEFAULT_START_MS, LOCAL_UTC_OFFSET_MS, day_start_ms


def test_the_default_day_is_the_benchmarks_day() -> None:
    assert day_start_ms("2026-03-02") == DEFAULT_START_MS


@given(st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2100, 1, 1)))
def test_a_date_starts_at_local_midnight(day: dt.date) -> None:
    ms = day_start_ms(day.isoformat())
    assert (ms + LOCAL_UTC_OFFSET_MS) % DAY_MS == 0
    assert day_start_ms((day + dt.timedelta(days=1)).isoformat()) - ms == DAY_MS


@given(st.integers(min_value=1_500_000_000_000, max_value=4_000_000_000_000))
def test_yesterday_is_the_local_day_before_now(now_ms: int) -> None:
    ms = day_start_ms("yesterday", now_ms)
    assert (ms + LOCAL_UTC_OFFSET_MS) % DAY_MS == 0
    assert DAY_MS <= now_ms - ms < 2 * DAY_MS


@pytest.mark.parametrize("bad", ["", "tomorrow", "2026-13-01", "02/03/2026"])
def test_a_bad_day_names_itself(bad: str) -> None:
    with pytest.raises(ValueError, match="neither 'yesterday' nor a date"):
        day_start_ms(bad)
