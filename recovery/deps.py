"""Request dependencies: the service context, the caller's identity from its key, role checks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from recovery.auth import Principal, Role
from recovery.context import ServiceContext
from recovery.exceptions import NotAllowed
from recovery.gate import PRINCIPAL, FrontDoor


def get_ctx(request: Request) -> ServiceContext:
    """The context `create_api` was given (kept on the application's state)."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


async def get_principal(request: Request) -> Principal:
    """The caller `recovery.gate` found from the key, with its limits applied, before the body
    was read (an application without the gate checks here, the same way)."""
    p: Principal | None = request.scope.get(PRINCIPAL)
    if p is None:
        door: FrontDoor = request.app.state.front_door
        p = request.scope[PRINCIPAL] = await door.authenticate(request.scope)
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
