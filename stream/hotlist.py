"""Hotlist matching: sightings of tags with an open case become alerts, one per (case, sighting).

The hotlist (open cases keyed by tag_id) is followed in full by every worker. Matching is
vectorised: the sighting rows of a step are checked against a sorted array of listed tags.
"""

from __future__ import annotations

import numpy as np

from stream.alert_records import Alert, HotlistEntry, alert_id, decode_hotlist
from stream.follower import CompactedFollower
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
        super().__init__(bootstrap, topic, self._rebuild)
        self.hotlist = Hotlist()
        self._entries: dict[bytes, tuple[bytes, HotlistEntry | None]] = {}  # key -> value, entry
        self._matching: frozenset[tuple[str, int, int]] = frozenset()

    def _rebuild(self, rows: dict[bytes, bytes]) -> None:
        # Only changed records are decoded, and the arrays rebuilt only if matching changed: a
        # burst of first alerts marks thousands of cases spotted (still matching) one by one,
        # each a change of this topic that the worker's event loop would otherwise pay for.
        old = self._entries
        self._entries = {
            k: old[k] if k in old and old[k][0] == v else (v, decode_hotlist(v))
            for k, v in rows.items()
        }
        live = [e for _, e in self._entries.values() if e is not None and e.matching]
        matching = frozenset((e.case_id, e.tag_id, e.stolen_at_ms) for e in live)
        if matching != self._matching:
            self._matching = matching
            self.hotlist = Hotlist(live)
        HOTLIST_SIZE.set(len(self.hotlist))
