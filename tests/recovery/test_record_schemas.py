"""The API's sighting and alert bodies are derived from the record types (no services needed):
the same fields, described once, with H3 cells as hex strings in every answer."""

from __future__ import annotations

from core.records.alerts import ALERT_FIELDS, Alert
from core.records.sightings import SIGHTING_COLUMNS, SIGHTING_FIELDS, Sighting
from recovery import schemas
from recovery.sse import alert_json

CELL = 0x8928308280FFFFF


def test_sighting_fields_come_from_the_record() -> None:
    assert tuple(schemas.Sighting.model_fields) == SIGHTING_FIELDS
    assert set(SIGHTING_FIELDS) <= set(SIGHTING_COLUMNS)  # a view of the store's columns
    out = schemas.sighting_out(Sighting(1, 2, 3, 4, 25.0, 102.7, CELL))
    assert out.h3_r9 == "8928308280fffff" and out.tag_id == 1


def test_alert_fields_come_from_the_record() -> None:
    api = tuple(schemas.Alert.model_fields)
    assert api == (*(f for f in ALERT_FIELDS if f != "read_published_ms"), "created_at", "event_id")
    # The live stream's events and the stored list have one shape.
    event = alert_json(Alert("a", "c", 1, 2, 3, 4, 25.0, 102.7, CELL, 99), offset=7)
    assert tuple(event) == api and event["h3_r9"] == "8928308280fffff"
    assert event["created_at"] == 99 and event["event_id"] == 7


def test_h3_cells_are_documented_hex_strings() -> None:
    for model, name in ((schemas.Sighting, "h3_r9"), (schemas.Alert, "h3_r9"),
                        (schemas.Reader, "h3_r9"), (schemas.CellBoundary, "cell")):  # fmt: skip
        prop = model.model_json_schema()["properties"][name]
        assert prop["type"] == "string" and prop["pattern"] == "^[0-9a-f]{1,16}$", model
        assert "hex" in prop["description"], model
