"""API keys, the audit log and the reader registry listing: who may do what, and who did."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from store.store import Store


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


def insert_key(
    store: Store, *, key_hash: str, key_id: str, name: str, role: str, owner_id: str
) -> None:
    t = now_ms()
    _write_key(store, (key_hash, key_id, name, role, owner_id, t), revoked=False, at_ms=t)


def _write_key(
    store: Store, row: tuple[str, str, str, str, str, int], *, revoked: bool, at_ms: int
) -> None:
    """One version of a key's row (key_hash, key_id, name, role, owner_id, created_at): the table
    keeps the newest `updated_at` per key, so a revocation is a new row, not an update."""
    key_hash, key_id, name, role, owner_id, created_at = row
    store.backend.insert_columns(
        "api_keys",
        {
            "key_hash": np.array([key_hash], dtype=object),
            "key_id": np.array([key_id], dtype=object),
            "name": np.array([name], dtype=object),
            "role": np.array([role], dtype=object),
            "owner_id": np.array([owner_id], dtype=object),
            "created_at": np.array([created_at], dtype=np.int64),
            "revoked": np.array([int(revoked)], dtype=np.uint8),
            "updated_at": np.array([at_ms], dtype=np.int64),
        },
    )


def find_key(store: Store, key_hash: str) -> dict[str, Any] | None:
    """The live key with this hash, or None (revoked keys are not returned)."""
    rows = store.backend.execute(
        "SELECT key_id, name, role, owner_id FROM api_keys FINAL "
        "WHERE key_hash = {h:String} AND revoked = 0",
        {"h": key_hash},
    )
    if not rows:
        return None
    key_id, name, role, owner_id = rows[0]
    return {"key_id": key_id, "name": name, "role": role, "owner_id": owner_id}


def audit(store: Store, **record: Any) -> None:
    """Append one access record (see `audit_batch` for the fields)."""
    audit_batch(store, [record])


def audit_batch(store: Store, records: list[dict[str, Any]]) -> None:
    """Append access records in one insert. Each has actor, role, action, target, params (dict),
    client_ip, request_id and optionally route, case_id, reason, rows_returned, status (the HTTP
    status answered, 200 by default) and refusal (what a refused caller was told); the request
    ids make a retried insert store them once."""
    if not records:
        return
    t = now_ms()

    def col(name: str, default: Any = "") -> np.ndarray:
        return np.array([r.get(name, default) for r in records], dtype=object)

    store.backend.insert_columns(
        "audit_log",
        {
            "at_ms": np.array([r.get("at_ms", t) for r in records], dtype=np.int64),
            "actor": col("actor"),
            "role": col("role"),
            "action": col("action"),
            "target": col("target"),
            "params": np.array([json.dumps(r["params"], sort_keys=True) for r in records], object),
            "client_ip": col("client_ip"),
            "request_id": col("request_id"),
            "route": col("route"),
            "case_id": col("case_id"),
            "reason": col("reason"),
            "rows_returned": np.array([r.get("rows_returned", 0) for r in records], np.int64),
            "status": np.array([r.get("status", 200) for r in records], np.uint16),
            "refusal": col("refusal"),
        },
        dedup_token="audit:" + _digest(",".join(r["request_id"] for r in records)),
    )


AUDIT_COLS = (
    "at_ms", "actor", "role", "action", "target", "params", "client_ip", "request_id", "route",
    "case_id", "reason", "rows_returned", "status", "refusal",
)  # fmt: skip


def audit_records(
    store: Store, *, actor: str | None = None, since_ms: int = 0, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Audit records (oldest first), optionally of one actor, for reviews and tests."""
    sql = f"SELECT {', '.join(AUDIT_COLS)} FROM audit_log WHERE at_ms >= {{s:Int64}}"
    params: dict[str, Any] = {"s": since_ms, "n": limit}
    if actor is not None:
        sql += " AND actor = {a:String}"
        params["a"] = actor
    rows = store.backend.execute(sql + " ORDER BY at_ms, request_id LIMIT {n:UInt32}", params)
    return [dict(zip(AUDIT_COLS, r, strict=True)) for r in rows]


def key_is_live(store: Store, key_id: str) -> bool:
    """Whether a key with this id exists and is not revoked (re-checked by open streams)."""
    rows = store.backend.execute(
        "SELECT count() FROM api_keys FINAL WHERE key_id = {k:String} AND revoked = 0",
        {"k": key_id},
    )
    return bool(rows and rows[0][0])


def list_keys(store: Store) -> list[dict[str, Any]]:
    """Every key's metadata (never its hash), newest first."""
    cols = ("key_id", "name", "role", "owner_id", "created_at", "revoked")
    rows = store.backend.execute(
        f"SELECT {', '.join(cols)} FROM api_keys FINAL ORDER BY created_at DESC, key_id"
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def revoke_key(store: Store, key_id: str) -> bool:
    """Mark the key revoked; False if there is no live key with that id."""
    rows = store.backend.execute(
        "SELECT key_hash, name, role, owner_id, created_at FROM api_keys FINAL "
        "WHERE key_id = {k:String} AND revoked = 0",
        {"k": key_id},
    )
    if not rows:
        return False
    key_hash, name, role, owner_id, created_at = rows[0]
    row = (key_hash, key_id, name, role, owner_id, created_at)
    _write_key(store, row, revoked=True, at_ms=now_ms())
    return True


READER_COLS = ("reader_id", "lat", "lon", "kind", "h3_r9", "updated_at")


def list_readers(store: Store) -> list[dict[str, Any]]:
    """Registered (not retired) readers by id; kind is 'fixed' or 'mobile'."""
    rows = store.backend.execute(
        f"SELECT {', '.join(READER_COLS)} FROM readers FINAL WHERE retired = 0 ORDER BY reader_id"
    )
    return [dict(zip(READER_COLS, r, strict=True)) for r in rows]


def retire_reader(store: Store, reader_id: int) -> bool:
    """Retire a reader (its row stays for history); False if it is not registered."""
    n = store.backend.execute(
        "SELECT count() FROM readers FINAL WHERE reader_id = {r:UInt32} AND retired = 0",
        {"r": int(reader_id)},
    )
    if not n or not n[0][0]:
        return False
    # Copy the row with retired = 1 and a newer version: the registry's history is kept.
    store.backend.execute(
        "INSERT INTO readers (reader_id, lat, lon, kind, gateway_id, district, h3_r7, h3_r9, "
        "h3_r12, updated_at, retired) SELECT reader_id, lat, lon, kind, gateway_id, district, "
        "h3_r7, h3_r9, h3_r12, greatest(updated_at + 1, {t:Int64}), 1 FROM readers FINAL "
        "WHERE reader_id = {r:UInt32}",
        {"r": int(reader_id), "t": now_ms()},
    )
    return True


def bike_owner(store: Store, tag_id: int) -> str | None:
    """The owner_id a tag is registered to, or None."""
    rows = store.backend.execute(
        "SELECT owner_id FROM bikes FINAL WHERE tag_id = {t:UInt64}", {"t": int(tag_id)}
    )
    return str(rows[0][0]) if rows else None
