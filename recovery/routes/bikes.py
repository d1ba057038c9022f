"""Bike routes: where a bike was last seen (police with a reason, or its owner)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from recovery.auth import POLICE_ROLES, Role
from recovery.deps import Caller, Ctx, request_id
from store import accounts

router = APIRouter(tags=["bikes"])


class Sighting(BaseModel):
    tag_id: int
    reader_id: int
    first_ts: int
    last_ts: int
    lat: float
    lon: float
    h3_r9: str


async def audited(
    ctx: Ctx, request: Request, caller: Caller, action: str, target: str, params: dict[str, Any]
) -> None:
    """Police access to location data is written to the audit log before data is returned."""
    await ctx.runner.run(
        accounts.audit,
        actor=caller.key_id,
        role=caller.role.value,
        action=action,
        target=target,
        params=params,
        client_ip=request.client.host if request.client else "",
        request_id=request_id(),
    )


@router.get("/bikes/{tag_id}/last-seen", response_model=Sighting)
async def last_seen(
    tag_id: Annotated[int, ...],
    request: Request,
    ctx: Ctx,
    caller: Caller,
    reason: Annotated[str | None, Query(max_length=500)] = None,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Sighting:
    """The latest sighting of a tag: police and supervisors state a case id or a reason."""
    from store.queries import last_seen as q_last_seen

    if not 0 <= tag_id < 2**64:
        raise HTTPException(422, "tag_id must be an unsigned 64-bit integer")
    if caller.role in POLICE_ROLES:
        if not (reason or case_id):
            raise HTTPException(400, "police access needs a case_id or a reason")
        await audited(
            ctx, request, caller, "last_seen", str(tag_id), {"reason": reason, "case_id": case_id}
        )
    elif caller.role == Role.owner:
        owner = await ctx.runner.run(accounts.bike_owner, tag_id)
        if owner != caller.owner_id:
            raise HTTPException(404, "no such bike among yours")
    else:
        raise HTTPException(403, f"role {caller.role.value} may not read locations")
    row = await ctx.runner.run(q_last_seen, tag_id)
    if row is None:
        raise HTTPException(404, f"tag {tag_id} has not been seen")
    return Sighting(
        tag_id=row.tag_id,
        reader_id=row.reader_id,
        first_ts=row.first_ts,
        last_ts=row.last_ts,
        lat=row.lat,
        lon=row.lon,
        h3_r9=f"{row.h3_r9:x}",
    )
