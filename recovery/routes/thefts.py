"""Theft cases: owners report and follow them; police list, view and move them along."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query

from recovery import casework
from recovery.audit import Access, police_only
from recovery.auth import POLICE_ROLES, Principal, Role
from recovery.deps import Caller, Ctx, require
from recovery.exceptions import InvalidField, NotAllowed, NotFound
from recovery.schemas import (
    ERRORS,
    Case,
    CaseDetail,
    CaseIn,
    Sighting,
    Status,
    StatusChange,
    TheftIn,
    TheftReport,
    sighting_out,
    sightings_out,
)
from recovery.state import ServiceState
from store import accounts, cases

router = APIRouter(tags=["thefts"], responses=ERRORS)  # type: ignore[arg-type]
CasePath = Annotated[str, Path(min_length=1, max_length=64)]
MAX_CLOCK_AHEAD_MS = 10 * 60_000


def case_out(c: dict[str, Any]) -> Case:
    return Case(**{k: c[k] for k in Case.model_fields})


@router.post("/thefts", status_code=201, response_model=TheftReport)
async def report_theft(
    body: TheftIn, ctx: Ctx, caller: Annotated[Principal, require(Role.owner)]
) -> TheftReport:
    """Report one of your bikes stolen: opens a case, starts alerting, and answers at once with
    where the bike was last seen and its sightings since the theft (latest window only)."""
    from store.queries import last_seen, track

    now = accounts.now_ms()
    if body.stolen_at > now + MAX_CLOCK_AHEAD_MS:
        raise InvalidField("stolen_at is in the future", field="body.stolen_at")
    if body.tag_id is not None:
        bike = await ctx.runner.run(cases.bike, body.tag_id)
        if bike is None or bike["owner_id"] != caller.owner_id:
            raise NotFound("no such bike among yours", kind="bike", key=body.tag_id)
    else:
        found = await ctx.runner.run(cases.bikes_by_plate, body.plate or "", caller.owner_id)
        if not found:
            raise NotFound("no bike with that plate among yours", kind="bike", key=body.plate)
        bike = found[0]
    case = await casework.open_case(ctx, caller, bike, body)
    tag = int(bike["tag_id"])
    # The back-search: the most recent window since the theft, bounded so a report is fast.
    window_ms = ctx.settings.back_search_window_h * 3_600_000
    lo, hi = max(body.stolen_at, now - window_ms), now + MAX_CLOCK_AHEAD_MS
    since = await ctx.runner.run(track, tag, lo, hi)
    # A non-empty window holds the latest sighting (any later one would overlap it): one query
    # fewer on the common path. Same order as store.queries.last_seen.
    seen: Sighting | None = None
    if since and len(since["tag_id"]):
        i = int(np.lexsort((since["reader_id"], since["first_ts"], since["last_ts"]))[-1])
        seen = sightings_out({k: v[i : i + 1] for k, v in since.items()})[0]
    else:
        row = await ctx.runner.run(last_seen, tag)
        if row is not None:
            seen = sighting_out(row)
    return TheftReport(
        case=case_out(case),
        last_seen=seen,
        sightings=sightings_out(since),
        window_from=lo,
        window_to=hi,
    )


@router.get("/thefts", response_model=list[Case])
async def list_thefts(
    ctx: Ctx,
    caller: Caller,
    access: Access,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[Case]:
    """Owners: your cases. Police: all cases, e.g. ?status=open, stating `case_id` (an open or
    spotted case) or `reason` (audited)."""
    if caller.role == Role.owner:
        rows = await ctx.runner.run(
            lambda s: cases.list_cases(s, owner_id=caller.owner_id, status=status, limit=limit)
        )
        return [case_out(c) for c in rows]
    await police_only(access)
    rows = await ctx.runner.run(lambda s: cases.list_cases(s, status=status, limit=limit))
    await access.record("list_cases", "", {"status": status, "limit": limit}, len(rows))
    return [case_out(c) for c in rows]


async def _visible_case(ctx: ServiceState, caller: Principal, case_id: str) -> dict[str, Any]:
    if caller.role not in POLICE_ROLES and caller.role != Role.owner:
        role = caller.role.value
        raise NotAllowed(f"role {role} may not read cases", role=role, action="read cases")
    case = await ctx.runner.run(cases.get_case, case_id)
    # An owner learns nothing about other owners' cases, not even that they exist.
    if case is None or (caller.role == Role.owner and case["owner_id"] != caller.owner_id):
        raise NotFound(f"no case {case_id} among yours", kind="case", key=case_id)
    return case


@router.get("/thefts/{id}", response_model=CaseDetail)
async def get_theft(id: CasePath, ctx: Ctx, caller: Caller, access: Access) -> CaseDetail:
    """One case with its status history (owners: their own; police: any, audited)."""
    case_id = id
    case = await _visible_case(ctx, caller, case_id)
    history = await ctx.runner.run(cases.case_history, case_id)
    if access.is_police:
        await access.record("view_case", case_id, {}, 1, case_id=case_id)
    return CaseDetail(**case_out(case).model_dump(), history=[StatusChange(**h) for h in history])


@router.patch("/thefts/{id}", response_model=Case)
async def update_theft(
    id: CasePath, body: CaseIn, ctx: Ctx, caller: Caller, access: Access
) -> Case:
    """Owners: cancel, or confirm recovered. Police: spotted, recovered, closed."""
    case_id = id
    await _visible_case(ctx, caller, case_id)
    case = await casework.change_status(
        ctx, case_id, body.status, actor=caller.key_id, note=body.note, caller=caller
    )
    if access.is_police:
        await access.record(
            "change_case", case_id, {"status": body.status, "note": body.note}, 1, case_id=case_id
        )
    return case_out(case)
