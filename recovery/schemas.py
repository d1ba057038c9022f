"""Request and response bodies of the recovery API (their schemas are the OpenAPI contract).

Times are UTC epoch milliseconds; H3 cells are hex strings (a 64-bit cell does not survive a
JavaScript number).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

TagId = int
Status = Literal["open", "spotted", "recovered", "closed", "cancelled"]
TS_MIN, TS_MAX = 0, 2**53  # epoch ms


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


class Sighting(BaseModel):
    tag_id: int
    reader_id: int
    first_ts: int
    last_ts: int
    lat: float
    lon: float
    h3_r9: str


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


class Alert(BaseModel):
    alert_id: str
    case_id: str
    tag_id: int
    reader_id: int
    first_ts: int
    last_ts: int
    lat: float
    lon: float
    h3_r9: str
    created_at: int
    event_id: int = Field(description="the alerts stream position (SSE id) of this alert")


class Alerts(BaseModel):
    alerts: list[Alert]


class CellBoundary(BaseModel):
    cell: str
    boundary: list[tuple[float, float]]


class Reader(BaseModel):
    reader_id: int
    lat: float | None
    lon: float | None
    kind: str
    h3_r9: str
