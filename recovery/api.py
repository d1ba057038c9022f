"""The recovery service's FastAPI application: owners, police and ops under /v1, the console.

Errors are JSON `{"error": ...}` (422 adds `fields`), mapped in `recovery.http_errors`. Keys and
limits are checked by `recovery.gate` before routing; /metrics and the API docs answer as the
settings say (`metrics_open`, `api_docs`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recovery import http_errors
from recovery.auth import Principal, Role
from recovery.bodylimit import BodyLimit
from recovery.context import ServiceContext
from recovery.deps import Ctx
from recovery.exceptions import NotAllowed
from recovery.gate import PRINCIPAL, FrontDoor, Gate
from recovery.routes import admin, alerts, bikes, police, thefts

__all__ = ["ServiceContext", "create_api"]

CONSOLE_DIR = Path(__file__).parent / "console"


METRICS_ROLES = frozenset({Role.ops, Role.admin})


async def metrics_reader(request: Request, ctx: Ctx) -> None:
    """/metrics: anyone when `metrics_open`, else ops and admin keys (checked by the gate)."""
    if ctx.settings.metrics_open:
        return
    p: Principal | None = request.scope.get(PRINCIPAL)
    if p is None or p.role not in METRICS_ROLES:
        role = p.role.value if p is not None else "none"
        raise NotAllowed("metrics are for ops and admin keys", role=role, action="metrics")


def create_api(ctx: ServiceContext) -> FastAPI:
    """The application serving `ctx` (routes receive it as the `Ctx` dependency)."""
    docs = ctx.settings.api_docs != "off"
    api = FastAPI(
        title="tagtrail recovery API",
        version="1",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    api.state.ctx = ctx
    api.state.front_door = door = FrontDoor.for_context(ctx)
    api.add_middleware(BodyLimit)
    # Added last, so it runs first: no body is read before the key is checked.
    api.add_middleware(Gate, door=door)
    http_errors.install(api)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz(ctx: Ctx) -> JSONResponse:
        await ctx.runner.run(lambda store: store.backend.execute("SELECT 1"))
        if ctx.producer is None:
            return JSONResponse({"error": "not started"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
    def metrics() -> PlainTextResponse:  # sync: run off the event loop (rendering is slow)
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @api.get("/console/config.json", include_in_schema=False)
    async def console_config(ctx: Ctx) -> dict[str, str]:
        return {"tile_url": ctx.tile_url}

    for r in (bikes.router, thefts.router, police.router, alerts.router, admin.router):
        api.include_router(r, prefix="/v1")
    api.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    return api
