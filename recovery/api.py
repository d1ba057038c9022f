"""The recovery service's FastAPI application: owners, police and ops, under /v1."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recovery.deps import ServiceContext
from recovery.routes import admin, bikes

__all__ = ["ServiceContext", "create_api"]


def create_api(ctx: ServiceContext) -> FastAPI:
    api = FastAPI(
        title="tagtrail recovery API", version="1", docs_url="/docs", openapi_url="/openapi.json"
    )
    api.state.ctx = ctx

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(x) for x in e["loc"]), "error": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        await ctx.runner.run(lambda store: store.execute("SELECT 1"))
        return {"status": "ready"}

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    api.include_router(bikes.router, prefix="/v1")
    api.include_router(admin.router, prefix="/v1")
    return api
