"""The one place errors become HTTP answers: JSON `{"error": ...}`, never a stack trace.

Domain errors (`recovery.exceptions`) answer with their status; a 422 adds `fields`. A store or
broker error that may pass answers 503 with Retry-After; any other store error is a fault here
(a bad query, a broken schema): logged in one line and answered 500, like anything unexpected.
"""

from __future__ import annotations

import logging
import math

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recovery.exceptions import (
    Conflict,
    InvalidField,
    InvalidRequest,
    NotAllowed,
    NotFound,
    NotReady,
    RateLimited,
    RecoveryError,
    Unauthenticated,
)
from store.exceptions import StoreError

log = logging.getLogger(__name__)

STATUS: dict[type[RecoveryError], int] = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    NotAllowed: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidField: 422,
    RateLimited: 429,
    NotReady: 503,
}
INTERNAL = "internal error (logged)"
# A log line carries at most this much of an error's message (a query error quotes its SQL).
LOG_CHARS = 500


def status_of(exc: RecoveryError) -> int:
    """The HTTP status of a domain error: its own class's, else its nearest ancestor's."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def retry_after(seconds: object, default: int = 1) -> str:
    """A Retry-After value: `seconds` rounded up to whole seconds (at least 1), else `default`."""
    try:
        s = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(default)
    return str(max(1, math.ceil(s))) if math.isfinite(s) and s > 0 else str(default)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= LOG_CHARS else text[:LOG_CHARS] + "..."


async def audit_refusal(request: Request, status: int, message: str) -> None:
    """Police requests are audited refused too: the police-access dependency leaves its hook
    on the request (`recovery.audit`), which writes the row unless the request was recorded."""
    hook = getattr(request.state, "on_refusal", None)
    if hook is not None and 400 <= status < 500:
        await hook(status, message)


def install(api: FastAPI) -> None:
    """Register the error handlers on `api`."""

    @api.exception_handler(RecoveryError)
    async def refused(request: Request, exc: RecoveryError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            log.error("%s %s: %s", request.method, request.url.path, _one_line(exc))
            return JSONResponse({"error": INTERNAL}, status_code=500)
        await audit_refusal(request, status, str(exc))
        body: dict[str, object] = {"error": str(exc)}
        if isinstance(exc, InvalidField):
            body["fields"] = [{"field": exc.field, "error": str(exc)}]
        headers = {}
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        if exc.retriable:
            headers["Retry-After"] = retry_after(getattr(exc, "retry_after_s", None))
        return JSONResponse(body, status_code=status, headers=headers or None)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own: unknown paths, wrong methods, oversize bodies.
        return JSONResponse(
            {"error": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(x) for x in e["loc"]), "error": e["msg"]} for e in exc.errors()
        ]
        await audit_refusal(request, 422, "; ".join(f"{f['field']}: {f['error']}" for f in fields))
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @api.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if exc.retriable:
            log.warning("%s: store unavailable: %s", where, _one_line(exc))
            return JSONResponse(
                {"error": "the store is unavailable; retry shortly"},
                status_code=503,
                headers={"Retry-After": retry_after(getattr(exc, "retry_after_s", None))},
            )
        log.error("%s: store error %s: %s", where, type(exc).__name__, _one_line(exc))
        return JSONResponse({"error": INTERNAL}, status_code=500)

    @api.exception_handler(KafkaError)
    async def broker_down(request: Request, exc: KafkaError) -> JSONResponse:
        log.error("%s %s: broker error: %s", request.method, request.url.path, _one_line(exc))
        return JSONResponse(
            {"error": "the message broker is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": INTERNAL}, status_code=500)
