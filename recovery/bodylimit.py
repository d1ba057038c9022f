"""ASGI middleware refusing oversize request bodies (413) before a route reads them.

Content-Length is checked up front; chunked bodies are counted as they arrive, so a client cannot
bypass the limit by omitting the header.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BYTES = 64 * 1024
# The reader registry import carries up to 100,000 readers in one body.
LARGE_ROUTES = {"/v1/readers": 16 * 1024 * 1024}
# An oversize body is read and dropped up to this much before the 413: a server that answers
# and closes while the client is still sending makes the client's TCP stack report a connection
# reset instead of the 413. Beyond it, the client may see that.
DRAIN_MAX_BYTES = 1024 * 1024


class _TooLarge(HTTPException):
    # An HTTPException, so FastAPI's body parsing passes it on as a 413 instead of a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, default_max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.app = app
        self.default = default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = LARGE_ROUTES.get(scope["path"], self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _drain(receive, DRAIN_MAX_BYTES)
                    await _refuse(send, limit)
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if not started:
                await _drain(receive, DRAIN_MAX_BYTES)
                await _refuse(send, limit)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the request body, up to `budget` bytes."""
    while budget > 0:
        msg = await receive()
        if msg["type"] != "http.request":
            return  # the client went away
        budget -= len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def _refuse(send: Send, limit: int) -> None:
    body: Any = json.dumps({"error": f"request body larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
