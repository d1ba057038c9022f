"""Police access rules: a stated case or reason, the 90-day line, and an audit record per request.

Every police request for location or case data goes through `PoliceAccess`: it refuses requests
without a case_id or reason (InvalidRequest), with a case_id that is unknown (InvalidField), not
open or spotted (Conflict) or about another tag than the one asked about (NotAllowed), and data
older than 90 days without the supervisor role (NotAllowed); `record()` writes the audit row
(who, when, route, parameters, case or reason, rows returned) before the data leaves the
service. A failed audit write fails the request: no unaudited data. A refused request is
audited too, with the status and what the caller was told (`record_refusal`, called by the
error handlers through `request.state.on_refusal`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from core.records.alerts import MATCHING_STATUSES
from recovery.auth import POLICE_ROLES, Principal, Role
from recovery.deps import Caller, Ctx, request_id
from recovery.exceptions import Conflict, InvalidField, InvalidRequest, NotAllowed
from recovery.state import ServiceState
from store import accounts, cases

log = logging.getLogger(__name__)
OLD_DATA_MS = 90 * 86_400_000
API_PREFIX = "/v1"
# What the police routes enforce, said in their OpenAPI schema (parameters and descriptions).
CASE_ID_DOC = (
    "police: the case this request serves (police routes that need a justification take "
    "case_id or reason); it must exist (else 422), be open or spotted (else 409) and, on a tag's "
    "routes, be that tag's case (else 403)"
)
REASON_DOC = (
    "police: why this request is needed, if no case_id (police routes that need a justification "
    "take case_id or reason, and refuse a police request with neither, or a blank reason, with "
    "400)"
)


def route_of(request: Request) -> str:
    """`METHOD /v1/path-template` of a request (routers keep paths without their prefix)."""
    route = getattr(request.scope.get("route"), "path", None)
    return f"{request.method} {API_PREFIX + route if route else request.url.path}"


async def write_audit(ctx: ServiceState, request: Request, caller: Principal, **record: Any) -> str:
    """Write one audit row of `caller`'s request (`record`: action, target, params, and any of
    case_id, reason, rows_returned, status, refusal); returns its request id."""
    rid = request_id()
    await ctx.audit_log.write(
        {
            "at_ms": accounts.now_ms(),
            "actor": caller.key_id,
            "role": caller.role.value,
            # The socket's peer, or the client a trusted proxy names (uvicorn's proxy headers,
            # configured from settings.trusted_proxies); never a header the client chose.
            "client_ip": request.client.host if request.client else "",
            "request_id": rid,
            "route": route_of(request),
            **record,
        }
    )
    return rid


@dataclass
class PoliceAccess:
    ctx: ServiceState
    request: Request
    caller: Principal
    case_id: str | None
    reason: str | None
    recorded: bool = False
    police_route: bool = False  # a police-only route (its refusals are audited for any role)
    request_id: str = ""  # of the first audit row

    @property
    def is_police(self) -> bool:
        return self.caller.role in POLICE_ROLES

    @property
    def max_age_ms(self) -> int | None:
        """How old data this caller may read (by the end of its sighting); None: any."""
        return None if self.caller.role == Role.supervisor else OLD_DATA_MS

    def justify(self) -> None:
        """InvalidRequest unless the request names a case or states a reason."""
        if not (self.case_id or (self.reason and self.reason.strip())):
            raise InvalidRequest("police access needs a case_id or a reason")

    async def check_case(self, tag_id: int | None = None) -> None:
        """A stated case_id must exist, be open or spotted, and concern `tag_id` if given."""
        case_id = self.case_id
        if not case_id:
            return
        case = await self.ctx.runner.run(cases.get_case, case_id)
        if case is None:
            raise InvalidField(f"case_id: no case {case_id!r}", field="query.case_id")
        if case["status"] not in MATCHING_STATUSES:
            raise Conflict(
                f"case {case_id} is {case['status']}: only an open or spotted case justifies "
                "police access",
                kind="case",
                key=case_id,
            )
        if tag_id is not None and int(case["tag_id"]) != tag_id:
            raise NotAllowed(
                f"case {case_id} does not concern tag {tag_id}",
                role=self.caller.role.value,
                action="read a tag under another tag's case",
            )

    def check_age(self, from_ms: int) -> None:
        """NotAllowed for data older than 90 days unless the caller is a supervisor."""
        now = accounts.now_ms()
        if from_ms < now - OLD_DATA_MS and self.caller.role != Role.supervisor:
            raise NotAllowed(
                "data older than 90 days needs the supervisor role",
                role=self.caller.role.value,
                action="read data older than 90 days",
            )

    async def record(
        self, action: str, target: str, params: dict[str, Any], rows: int, case_id: str = ""
    ) -> None:
        """Write the audit record of this request (once)."""
        if self.recorded:
            return
        self.request_id = await self._write(action, target, params, rows, case_id=case_id)
        self.recorded = True

    async def record_more(self, action: str, params: dict[str, Any], rows: int) -> None:
        """Another audit row of this request (what a stream delivered, at its end)."""
        await self._write(action, "", {**params, "opened": self.request_id}, rows)

    async def record_refusal(self, status: int, message: str) -> None:
        """Audit a refused police request (nothing was returned); a failed write is logged, the
        refusal stands."""
        if self.recorded or not (self.is_police or self.police_route):
            return
        self.recorded = True
        asked = self.request.path_params
        params = {**asked, **self.request.query_params}
        for stated in ("case_id", "reason"):  # in columns of their own
            params.pop(stated, None)
        target = ",".join(str(v) for v in asked.values())
        try:
            await self._write("refused", target, params, 0, status=status, refusal=message[:500])
        except Exception as e:
            log.warning("%s: refusal (%d) not audited: %s", route_of(self.request), status, e)

    async def _write(
        self, action: str, target: str, params: dict[str, Any], rows: int, **extra: Any
    ) -> str:
        return await write_audit(
            self.ctx, self.request, self.caller, action=action, target=target, params=params,
            case_id=extra.pop("case_id", "") or self.case_id or "", reason=self.reason or "",
            rows_returned=rows, **extra,
        )  # fmt: skip


async def police_access(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    case_id: Annotated[str | None, Query(max_length=64, description=CASE_ID_DOC)] = None,
    reason: Annotated[str | None, Query(max_length=500, description=REASON_DOC)] = None,
) -> PoliceAccess:
    access = PoliceAccess(ctx, request, caller, case_id, reason)
    request.state.on_refusal = access.record_refusal  # the error handlers audit refusals
    return access


Access = Annotated[PoliceAccess, Depends(police_access)]


async def police_only(access: PoliceAccess, *, tag_id: int | None = None) -> None:
    """NotAllowed for non-police; InvalidRequest for police without a justification; a stated
    case checked (`PoliceAccess.check_case`, against `tag_id` on a tag's routes)."""
    access.police_route = True
    if not access.is_police:
        role = access.caller.role.value
        raise NotAllowed(f"role {role} may not use this route", role=role, action="route")
    access.justify()
    await access.check_case(tag_id)
