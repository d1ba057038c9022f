"""Case lifecycle: who may move a case to which status, and what each change sets off.

Every change is stored (case row + status history), then published to the hotlist topic so the
workers start or stop alerting within a second, then the owner's webhook is notified. Changes
of one tag are serialised per process by a lock (so a police update and an alert cannot
interleave); changes of different tags proceed together and share store inserts.
"""

from __future__ import annotations

import secrets
from typing import Any

from core.records.alerts import MATCHING_STATUSES, HotlistEntry, encode_hotlist, hotlist_key
from recovery.auth import POLICE_ROLES, Principal, Role
from recovery.exceptions import Conflict, NotAllowed, NotFound
from recovery.metrics import case_moved
from recovery.schemas import TheftIn
from recovery.state import ServiceState
from store import accounts, cases

# Which statuses a role may set, and from which current statuses.
OWNER_SETS = frozenset({"cancelled", "recovered"})
POLICE_SETS = frozenset({"spotted", "recovered", "closed"})
ALLOWED_FROM = {
    "open": {"spotted", "recovered", "closed", "cancelled"},
    "spotted": {"recovered", "closed", "cancelled"},
    "recovered": {"closed"},
    "closed": set(),
    "cancelled": set(),
}
NOTIFY_STATUSES = frozenset({"spotted", "recovered", "closed"})


def new_case_id() -> str:
    return "c_" + secrets.token_hex(8)


async def publish_hotlist(ctx: ServiceState, case: dict[str, Any]) -> None:
    """The case's current state on the hotlist; a tombstone once it no longer alerts."""
    producer = ctx.live_producer()
    if case["status"] in MATCHING_STATUSES:
        key, value = encode_hotlist(
            HotlistEntry(
                case["case_id"], int(case["tag_id"]), int(case["stolen_at"]), case["status"]
            )
        )
        await producer.send_and_wait(ctx.settings.topic_hotlist, value=value, key=key)
    else:
        await producer.send_and_wait(
            ctx.settings.topic_hotlist, value=None, key=hotlist_key(int(case["tag_id"]))
        )


async def open_case(
    ctx: ServiceState, owner: Principal, bike: dict[str, Any], body: TheftIn
) -> dict[str, Any]:
    """Open a case for the owner's `bike` and start alerting; Conflict if the tag already has
    an active case."""
    tag_id = int(bike["tag_id"])
    async with ctx.tag_lock(tag_id):
        current = await ctx.runner.run(cases.active_case_for_tag, tag_id)
        if current is not None:
            raise Conflict(
                f"tag {tag_id} already has case {current['case_id']}", kind="tag", key=tag_id
            )
        t = accounts.now_ms()
        case = {
            "case_id": new_case_id(),
            "tag_id": tag_id,
            "owner_id": owner.owner_id,
            "status": "open",
            "reported_at": t,
            "stolen_at": int(body.stolen_at),
            "place": body.place,
            "description": body.description,
            "updated_at": t,
        }
        await ctx.case_writes.write((case, owner.key_id, "reported"))
        ctx.open_cases.touch()
        await publish_hotlist(ctx, case)
    return case


def check_transition(caller: Principal, case: dict[str, Any], status: str) -> None:
    """NotAllowed if the caller's role may not set `status`, Conflict if the case cannot move
    there from where it is."""
    role = caller.role.value
    if caller.role not in POLICE_ROLES and caller.role != Role.owner:
        raise NotAllowed(f"role {role} may not change cases", role=role, action="change cases")
    allowed = OWNER_SETS if caller.role == Role.owner else POLICE_SETS
    if status not in allowed:
        raise NotAllowed(
            f"role {role} may not set status {status}", role=role, action=f"set {status}"
        )
    if status not in ALLOWED_FROM[case["status"]]:
        raise Conflict(
            f"case {case['case_id']} is {case['status']}: cannot become {status}",
            kind="case",
            key=case["case_id"],
        )


async def change_status(
    ctx: ServiceState,
    case_id: str,
    status: str,
    *,
    actor: str,
    note: str = "",
    caller: Principal | None,
) -> dict[str, Any]:
    """Move a case to `status` (checked against `caller`'s role unless None: the system, which
    leaves a case that cannot move there as it is). NotFound if there is no such case."""
    found = await ctx.runner.run(cases.get_case, case_id)
    if found is None:
        raise NotFound(f"no case {case_id}", kind="case", key=case_id)
    async with ctx.tag_lock(int(found["tag_id"])):
        # Re-read under the lock: another change of this tag's cases may have just landed.
        case = await ctx.runner.run(cases.get_case, case_id)
        if caller is not None:
            check_transition(caller, case, status)
        elif status not in ALLOWED_FROM[case["status"]]:
            return case
        previous = case["status"]
        # Strictly increasing versions, so the ReplacingMergeTree keeps this change.
        case = {
            **case,
            "status": status,
            "updated_at": max(accounts.now_ms(), case["updated_at"] + 1),
        }
        await ctx.case_writes.write((case, actor, note))
        # (the system, caller None, sets spotted only at a case's first alert: recovery.alert_feed)
        case_moved(case, previous, by_alert=caller is None)
        ctx.open_cases.touch()
        await publish_hotlist(ctx, case)
    if status in NOTIFY_STATUSES:
        bike = await ctx.runner.run(cases.bike, int(case["tag_id"]))
        # (the notifier is set by start(), as the producer that published above)
        if bike and bike["webhook_url"] and ctx.notifier is not None:
            ctx.notifier.notify(
                bike["webhook_url"],
                {"event": status, "case_id": case_id, "tag_id": int(case["tag_id"]),
                 "at_ms": case["updated_at"], "note": note},
            )  # fmt: skip
    return case


async def republish_active(ctx: ServiceState) -> int:
    """Put every open/spotted case on the hotlist again (after a crash between store and topic)."""
    active = []
    for status in sorted(MATCHING_STATUSES):
        active += await ctx.runner.run(cases.list_cases, status=status, limit=1_000_000)
    for c in active:
        await publish_hotlist(ctx, c)
    return len(active)
