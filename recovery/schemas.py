"""Request and response bodies of the recovery API (their schemas are the OpenAPI contract).

Sightings and alerts are derived from their record types (`core.records`): the records define
the fields and their meaning once; here each field gets its API spelling. Times are UTC epoch
milliseconds. H3 cells are lowercase hex strings (`H3Hex`): a 64-bit cell index does not
survive a JavaScript number, and hex is h3's own string form, which the console hands back to
/v1/cells as is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)

from core.records import alerts as alert_records
from core.records import sightings as sighting_records
from core.records.fields import DOC, H3_CELL

TagId = int
Status = Literal["open", "spotted", "recovered", "closed", "cancelled"]
TS_MIN, TS_MAX = 0, 2**53  # epoch ms
H3_HEX_DOC = (
    "an H3 cell index as a lowercase hex string (h3's string form, e.g. '8928308280fffff'; "
    "'0' for none)"
)


def cell_hex(value: Any) -> Any:
    """An H3 cell index (an int, as records and the store hold it) in its API spelling."""
    return value if isinstance(value, str) else f"{int(value):x}"


# Records' H3 cells (ints) are turned into hex when a response model is built from them.
H3Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,16}$"), BeforeValidator(cell_hex)]


def api_fields(record: type, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pydantic field definitions of a record type's fields, with their descriptions; H3 cells
    as `H3Hex`."""
    hints = get_type_hints(record)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in leave_out:
            continue
        doc = f.metadata.get(DOC)
        default = ... if f.default is dataclasses.MISSING else f.default
        if f.metadata.get(H3_CELL):
            out[f.name] = (H3Hex, Field(default, description=f"{doc}: {H3_HEX_DOC}"))
        else:
            out[f.name] = (hints[f.name], Field(default, description=doc))
    return out


class ErrorOut(BaseModel):
    error: str
    fields: list[dict[str, str]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "missing case_id/reason or a bad combination of parameters"),
        (401, "missing or unknown API key"),
        (403, "the key's role may not do this"),
        (404, "not found (or not yours)"),
        (409, "conflicts with the current state"),
        (413, "request body too large"),
        (422, "invalid fields"),
        (429, "rate limit exceeded; see Retry-After"),
        (503, "a dependency (store or broker) is unavailable; retry"),
    )
}


class BikeIn(BaseModel):
    tag_id: int = Field(ge=1, lt=2**64)
    plate: str = Field(min_length=1, max_length=20, pattern=r"^[\w\- ]+$")
    model: str = Field(default="", max_length=100)
    colour: str = Field(default="", max_length=50)
    webhook_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://\S+$")


class Bike(BaseModel):
    tag_id: int
    plate: str
    model: str
    colour: str
    webhook_url: str | None = None
    registered_at: int


class TheftIn(BaseModel):
    tag_id: int | None = Field(default=None, ge=1, lt=2**64)
    plate: str | None = Field(default=None, min_length=1, max_length=20)
    stolen_at: int = Field(ge=TS_MIN, lt=TS_MAX, description="UTC epoch ms")
    place: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _one_bike(self) -> TheftIn:
        if (self.tag_id is None) == (self.plate is None):
            raise ValueError("give exactly one of tag_id or plate")
        return self


class Case(BaseModel):
    case_id: str
    tag_id: int
    status: Status
    reported_at: int
    stolen_at: int
    place: str
    description: str
    updated_at: int


class StatusChange(BaseModel):
    at_ms: int
    status: str
    actor: str
    note: str


class CaseDetail(Case):
    history: list[StatusChange]


Sighting = create_model(
    "Sighting",
    __doc__=sighting_records.Sighting.__doc__,
    **api_fields(sighting_records.Sighting),
)


def sighting_out(row: sighting_records.Sighting) -> Any:
    """The API's Sighting of a record."""
    return Sighting.model_validate(row, from_attributes=True)


def sightings_out(cols: Mapping[str, Any]) -> list[Any]:
    """The API's Sightings of store columns (`core.records.sightings.SIGHTING_FIELDS` at least;
    others are left out)."""
    if not cols:
        return []
    names = sighting_records.SIGHTING_FIELDS
    values = [cols[n].tolist() for n in names]
    return [Sighting(**dict(zip(names, row, strict=True))) for row in zip(*values, strict=True)]


class TheftReport(BaseModel):
    case: Case
    last_seen: Sighting | None
    sightings: list[Sighting]
    window_from: int
    window_to: int


class CaseIn(BaseModel):
    status: Literal["spotted", "recovered", "closed", "cancelled"]
    note: str = Field(default="", max_length=1000)


class Sightings(BaseModel):
    count: int
    sightings: list[Sighting]


Alert = create_model(
    "Alert",
    __doc__=alert_records.Alert.__doc__,
    **api_fields(alert_records.Alert, leave_out=("read_published_ms",)),
    created_at=(
        int,
        Field(
            description="UTC epoch ms: when this service stored the alert (in the live stream, "
            "before it is stored: when the read that raised it was published)"
        ),
    ),
    event_id=(int, Field(description="the alerts stream position (SSE id) of this alert")),
)


class Alerts(BaseModel):
    alerts: list[Alert]


class CellBoundary(BaseModel):
    cell: H3Hex = Field(description=f"the cell: {H3_HEX_DOC}")
    boundary: list[tuple[float, float]] = Field(description="its vertices, (lat, lng) each")


class Reader(BaseModel):
    reader_id: int
    lat: float | None
    lon: float | None
    kind: str
    h3_r9: H3Hex = Field(description=f"the resolution-9 H3 cell of (lat, lon): {H3_HEX_DOC}")
