"""The reader registry as every worker sees it: the compacted `readers` topic, read in full.

Workers need all readers (to validate reader ids and to place fixed readers) as sorted numpy
arrays, rebuilt whenever the registry changes.
"""

from __future__ import annotations

import json

import numpy as np

from core.records.readers import ReaderRegistry
from stream.followers.compacted import CompactedFollower


def registry_from_rows(rows: dict[int, dict[str, object]]) -> ReaderRegistry:
    """Every registered reader (all ids are valid); mobile readers get NaN positions."""
    ids = sorted(rows)
    fixed = [rows[i]["kind"] == "fixed" for i in ids]
    lat = [float(rows[i]["lat"]) if f else np.nan for i, f in zip(ids, fixed, strict=True)]  # type: ignore[arg-type]
    lon = [float(rows[i]["lon"]) if f else np.nan for i, f in zip(ids, fixed, strict=True)]  # type: ignore[arg-type]
    return ReaderRegistry.from_columns(ids, lat, lon)


class RegistryFollower(CompactedFollower):
    """The reader registry as a ReaderRegistry, kept current from the readers topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, self._rebuild)
        self.registry = ReaderRegistry.empty()

    def _rebuild(self, rows: dict[bytes, bytes], changed: set[bytes]) -> None:
        # Rebuilt whole: the registry changes rarely (readers installed or moved).
        self.registry = registry_from_rows(
            {int.from_bytes(k, "big"): json.loads(v) for k, v in rows.items()}
        )
