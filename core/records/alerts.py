"""Records on the hotlist and alerts topics: the contract between the recovery service and workers.

hotlist (compacted, key = tag_id as 8 bytes big-endian): the current open case of a tag as JSON
{"case_id", "tag_id", "stolen_at_ms", "status"}; a tombstone (value None) or a status other than
open/spotted removes the tag from matching.

alerts (key = case_id): the JSON object of an `Alert`'s fields (ALERT_FIELDS); alert_id is
deterministic per (case, sighting identity), so redelivery and later extensions of a sighting
never add an alert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import isfinite

from core.records.fields import described, field_names, same_as
from core.records.sightings import Sighting

# json.dumps' own string escaping (ensure_ascii), for Alert.encode.
_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

MATCHING_STATUSES = frozenset({"open", "spotted"})


@dataclass(frozen=True, slots=True)
class HotlistEntry:
    case_id: str
    tag_id: int
    stolen_at_ms: int
    status: str = "open"

    @property
    def matching(self) -> bool:
        return self.status in MATCHING_STATUSES


def hotlist_key(tag_id: int) -> bytes:
    return int(tag_id).to_bytes(8, "big")


def encode_hotlist(entry: HotlistEntry) -> tuple[bytes, bytes]:
    return hotlist_key(entry.tag_id), json.dumps(asdict(entry)).encode()


def decode_hotlist(value: bytes | None) -> HotlistEntry | None:
    if value is None:
        return None
    d = json.loads(value)
    return HotlistEntry(
        str(d["case_id"]), int(d["tag_id"]), int(d["stolen_at_ms"]), str(d.get("status", "open"))
    )


def alert_id(case_id: str, tag_id: int, reader_id: int, first_ts: int) -> str:
    """Deterministic id of the alert for one (case, sighting identity)."""
    raw = f"{case_id}|{tag_id}|{reader_id}|{first_ts}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Alert:
    """A sighting of a tag under an open case, as the workers publish it."""

    alert_id: str = described("deterministic per (case, sighting identity)")
    case_id: str = described("the theft case whose tag was seen")
    tag_id: int = same_as(Sighting, "tag_id")
    reader_id: int = same_as(Sighting, "reader_id")
    first_ts: int = same_as(Sighting, "first_ts")
    last_ts: int = same_as(Sighting, "last_ts")
    lat: float = same_as(Sighting, "lat")
    lon: float = same_as(Sighting, "lon")
    h3_r9: int = same_as(Sighting, "h3_r9")
    read_published_ms: int = described(
        "when the gateway side published the read that raised it, UTC epoch ms (for latency)",
        default=0,
    )

    def encode(self) -> bytes:
        """The JSON record: exactly `json.dumps` of the fields, at a third of its cost (a burst
        of thousands of alerts is encoded on the worker's event loop)."""
        lat, lon = self.lat, self.lon
        if type(lat) is not float or type(lon) is not float or not isfinite(lat + lon):
            # NaN/inf (JSON spells them differently from repr) or float subclasses.
            return json.dumps({f: getattr(self, f) for f in self.__slots__}).encode()
        return (
            f'{{"alert_id": {_json_str(self.alert_id)}, "case_id": {_json_str(self.case_id)}, '
            f'"tag_id": {self.tag_id:d}, "reader_id": {self.reader_id:d}, '
            f'"first_ts": {self.first_ts:d}, "last_ts": {self.last_ts:d}, '
            f'"lat": {lat!r}, "lon": {lon!r}, "h3_r9": {self.h3_r9:d}, '
            f'"read_published_ms": {self.read_published_ms:d}}}'
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> Alert:
        """The record's Alert; ValueError (not JSON) or TypeError (missing or unknown fields)."""
        d = _scan(value)
        if not isinstance(d, dict):
            raise TypeError(f"an alert record is a JSON object, not {type(d).__name__}")
        return cls(**d)


# The record's fields, in order (its JSON keys on the topic).
ALERT_FIELDS: tuple[str, ...] = field_names(Alert)


def decode_alerts(values: Sequence[bytes | None]) -> list[Alert | None]:
    """`Alert.decode` of each record of a fetch, None where one does not decode."""
    out: list[Alert | None] = []
    for value in values:
        try:
            out.append(Alert.decode(value))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            out.append(None)
    return out


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _scan(value: bytes | None) -> object:
    """json.loads(value) at 60% of its cost in the usual case (one UTF-8 JSON value, no spaces):
    the scanner is called directly, without json.loads' per-call checks, which cost as much as
    parsing an alert (thousands are decoded per fetch in a burst)."""
    if not value:
        raise ValueError("empty record")
    try:
        text = value.decode()
        obj, end = _SCAN(text, 0)
        if end == len(text):
            return obj
    except (UnicodeDecodeError, StopIteration):
        pass
    return json.loads(value)  # spaces around, another encoding, or an error with its reason
