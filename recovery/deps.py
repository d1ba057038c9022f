"""Request dependencies: the service context, the caller's identity from its key, role checks."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import Depends, HTTPException, Request

from core.config import Settings
from recovery.auth import Principal, Role, hash_key, new_key
from recovery.batching import GroupCommit
from recovery.notify import Notifier
from recovery.ratelimit import RateLimiter
from recovery.webhook_policy import WebhookPolicy
from store import accounts, cases
from store.runner import StoreRunner

KEY_CACHE_S = 5.0


@dataclass
class ServiceContext:
    """Everything the routes use, built once per process and handed to create_api."""

    settings: Settings
    runner: StoreRunner
    bootstrap: str
    producer: AIOKafkaProducer | None = None
    local_admin_key: str = ""
    limiter: RateLimiter = field(default_factory=RateLimiter)
    notifier: Notifier | None = None
    # Follow the alerts topic into the store (one API process per store should).
    follow_alerts: bool = True
    # Optional map tiles for the console ({z}/{x}/{y} template); empty draws without tiles.
    tile_url: str = ""
    _local_admin_hash: str = ""
    _key_cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)
    feed: Any = None
    audit_log: GroupCommit[dict[str, Any]] = field(init=False)
    case_writes: GroupCommit[tuple[dict[str, Any], str, str]] = field(init=False)
    _tag_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.audit_log = GroupCommit(self.runner, accounts.audit_batch)
        self.case_writes = GroupCommit(self.runner, cases.write_cases)

    def tag_lock(self, tag_id: int) -> asyncio.Lock:
        """Serialises case changes of one tag (check-then-write, and hotlist order)."""
        lock = self._tag_locks.get(tag_id)
        if lock is None:
            # Locks of idle tags are dropped now and then; thousands of open cases at most.
            if len(self._tag_locks) > 10_000:
                self._tag_locks = {t: lk for t, lk in self._tag_locks.items() if lk.locked()}
            lock = self._tag_locks[tag_id] = asyncio.Lock()
        return lock

    async def start(self) -> None:
        from recovery import casework
        from recovery.alert_feed import AlertFeed

        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        if self.notifier is None:
            self.notifier = Notifier(policy=WebhookPolicy.from_settings(self.settings))
        # A per-run admin key for the local CLI (written to the 0600 run file, never logged).
        key, _, key_hash = new_key(Role.admin)
        self.local_admin_key, self._local_admin_hash = key, key_hash
        # A crash between storing a case and publishing it must not leave it off the hotlist.
        await casework.republish_active(self)
        if self.follow_alerts:
            self.feed = AlertFeed(self)
            await self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self.notifier is not None:
            await self.notifier.close()
        if self.producer is not None:
            await self.producer.stop()

    def forget_keys(self) -> None:
        """Drop cached key lookups (after a revocation, so it applies at once)."""
        self._key_cache.clear()

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


def get_ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


async def get_principal(request: Request, ctx: Ctx) -> Principal:
    auth = request.headers.get("authorization", "")
    key = (
        auth[7:].strip()
        if auth.lower().startswith("bearer ")
        else request.headers.get("x-api-key", "")
    )
    if not key:
        raise HTTPException(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    p = await ctx.principal_for(key)
    if p is None:
        raise HTTPException(
            401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    # The per-run local admin key (the operator's own CLI on this machine) is not limited.
    wait_s = 0.0 if p.key_id == "local-admin" else ctx.limiter.take(p.key_id)
    if wait_s > 0:
        raise HTTPException(
            429, "rate limit exceeded for this key", headers={"Retry-After": str(math.ceil(wait_s))}
        )
    return p


Caller = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Any:
    """Dependency allowing only the given roles (admin is not implied: least privilege)."""

    async def check(p: Caller) -> Principal:
        if p.role not in roles:
            raise HTTPException(403, f"role {p.role.value} may not use this route")
        return p

    return Depends(check)


def request_id() -> str:
    return uuid.uuid4().hex
