"""Request dependencies: the service context, the caller's identity from its key, role checks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import Depends, HTTPException, Request

from recovery.auth import Principal, Role, hash_key, new_key
from store import accounts
from store.runner import StoreRunner
from tagtrail.config import Settings

KEY_CACHE_S = 5.0


@dataclass
class ServiceContext:
    """Everything the routes use, built once per process and handed to create_api."""

    settings: Settings
    runner: StoreRunner
    bootstrap: str
    producer: AIOKafkaProducer | None = None
    local_admin_key: str = ""
    _local_admin_hash: str = ""
    _key_cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        # A per-run admin key for the local CLI (written to the 0600 run file, never logged).
        key, _, key_hash = new_key(Role.admin)
        self.local_admin_key, self._local_admin_hash = key, key_hash

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

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
