"""API keys and the audit log: the SQL the recovery service needs for who may do what."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from store.store import Store


def now_ms() -> int:
    return int(time.time() * 1000)


def insert_key(
    store: Store, *, key_hash: str, key_id: str, name: str, role: str, owner_id: str
) -> None:
    t = now_ms()
    store.backend.insert_columns(
        "api_keys",
        {
            "key_hash": np.array([key_hash], dtype=object),
            "key_id": np.array([key_id], dtype=object),
            "name": np.array([name], dtype=object),
            "role": np.array([role], dtype=object),
            "owner_id": np.array([owner_id], dtype=object),
            "created_at": np.array([t], dtype=np.int64),
            "revoked": np.array([0], dtype=np.uint8),
            "updated_at": np.array([t], dtype=np.int64),
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


def audit(
    store: Store,
    *,
    actor: str,
    role: str,
    action: str,
    target: str,
    params: dict[str, Any],
    client_ip: str,
    request_id: str,
) -> None:
    store.backend.insert_columns(
        "audit_log",
        {
            "at_ms": np.array([now_ms()], dtype=np.int64),
            "actor": np.array([actor], dtype=object),
            "role": np.array([role], dtype=object),
            "action": np.array([action], dtype=object),
            "target": np.array([target], dtype=object),
            "params": np.array([json.dumps(params, sort_keys=True)], dtype=object),
            "client_ip": np.array([client_ip], dtype=object),
            "request_id": np.array([request_id], dtype=object),
        },
        dedup_token=f"audit:{request_id}",
    )


def bike_owner(store: Store, tag_id: int) -> str | None:
    """The owner_id a tag is registered to, or None."""
    rows = store.backend.execute(
        "SELECT owner_id FROM bikes FINAL WHERE tag_id = {t:UInt64}", {"t": int(tag_id)}
    )
    return str(rows[0][0]) if rows else None
