"""The recovery service's FastAPI application: owners, police and ops under /v1, the console.

Errors are JSON `{"error": ...}` (422 adds `fields`); unexpected failures answer 500 or, for a
store that is down, 503 with Retry-After, never a stack trace.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from recovery.bodylimit import BodyLimit
from recovery.deps import ServiceContext
from recovery.routes import admin, alerts, bikes, police, thefts
from store.exceptions import StoreError

__all__ = ["ServiceContext", "create_api"]

log = logging.getLogger(__name__)
CONSOLE_DIR = Path(__file__).parent / "console"


def create_api(ctx: ServiceContext) -> FastAPI:
    api = FastAPI(
        title="tagtrail recovery API", version="1", docs_url="/docs", openapi_url="/openapi.json"
    )
    api.state.ctx = ctx
    api.add_middleware(BodyLimit)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    api.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(x) for x in e["loc"]), "error": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @api.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.error("%s %s: store error: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"error": "the store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @api.exception_handler(KafkaError)
    async def broker_down(request: Request, exc: KafkaError) -> JSONResponse:
        log.error("%s %s: broker error: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"error": "the message broker is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error (logged)"}, status_code=500)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        await ctx.runner.run(lambda store: store.backend.execute("SELECT 1"))
        if ctx.producer is None:
            return JSONResponse({"error": "not started"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:  # on a worker thread: rendering takes ~20 ms
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @api.get("/console/config.json", include_in_schema=False)
    async def console_config() -> dict[str, str]:
        return {"tile_url": ctx.tile_url}

    for r in (bikes.router, thefts.router, police.router, alerts.router, admin.router):
        api.include_router(r, prefix="/v1")
    api.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    return api
