"""The SSE event payload is exactly `json.dumps` of the API's alert JSON (no services needed)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from core.records.alerts import Alert
from recovery.sse import alert_json, event_data
from tests.stream.followers.test_hotlist import ALERT_FIELDS


@settings(max_examples=300, deadline=None)
@given(*ALERT_FIELDS, st.integers(0, 2**63 - 1))
def test_event_data_is_json_dumps_of_alert_json(
    aid: str, case: str, tag: int, reader: int, ts: int, lat: float, lon: float, offset: int
) -> None:
    a = Alert(aid, case, tag, reader, ts, ts + 1, lat, lon, tag, ts)
    assert event_data(a, offset) == json.dumps(alert_json(a, offset))
