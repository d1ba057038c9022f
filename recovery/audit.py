"""Police access rules: a stated case or reason, the 90-day line, and one audit record per request.

Every police request for location or case data goes through `PoliceAccess`: it refuses requests
without a case_id or reason (InvalidRequest) and data older than 90 days without the supervisor
role (NotAllowed), and `record()` writes the audit row (who, when, route, parameters, case or
reason, rows returned) before the data leaves the service. A failed audit write fails the
request: no unaudited data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request

from recovery.auth import POLICE_ROLES, Principal, Role
from recovery.deps import Caller, Ctx, request_id
from recovery.exceptions import InvalidRequest, NotAllowed
from recovery.state import ServiceState
from store import accounts

OLD_DATA_MS = 90 * 86_400_000
API_PREFIX = "/v1"


@dataclass
class PoliceAccess:
    ctx: ServiceState
    request: Request
    caller: Principal
    case_id: str | None
    reason: str | None
    recorded: bool = False

    @property
    def is_police(self) -> bool:
        return self.caller.role in POLICE_ROLES

    def justify(self) -> None:
        """InvalidRequest unless the request names a case or states a reason."""
        if not (self.case_id or (self.reason and self.reason.strip())):
            raise InvalidRequest("police access needs a case_id or a reason")

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
        # Routers keep their own paths (without the /v1 prefix they are mounted under).
        route = getattr(self.request.scope.get("route"), "path", None)
        route = API_PREFIX + route if route else self.request.url.path
        await self.ctx.audit_log.write(
            {
                "at_ms": accounts.now_ms(),
                "actor": self.caller.key_id,
                "role": self.caller.role.value,
                "action": action,
                "target": target,
                "params": params,
                "client_ip": self.request.client.host if self.request.client else "",
                "request_id": request_id(),
                "route": f"{self.request.method} {route}",
                "case_id": case_id or self.case_id or "",
                "reason": self.reason or "",
                "rows_returned": rows,
            }
        )
        self.recorded = True


async def police_access(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    case_id: Annotated[str | None, Query(max_length=64, description="case this serves")] = None,
    reason: Annotated[str | None, Query(max_length=500, description="why, if no case")] = None,
) -> PoliceAccess:
    return PoliceAccess(ctx, request, caller, case_id, reason)


Access = Annotated[PoliceAccess, Depends(police_access)]


def police_only(access: PoliceAccess) -> None:
    """NotAllowed for non-police; InvalidRequest for police without a justification."""
    if not access.is_police:
        role = access.caller.role.value
        raise NotAllowed(f"role {role} may not use this route", role=role, action="route")
    access.justify()
