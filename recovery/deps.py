"""Request dependencies: the service context, the caller's identity from its key, role checks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from recovery.auth import Principal, Role
from recovery.context import ServiceContext
from recovery.exceptions import NotAllowed, RateLimited, Unauthenticated


def get_ctx(request: Request) -> ServiceContext:
    """The context `create_api` was given (kept on the application's state)."""
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
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    p = await ctx.principal_for(key)
    if p is None:
        raise Unauthenticated("unknown or revoked API key")
    # The per-run local admin key (the operator's own CLI on this machine) is not limited.
    wait_s = 0.0 if p.key_id == "local-admin" else ctx.limiter.take(p.key_id)
    if wait_s > 0:
        raise RateLimited("rate limit exceeded for this key", retry_after_s=wait_s)
    return p


Caller = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> object:
    """Dependency allowing only the given roles (admin is not implied: least privilege)."""

    async def check(p: Caller) -> Principal:
        if p.role not in roles:
            raise NotAllowed(
                f"role {p.role.value} may not use this route", role=p.role.value, action="route"
            )
        return p

    return Depends(check)


def request_id() -> str:
    return uuid.uuid4().hex
