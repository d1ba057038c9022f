"""Alerts for police: the stored history and the live Server-Sent Events stream (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from recovery.audit import Access, police_only
from recovery.deps import Ctx
from recovery.exceptions import InvalidField
from recovery.schemas import ERRORS, Alert, Alerts
from recovery.sse import AlertStream
from store import cases

router = APIRouter(tags=["alerts"], responses=ERRORS)  # type: ignore[arg-type]


@router.get("/alerts", response_model=Alerts)
async def list_alerts(
    ctx: Ctx,
    access: Access,
    alerts_of: Annotated[str | None, Query(alias="case", max_length=64)] = None,
    after: Annotated[int, Query(ge=-1, lt=2**53, description="event id to list after")] = -1,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Alerts:
    """Police: stored alerts in stream order (the latest `limit` after `after`), optionally of
    one case. Pass the last event_id to /alerts/stream to continue live without a gap."""
    police_only(access)
    rows = await ctx.runner.run(
        lambda s: cases.list_alerts(s, case_id=alerts_of, after_offset=after, limit=limit)
    )
    await access.record("list_alerts", alerts_of or "", {"after": after, "limit": limit}, len(rows))
    return Alerts(alerts=[Alert(**r, event_id=r["stream_offset"]) for r in rows])


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "alert events"}},
)
async def alert_stream(
    ctx: Ctx,
    access: Access,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    after: Annotated[int | None, Query(ge=-1, lt=2**53, description="as Last-Event-ID")] = None,
) -> StreamingResponse:
    """Police: live alerts as Server-Sent Events (`event: alert`, `id:` the stream position).
    Reconnect with the Last-Event-ID header (or ?after=) to resume without missing any."""
    police_only(access)
    start = after
    if last_event_id is not None:
        try:
            start = int(last_event_id)
        except ValueError:
            raise InvalidField(
                "Last-Event-ID must be an integer event id", field="header.last-event-id"
            ) from None
        if start < -1:
            raise InvalidField("Last-Event-ID must be >= -1", field="header.last-event-id")
    hub = ctx.feed.hub if ctx.feed is not None else None
    stream = AlertStream(ctx.bootstrap, ctx.settings.topic_alerts, start, hub)
    try:
        await stream.start()
        # The stream is one request: audited once when it opens (rows are not known up front).
        await access.record("alert_stream", "", {"after": start}, 0)
    except BaseException:
        await stream.close()
        raise

    async def body():  # type: ignore[no-untyped-def]
        try:
            async for chunk in stream.events():
                yield chunk
        finally:
            await stream.close()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
