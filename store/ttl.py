"""Retention follows the settings: at migrate time, each table's TTL is set to the configured days.

The migrations render the TTL of a new table from the settings; a table created earlier keeps the
TTL it was created with, so `sync_ttls` compares it with the settings and runs `ALTER TABLE ...
MODIFY TTL` where they differ (a no-op when they agree, so every start-up may call it).
"""

from __future__ import annotations

import re

from core.config import Settings
from store.backend import StoreBackend

# table -> (time expression of the row, settings field holding the retention in days)
_FIRST_TS = "toDateTime(intDiv(first_ts, 1000), 'UTC')"
_MINUTE = "toDateTime(intDiv(minute_ms, 1000), 'UTC')"
TTL_COLUMNS: dict[str, tuple[str, str]] = {
    "raw_reads": ("toDateTime(intDiv(ts_ms, 1000), 'UTC')", "raw_reads_ttl_days"),
    "sightings": (_FIRST_TS, "sightings_ttl_days"),
    "sightings_by_cell": (_FIRST_TS, "sightings_ttl_days"),
    "sightings_by_time": (_FIRST_TS, "sightings_ttl_days"),
    "cell_minute": (_MINUTE, "sightings_ttl_days"),
    "reader_minute": (_MINUTE, "sightings_ttl_days"),
    "tag_reader_latest": ("toDateTime(intDiv(expires, 1000), 'UTC')", "sightings_ttl_days"),
}
_DAYS_RE = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.S)


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def current_ttl_days(backend: StoreBackend, table: str) -> int | None:
    """The retention in days of `table` as the engine has it (None: no such table or no TTL)."""
    rows = backend.execute(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {t:String}",
        {"t": table},
    )
    if not rows:
        return None
    m = _DAYS_RE.search(str(rows[0][0]))
    return int(m.group(1)) if m else None


def sync_ttls(backend: StoreBackend, settings: Settings) -> list[str]:
    """Set every table's TTL to the configured retention; return the tables changed.

    Shortening the TTL deletes the rows now past it (in the background, as TTL merges run).
    On a cluster the `_local` tables are altered ON CLUSTER.
    """
    changed: list[str] = []
    for table, (expr, field) in TTL_COLUMNS.items():
        days = int(getattr(settings, field))
        name = f"{table}_local" if settings.cluster else table
        have = current_ttl_days(backend, name)
        if have is None or have == days:
            continue
        on_cluster = f" ON CLUSTER {_quote(settings.cluster)}" if settings.cluster else ""
        backend.execute(f"ALTER TABLE {name}{on_cluster} MODIFY TTL {expr} + toIntervalDay({days})")
        changed.append(table)
    return changed
