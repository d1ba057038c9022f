"""Hotlist matching: sightings of tags with an open case become alerts, one per (case, sighting).

The hotlist (open cases keyed by tag_id) is followed in full by every worker. Matching is
vectorised: the sighting rows of a step are checked against a sorted array of listed tags.
"""

from __future__ import annotations

import numpy as np

from core.records.alerts import Alert, HotlistEntry, alert_id, decode_hotlist
from stream.followers.compacted import CompactedFollower
from stream.metrics import HOTLIST_SIZE

# Sighting columns an alert carries, in Alert's field order after case_id.
MATCH_COLUMNS = ("tag_id", "reader_id", "first_ts", "last_ts", "lat", "lon", "h3_r9")


class Hotlist:
    """Open cases as sorted arrays (tag_id, stolen_at_ms) plus their case ids."""

    def __init__(self, entries: list[HotlistEntry] | None = None) -> None:
        live = sorted((e for e in entries or [] if e.matching), key=lambda e: e.tag_id)
        self.tags = np.array([e.tag_id for e in live], dtype=np.uint64)
        self.stolen_at = np.array([e.stolen_at_ms for e in live], dtype=np.int64)
        self.case_ids = [e.case_id for e in live]

    def __len__(self) -> int:
        return len(self.tags)

    def match(self, rows: dict[str, np.ndarray], published_ms: int | np.ndarray) -> list[Alert]:
        """Alerts for live sighting rows of listed tags with last_ts at or after the theft.

        `published_ms`: the alerts' read_published_ms, one for all or one per row."""
        if not len(self.tags) or not len(rows["tag_id"]):
            return []
        tag = rows["tag_id"]
        idx = np.minimum(np.searchsorted(self.tags, tag), len(self.tags) - 1)
        hit = (self.tags[idx] == tag) & (rows["is_deleted"] == 0)
        hit &= rows["last_ts"] >= self.stolen_at[idx]
        sel = np.flatnonzero(hit)
        # Columns to Python values in bulk: a burst of thousands of alerts is built here.
        cases = [self.case_ids[i] for i in idx[sel].tolist()]
        cols = [rows[k][sel].tolist() for k in MATCH_COLUMNS]
        if isinstance(published_ms, np.ndarray):
            pubs = published_ms[sel].astype(np.int64).tolist()
        else:
            pubs = [int(published_ms)] * len(sel)
        return [
            Alert(alert_id(case, t, r, f), case, t, r, f, last, lat, lon, h3, pub)
            for case, t, r, f, last, lat, lon, h3, pub in zip(cases, *cols, pubs, strict=True)
        ]


class HotlistFollower(CompactedFollower):
    """The hotlist topic as a Hotlist, rebuilt when the set of matching cases changes."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, self._update)
        self.hotlist = Hotlist()
        self._live: dict[bytes, HotlistEntry] = {}  # key -> entry, matching cases only

    def _update(self, rows: dict[bytes, bytes], changed: set[bytes]) -> None:
        # Only the poll's changed records are decoded, and the arrays rebuilt only if matching
        # changed: reports arrive one by one, and a burst of first alerts marks thousands of
        # cases spotted (still matching), each a change the worker's event loop pays for.
        rebuild = False
        for key in changed:
            value = rows.get(key)
            entry = decode_hotlist(value) if value is not None else None
            old = self._live.get(key)
            if entry is not None and entry.matching:
                if old is None or _match_key(old) != _match_key(entry):
                    self._live[key] = entry
                    rebuild = True
            elif old is not None:
                del self._live[key]
                rebuild = True
        if rebuild:
            self.hotlist = Hotlist(list(self._live.values()))
        HOTLIST_SIZE.set(len(self.hotlist))


def _match_key(e: HotlistEntry) -> tuple[str, int, int]:
    """What matching depends on: the case, its tag and the theft time."""
    return e.case_id, e.tag_id, e.stolen_at_ms
