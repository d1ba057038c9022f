"""Hotlist matching: sightings of tags with an open case become alerts, one per (case, sighting).

The hotlist (open cases keyed by tag_id) is followed in full by every worker. Matching is
vectorised: the sighting rows of a step are checked against a sorted array of listed tags.
"""

from __future__ import annotations

import numpy as np

from stream.alert_records import Alert, HotlistEntry, alert_id, decode_hotlist
from stream.follower import CompactedFollower
from stream.metrics import HOTLIST_SIZE


class Hotlist:
    """Open cases as sorted arrays (tag_id, stolen_at_ms) plus their case ids."""

    def __init__(self, entries: list[HotlistEntry] | None = None) -> None:
        live = sorted((e for e in entries or [] if e.matching), key=lambda e: e.tag_id)
        self.tags = np.array([e.tag_id for e in live], dtype=np.uint64)
        self.stolen_at = np.array([e.stolen_at_ms for e in live], dtype=np.int64)
        self.case_ids = [e.case_id for e in live]

    def __len__(self) -> int:
        return len(self.tags)

    def match(self, rows: dict[str, np.ndarray], published_ms: int) -> list[Alert]:
        """Alerts for live sighting rows of listed tags with last_ts at or after the theft."""
        if not len(self.tags) or not len(rows["tag_id"]):
            return []
        tag = rows["tag_id"]
        idx = np.minimum(np.searchsorted(self.tags, tag), len(self.tags) - 1)
        hit = (self.tags[idx] == tag) & (rows["is_deleted"] == 0)
        hit &= rows["last_ts"] >= self.stolen_at[idx]
        alerts = []
        for i in np.flatnonzero(hit):
            case = self.case_ids[int(idx[i])]
            t, r, f = int(tag[i]), int(rows["reader_id"][i]), int(rows["first_ts"][i])
            alerts.append(
                Alert(
                    alert_id=alert_id(case, t, r, f),
                    case_id=case,
                    tag_id=t,
                    reader_id=r,
                    first_ts=f,
                    last_ts=int(rows["last_ts"][i]),
                    lat=float(rows["lat"][i]),
                    lon=float(rows["lon"][i]),
                    h3_r9=int(rows["h3_r9"][i]),
                    read_published_ms=published_ms,
                )
            )
        return alerts


class HotlistFollower(CompactedFollower):
    """The hotlist topic as a Hotlist, rebuilt on every change."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, self._rebuild)
        self.hotlist = Hotlist()

    def _rebuild(self, rows: dict[bytes, bytes]) -> None:
        entries = [e for e in (decode_hotlist(v) for v in rows.values()) if e is not None]
        self.hotlist = Hotlist(entries)
        HOTLIST_SIZE.set(len(self.hotlist))
