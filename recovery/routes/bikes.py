"""Bike routes: owners register and list bikes; police look up plates, last-seen and tracks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from recovery.audit import Access, police_only
from recovery.auth import Principal, Role
from recovery.deps import Caller, Ctx, require
from recovery.exceptions import Conflict, InvalidField, InvalidRequest, NotFound
from recovery.schemas import ERRORS, Bike, BikeIn, Sighting, Sightings, sighting_out, sightings_out
from recovery.webhook_policy import WebhookPolicy
from store import accounts, cases

router = APIRouter(tags=["bikes"], responses=ERRORS)  # type: ignore[arg-type]
TagPath = Annotated[int, Path(ge=0, lt=2**64, description="the bike's RFID tag id")]
MAX_TRACK_MS = 31 * 86_400_000


def bike_out(b: dict[str, Any], *, with_webhook: bool) -> Bike:
    return Bike(
        tag_id=int(b["tag_id"]),
        plate=b["plate"],
        model=b["model"],
        colour=b["color"],
        webhook_url=(b["webhook_url"] or None) if with_webhook else None,
        registered_at=int(b["registered_at"]),
    )


@router.post("/bikes", status_code=201, response_model=Bike)
async def register_bike(
    body: BikeIn, ctx: Ctx, caller: Annotated[Principal, require(Role.owner)]
) -> Bike:
    """Register one of your bikes by its tag (re-registering your own tag updates it)."""
    if body.webhook_url:
        # On what the URL says and on every address its host resolves to now (each delivery
        # checks again, and connects only to an address it checked).
        refused = await WebhookPolicy.from_settings(ctx.settings).check_target(body.webhook_url)
        if refused is not None:
            raise InvalidField(f"webhook_url: {refused}", field="body.webhook_url")
    current = await ctx.runner.run(accounts.bike_owner, body.tag_id)
    if current is not None and current != caller.owner_id:
        raise Conflict(
            f"tag {body.tag_id} is registered to another owner", kind="tag", key=body.tag_id
        )
    row = await ctx.runner.run(
        cases.register_bike,
        tag_id=body.tag_id,
        owner_id=caller.owner_id,
        plate=body.plate,
        model=body.model,
        color=body.colour,
        webhook_url=body.webhook_url or "",
    )
    return bike_out(row, with_webhook=True)


@router.get("/bikes", response_model=list[Bike])
async def list_bikes(
    ctx: Ctx,
    caller: Caller,
    access: Access,
    plate: Annotated[str | None, Query(min_length=1, max_length=20)] = None,
) -> list[Bike]:
    """Owners: your bikes (optionally by plate). Police: the bike with a plate, stating
    `case_id` (an open or spotted case) or `reason` (audited)."""
    if caller.role == Role.owner:
        rows = await ctx.runner.run(
            (lambda s: cases.bikes_by_plate(s, plate, caller.owner_id))
            if plate
            else (lambda s: cases.bikes_of(s, caller.owner_id))
        )
        return [bike_out(b, with_webhook=True) for b in rows]
    await police_only(access)
    if not plate:
        raise InvalidRequest("police look bikes up by plate: give ?plate=")
    rows = await ctx.runner.run(cases.bikes_by_plate, plate)
    await access.record("plate_lookup", plate, {"plate": plate}, len(rows))
    return [bike_out(b, with_webhook=False) for b in rows]


@router.get("/bikes/{tag_id}/last-seen", response_model=Sighting)
async def last_seen(tag_id: TagPath, ctx: Ctx, caller: Caller, access: Access) -> Sighting:
    """The latest sighting of a tag: its owner, or police stating `case_id` (this tag's open or
    spotted case) or `reason` (audited; a sighting older than 90 days only for supervisors)."""
    from store.queries import last_seen as q_last_seen

    if caller.role == Role.owner:
        owner = await ctx.runner.run(accounts.bike_owner, tag_id)
        if owner != caller.owner_id:
            raise NotFound("no such bike among yours", kind="bike", key=tag_id)
    else:
        await police_only(access, tag_id=tag_id)
    row = await ctx.runner.run(q_last_seen, tag_id)
    if access.is_police:
        if row is not None:
            access.check_age(row.last_ts)
        await access.record("last_seen", str(tag_id), {"tag_id": tag_id}, int(row is not None))
    if row is None:
        raise NotFound(f"tag {tag_id} has not been seen", kind="sighting", key=tag_id)
    return sighting_out(row)


@router.get("/bikes/{tag_id}/track", response_model=Sightings)
async def track(
    tag_id: TagPath,
    ctx: Ctx,
    access: Access,
    from_ms: Annotated[int, Query(alias="from", ge=0, lt=2**53, description="UTC epoch ms")],
    to_ms: Annotated[int, Query(alias="to", ge=0, lt=2**53, description="UTC epoch ms")],
) -> Sightings:
    """Police, stating `case_id` (this tag's open or spotted case) or `reason`: a tag's
    sightings overlapping [from, to), at most 31 days; from over 90 days ago only for
    supervisors (audited)."""
    from store.queries import track as q_track

    await police_only(access, tag_id=tag_id)
    if not 0 < to_ms - from_ms <= MAX_TRACK_MS:
        raise InvalidRequest("need from < to, at most 31 days apart")
    access.check_age(from_ms)
    out = sightings_out(await ctx.runner.run(q_track, tag_id, from_ms, to_ms))
    await access.record(
        "track", str(tag_id), {"tag_id": tag_id, "from": from_ms, "to": to_ms}, len(out)
    )
    return Sightings(count=len(out), sightings=out)
