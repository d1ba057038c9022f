"""Alerts for police: the stored history and the live Server-Sent Events stream (audited)."""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from recovery.audit import Access, police_only
from recovery.deps import Ctx
from recovery.exceptions import InvalidRequest
from recovery.schemas import ERRORS, Alert, Alerts
from recovery.sse import AlertStream
from store import cases
from store.accounts import now_ms

log = logging.getLogger(__name__)
router = APIRouter(tags=["alerts"], responses=ERRORS)  # type: ignore[arg-type]
MAX_EVENT_ID = 2**53 - 1  # as `after`: ids are exact in every client's numbers
_EVENT_ID = re.compile(r"-1|0|[1-9][0-9]{0,15}")
LAST_EVENT_ID_DOC = (
    f"the id of the last event received: the stream resumes after it; -1 replays every stored "
    f"alert. An integer from -1 to {MAX_EVENT_ID} that the stream has sent, else 400"
)


def start_after(last_event_id: str | None, after: int | None) -> int | None:
    """The event id a stream resumes after: the Last-Event-ID header's, else `after`'s; None
    starts live. InvalidRequest (400) for a header that is not an event id."""
    if last_event_id is None:
        return after
    text = last_event_id.strip()
    if not _EVENT_ID.fullmatch(text) or int(text) > MAX_EVENT_ID:
        raise InvalidRequest(
            f"Last-Event-ID must be an event id: an integer from -1 (replay all) to "
            f"{MAX_EVENT_ID}, got {last_event_id[:40]!r}"
        )
    return int(text)


@router.get("/alerts", response_model=Alerts)
async def list_alerts(
    ctx: Ctx,
    access: Access,
    alerts_of: Annotated[str | None, Query(alias="case", max_length=64)] = None,
    after: Annotated[int, Query(ge=-1, lt=2**53, description="event id to list after")] = -1,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Alerts:
    """Police, stating `case_id` (an open or spotted case) or `reason` (audited): stored alerts
    in stream order (the latest `limit` after `after`), optionally of one case; alerts whose
    sighting ended over 90 days ago only for supervisors. Pass the last event_id to
    /alerts/stream to continue live without a gap."""
    await police_only(access)
    max_age = access.max_age_ms
    since = None if max_age is None else now_ms() - max_age
    rows = await ctx.runner.run(
        lambda s: cases.list_alerts(
            s, case_id=alerts_of, after_offset=after, limit=limit, seen_since_ms=since
        )
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
    last_event_id: Annotated[str | None, Header(description=LAST_EVENT_ID_DOC)] = None,
    after: Annotated[int | None, Query(ge=-1, lt=2**53, description="as Last-Event-ID")] = None,
) -> StreamingResponse:
    """Police, stating `case_id` (an open or spotted case) or `reason`: live alerts as
    Server-Sent Events (`event: alert`, `id:` the stream position). Reconnect with the
    Last-Event-ID header (or ?after=) to resume without missing any. Alerts whose sighting ended
    over 90 days ago only for supervisors; the stream ends when its key is revoked. Audited
    when it opens and, with the events it delivered, when it ends."""
    await police_only(access)
    start = start_after(last_event_id, after)
    hub = ctx.feed.hub if ctx.feed is not None else None
    stream = AlertStream(
        ctx.bootstrap, ctx.settings.topic_alerts, start, hub,
        max_age_ms=access.max_age_ms, allowed=partial(ctx.key_is_live, access.caller.key_id),
    )  # fmt: skip
    try:
        await stream.start()
        # Audited when it opens (before any event leaves) and when it ends (what it delivered).
        await access.record("alert_stream", "", {"after": start}, 0)
    except BaseException:
        await stream.close()
        raise

    async def body():  # type: ignore[no-untyped-def]
        opened = time.monotonic()
        try:
            async for chunk in stream.events():
                yield chunk
        finally:
            # Also when the client left (this task is being cancelled): shielded to the end.
            with anyio.CancelScope(shield=True):
                await stream.close()
                params = {"after": start, "open_s": round(time.monotonic() - opened, 3)}
                try:
                    await access.record_more("alert_stream_end", params, stream.delivered)
                except Exception as e:
                    log.error("alert stream of %s: end not audited: %s", access.caller.key_id, e)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
