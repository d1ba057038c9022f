"""Bikes, theft cases with their status history, and alerts: the SQL the recovery service needs.

Cases are a ReplacingMergeTree keyed by case_id (latest updated_at wins, read with FINAL); every
change is also appended to case_status_history, the legal record. Alerts are keyed by their
deterministic alert_id, so storing a redelivered alert again replaces it instead of adding one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from store.accounts import now_ms
from store.store import Store

BIKE_COLS = ("tag_id", "owner_id", "plate", "model", "color", "webhook_url", "registered_at")
CASE_COLS = (
    "case_id", "tag_id", "owner_id", "status", "reported_at", "stolen_at", "place",
    "description", "updated_at",
)  # fmt: skip
ALERT_COLS = (
    "alert_id", "case_id", "tag_id", "reader_id", "first_ts", "last_ts", "lat", "lon", "h3_r9",
    "created_at", "stream_offset", "read_published_ms",
)  # fmt: skip


def _rows(store: Store, cols: Sequence[str], sql: str, params: dict[str, Any]) -> list[dict]:
    return [dict(zip(cols, r, strict=True)) for r in store.backend.execute(sql, params)]


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([value], dtype=dtype)


# --- bikes -----------------------------------------------------------------------------------


def register_bike(
    store: Store,
    *,
    tag_id: int,
    owner_id: str,
    plate: str,
    model: str,
    color: str,
    webhook_url: str = "",
) -> dict[str, Any]:
    """Insert or replace the registration of a tag (latest updated_at wins)."""
    t = now_ms()
    cols = {
        "tag_id": _one(tag_id, np.uint64),
        "owner_id": _one(owner_id, object),
        "make": _one("", object),
        "model": _one(model, object),
        "color": _one(color, object),
        "frame_no": _one("", object),
        "plate": _one(plate, object),
        "webhook_url": _one(webhook_url, object),
        "registered_at": _one(t, np.int64),
        "updated_at": _one(t, np.int64),
        "is_deleted": _one(0, np.uint8),
    }
    store.backend.insert_columns("bikes", cols)
    return {
        "tag_id": tag_id, "owner_id": owner_id, "plate": plate, "model": model, "color": color,
        "webhook_url": webhook_url, "registered_at": t,
    }  # fmt: skip


_BIKE_SELECT = f"SELECT {', '.join(BIKE_COLS)} FROM bikes FINAL "


def bike(store: Store, tag_id: int) -> dict[str, Any] | None:
    rows = _rows(store, BIKE_COLS, _BIKE_SELECT + "WHERE tag_id = {t:UInt64}", {"t": int(tag_id)})
    return rows[0] if rows else None


def bikes_of(store: Store, owner_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    return _rows(
        store,
        BIKE_COLS,
        _BIKE_SELECT + "WHERE owner_id = {o:String} ORDER BY tag_id LIMIT {n:UInt32}",
        {"o": owner_id, "n": limit},
    )


def bikes_by_plate(store: Store, plate: str, owner_id: str | None = None) -> list[dict[str, Any]]:
    """Bikes registered with this plate (normally one), optionally only one owner's."""
    sql = _BIKE_SELECT + "WHERE plate = {p:String}"
    params: dict[str, Any] = {"p": plate}
    if owner_id is not None:
        sql += " AND owner_id = {o:String}"
        params["o"] = owner_id
    return _rows(store, BIKE_COLS, sql + " ORDER BY tag_id LIMIT 100", params)


# --- cases -----------------------------------------------------------------------------------


def write_case(store: Store, case: dict[str, Any], *, actor: str, note: str = "") -> None:
    """Store the case's new state and append the change to its status history."""
    write_cases(store, [(case, actor, note)])


def write_cases(store: Store, changes: list[tuple[dict[str, Any], str, str]]) -> None:
    """Store several (case, actor, note) changes: two inserts whatever their number."""
    if not changes:
        return
    cs = [c for c, _, _ in changes]

    def col(name: str, dtype: Any) -> np.ndarray:
        return np.array([c[name] for c in cs], dtype=dtype)

    store.backend.insert_columns(
        "theft_cases",
        {
            "case_id": col("case_id", object),
            "tag_id": col("tag_id", np.uint64),
            "owner_id": col("owner_id", object),
            "status": col("status", object),
            "reported_at": col("reported_at", np.int64),
            "stolen_at": col("stolen_at", np.int64),
            "place": col("place", object),
            "description": col("description", object),
            "updated_at": col("updated_at", np.int64),
        },
    )
    store.backend.insert_columns(
        "case_status_history",
        {
            "case_id": col("case_id", object),
            "at_ms": col("updated_at", np.int64),
            "status": col("status", object),
            "actor": np.array([a for _, a, _ in changes], dtype=object),
            "note": np.array([n for _, _, n in changes], dtype=object),
        },
    )


