"""API keys: shown once, stored as SHA-256 hashes; roles decide what a key may do."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    owner = "owner"
    police = "police"
    supervisor = "supervisor"  # police with access to data older than 90 days
    ops = "ops"
    admin = "admin"


POLICE_ROLES = frozenset({Role.police, Role.supervisor})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from the API key on every request."""

    key_id: str
    name: str
    role: Role
    owner_id: str  # for owners: whose bikes; for staff: the key id


def new_key(role: Role) -> tuple[str, str, str]:
    """Return (key, key_id, key_hash). Only the hash is stored; the key is shown once."""
    key_id = secrets.token_hex(6)
    key = f"tt_{role.value}_{key_id}_{secrets.token_urlsafe(24)}"
    return key, key_id, hash_key(key)


def hash_key(key: str) -> str:
    # Keys are 190+ bits of randomness, so a plain SHA-256 (no slow KDF) is enough to make a stolen
    # table useless while keeping per-request lookups cheap.
    return hashlib.sha256(key.encode()).hexdigest()
