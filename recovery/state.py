"""What case work, police access and the alert feed share: the service's dependencies and state.

`recovery.context.ServiceContext` adds starting and stopping (the broker producer, the alert
feed); this part has no lifecycle, so the modules it serves can name its type without a cycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from core.config import Settings
from recovery.auth import Principal, Role, hash_key
from recovery.batching import GroupCommit
from recovery.exceptions import NotReady
from recovery.metrics import OpenCasesGauge
from recovery.notify import Notifier
from recovery.ratelimit import RateLimiter
from store import accounts, cases
from store.runner import StoreRunner

log = logging.getLogger(__name__)
KEY_CACHE_S = 5.0
# Locks of idle tags are dropped once there are more than this many (a bound on memory).
MAX_TAG_LOCKS = 10_000


@dataclass
class ServiceState:
    """The service's dependencies (given) and its per-process state (built here)."""

    settings: Settings
    runner: StoreRunner
    bootstrap: str
    producer: AIOKafkaProducer | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    notifier: Notifier | None = None
    # Optional map tiles for the console ({z}/{x}/{y} template); empty draws without tiles.
    tile_url: str = ""
    local_admin_key: str = field(default="", init=False, repr=False)
    audit_log: GroupCommit[dict[str, Any]] = field(init=False, repr=False)
    case_writes: GroupCommit[tuple[dict[str, Any], str, str]] = field(init=False, repr=False)
    open_cases: OpenCasesGauge = field(init=False, repr=False)
    _local_admin_hash: str = field(default="", init=False, repr=False)
    _key_cache: dict[str, tuple[float, Principal | None]] = field(
        default_factory=dict, init=False, repr=False
    )
    _tag_locks: dict[int, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)
    # Keys revoked through this process (open streams end at once), and key ids' liveness as
    # the store last told it (open streams re-check theirs: revocations through other replicas).
    _revoked: set[str] = field(default_factory=set, init=False, repr=False)
    _live_keys: dict[str, tuple[float, bool]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.audit_log = GroupCommit(self.runner, accounts.audit_batch)
        self.case_writes = GroupCommit(self.runner, cases.write_cases)
        self.open_cases = OpenCasesGauge(self.runner)

    def live_producer(self) -> AIOKafkaProducer:
        """The broker producer; NotReady until the service has started."""
        if self.producer is None:
            raise NotReady()
        return self.producer

    def tag_lock(self, tag_id: int) -> asyncio.Lock:
        """Serialises case changes of one tag (check-then-write, and hotlist order)."""
        lock = self._tag_locks.get(tag_id)
        if lock is None:
            if len(self._tag_locks) > MAX_TAG_LOCKS:
                self._tag_locks = {t: lk for t, lk in self._tag_locks.items() if lk.locked()}
            lock = self._tag_locks[tag_id] = asyncio.Lock()
        return lock

    def set_local_admin_key(self, key: str, key_hash: str) -> None:
        """The per-run admin key of the operator's CLI on this machine (never stored)."""
        self.local_admin_key, self._local_admin_hash = key, key_hash

    def forget_keys(self, revoked: str = "") -> None:
        """Drop cached key lookups (after a revocation, so it applies at once); `revoked`: the id
        of the key just revoked, refused from now on by `key_is_live` without asking the store."""
        self._key_cache.clear()
        self._live_keys.clear()
        if revoked:
            self._revoked.add(revoked)

    async def key_is_live(self, key_id: str) -> bool:
        """Whether the key `key_id` is still valid, for a request that outlives its key check
        (an alert stream): False at once for a key revoked through this process; else the
        store's answer, cached KEY_CACHE_S as request lookups are. A store that cannot answer
        leaves the last answer standing (an outage does not cut police off a live stream)."""
        if key_id in self._revoked:
            return False
        if key_id == "local-admin":
            return True
        hit = self._live_keys.get(key_id)
        if hit is not None and time.monotonic() - hit[0] < KEY_CACHE_S:
            return hit[1]
        try:
            live = bool(await self.runner.run(accounts.key_is_live, key_id))
        except Exception as e:
            log.warning("key %s: liveness not checked (%s); the last answer stands", key_id, e)
            live = True if hit is None else hit[1]
        self._live_keys[key_id] = (time.monotonic(), live)
        return live

    async def principal_for(self, key: str) -> Principal | None:
        h = hash_key(key)
        if self._local_admin_hash and h == self._local_admin_hash:
            return Principal(
                key_id="local-admin", name="local admin", role=Role.admin, owner_id="local-admin"
            )
        hit = self._key_cache.get(h)
        if hit is not None and time.monotonic() - hit[0] < KEY_CACHE_S:
            return hit[1]
        row = await self.runner.run(accounts.find_key, h)
        p = (
            None
            if row is None
            else Principal(
                key_id=row["key_id"],
                name=row["name"],
                role=Role(row["role"]),
                owner_id=row["owner_id"],
            )
        )
        self._key_cache[h] = (time.monotonic(), p)
        return p