_CASE_SELECT = f"SELECT {', '.join(CASE_COLS)} FROM theft_cases FINAL "


def get_case(store: Store, case_id: str) -> dict[str, Any] | None:
    rows = _rows(store, CASE_COLS, _CASE_SELECT + "WHERE case_id = {c:String}", {"c": case_id})
    return rows[0] if rows else None


def get_cases(store: Store, case_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The cases among `case_ids` that exist, by id (one query for a burst of alerts)."""
    if not case_ids:
        return {}
    # The ids as one JSON string: both transports bind a String the same way, any content.
    sql = _CASE_SELECT + "WHERE case_id IN JSONExtract({c:String}, 'Array(String)')"
    rows = _rows(store, CASE_COLS, sql, {"c": json.dumps(list(case_ids))})
    return {r["case_id"]: r for r in rows}


def active_case_for_tag(store: Store, tag_id: int) -> dict[str, Any] | None:
    """The tag's case that is still being worked on (open or spotted), if any."""
    rows = _rows(
        store,
        CASE_COLS,
        _CASE_SELECT + "WHERE tag_id = {t:UInt64} AND status IN ('open', 'spotted') "
        "ORDER BY reported_at DESC LIMIT 1",
        {"t": int(tag_id)},
    )
    return rows[0] if rows else None


def count_active_cases(store: Store) -> int:
    """How many cases are open or spotted (the `tagtrail_open_cases` gauge)."""
    rows = _rows(
        store,
        ("n",),
        "SELECT count() AS n FROM theft_cases FINAL WHERE status IN ('open', 'spotted')",
        {},
    )
    return int(rows[0]["n"]) if rows else 0


def list_cases(
    store: Store, *, owner_id: str | None = None, status: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Cases, newest report first, filtered by owner and/or current status."""
    where, params = ["1"], {"n": limit}
    if owner_id is not None:
        where.append("owner_id = {o:String}")
        params["o"] = owner_id  # type: ignore[assignment]
    if status is not None:
        where.append("status = {s:String}")
        params["s"] = status  # type: ignore[assignment]
    sql = _CASE_SELECT + f"WHERE {' AND '.join(where)} ORDER BY reported_at DESC LIMIT {{n:UInt32}}"
    return _rows(store, CASE_COLS, sql, params)


def case_history(store: Store, case_id: str) -> list[dict[str, Any]]:
    return _rows(
        store,
        ("at_ms", "status", "actor", "note"),
        "SELECT at_ms, status, actor, note FROM case_status_history "
        "WHERE case_id = {c:String} ORDER BY at_ms",
        {"c": case_id},
    )


# --- alerts ----------------------------------------------------------------------------------


def insert_alerts(store: Store, alerts: Sequence[dict[str, Any]]) -> None:
    """Store alerts (dicts with ALERT_COLS); a repeated alert_id replaces the earlier row."""
    if not alerts:
        return
    dtypes = {
        "alert_id": object, "case_id": object, "tag_id": np.uint64, "reader_id": np.uint32,
        "first_ts": np.int64, "last_ts": np.int64, "lat": np.float64, "lon": np.float64,
        "h3_r9": np.uint64, "created_at": np.int64, "stream_offset": np.int64,
        "read_published_ms": np.int64,
    }  # fmt: skip
    cols = {k: np.array([a[k] for a in alerts], dtype=dt) for k, dt in dtypes.items()}
    store.backend.insert_columns("alerts", cols)


_ALERT_SELECT = f"SELECT {', '.join(ALERT_COLS)} FROM alerts FINAL "


def list_alerts(
    store: Store,
    *,
    case_id: str | None = None,
    after_offset: int = -1,
    limit: int = 200,
    seen_since_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Alerts in topic order (oldest first) after `after_offset`, the latest `limit` of them;
    with `seen_since_ms`, only alerts whose sighting lasted until then or later."""
    where = ["stream_offset > {a:Int64}"]
    params: dict[str, Any] = {"a": after_offset, "n": limit}
    if case_id is not None:
        where.append("case_id = {c:String}")
        params["c"] = case_id
    if seen_since_ms is not None:
        where.append("last_ts >= {s:Int64}")
        params["s"] = seen_since_ms
    inner = (
        _ALERT_SELECT
        + f"WHERE {' AND '.join(where)} ORDER BY stream_offset DESC LIMIT {{n:UInt32}}"
    )
    rows = _rows(store, ALERT_COLS, inner, params)
    return rows[::-1]


def last_alert_offset(store: Store) -> int:
    """The highest alerts-topic offset stored, or -1: where the alerts follower resumes."""
    rows = store.backend.execute("SELECT count(), max(stream_offset) FROM alerts")
    return int(rows[0][1]) if rows and rows[0][0] else -1
