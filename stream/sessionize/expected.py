"""Rows a restored sessionizer did not emit but the store may hold (`Sessionizer.expect`).

A checkpoint holds the state after some input offset; rows the worker published after it, before
a crash, are in the store. The restored state does not know them, and the redelivered reads,
batched differently, need not produce those sessions again, so no before/after diff would retract
them. `ExpectedRows` keeps them (one per identity, its highest version) until the replay has
passed the input they came from.
"""

from __future__ import annotations

import numpy as np

_IDENTITY = ("tag_id", "reader_id", "first_ts")


class ExpectedRows:
    """Identities (tag_id, reader_id, first_ts) with the version of their newest row, by version."""

    def __init__(self) -> None:
        self._cols: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return 0 if self._cols is None else len(self._cols["tag_id"])

    def clear(self) -> None:
        self._cols = None

    def add(self, rows: dict[str, np.ndarray], above_version: int) -> None:
        """Add the upserts of `rows` whose version is above `above_version` (the state's own
        rows, its past); retractions are left out (a merged-away identity never comes back)."""
        keep = (rows["is_deleted"] == 0) & (rows["version"].astype(np.int64) > above_version)
        new = {k: np.asarray(rows[k])[keep] for k in _IDENTITY}
        new["version"] = np.asarray(rows["version"])[keep].astype(np.int64)
        if self._cols is not None:
            new = {k: np.concatenate([self._cols[k], new[k]]) for k in new}
        if not len(new["tag_id"]):
            self._cols = None
            return
        # One per identity: its highest version (the row the store keeps).
        order = np.lexsort((-new["version"], new["first_ts"], new["reader_id"], new["tag_id"]))
        new = {k: v[order] for k, v in new.items()}
        t, r, f = new["tag_id"], new["reader_id"], new["first_ts"]
        first = np.r_[True, (t[1:] != t[:-1]) | (r[1:] != r[:-1]) | (f[1:] != f[:-1])]
        by_version = np.argsort(new["version"][first], kind="stable")
        self._cols = {k: v[first][by_version] for k, v in new.items()}

    def take_due(self, version: int) -> dict[str, np.ndarray] | None:
        """Remove and return those of a version up to `version` (None if there are none)."""
        cols = self._cols
        if cols is None:
            return None
        n = int(np.searchsorted(cols["version"], version, side="right"))
        if n == 0:
            return None
        self._cols = {k: v[n:] for k, v in cols.items()} if n < len(cols["tag_id"]) else None
        return {k: v[:n] for k, v in cols.items()}
