"""Ops and admin routes: reader registry import, API keys, sighting export."""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.records.readers import encode_reader
from recovery.audit import write_audit
from recovery.auth import Principal, Role, new_key
from recovery.deps import Ctx, require
from recovery.exceptions import InvalidField, NotFound
from recovery.schemas import ERRORS, Reader
from store import accounts

router = APIRouter(tags=["admin"], responses=ERRORS)  # type: ignore[arg-type]


class ReaderIn(BaseModel):
    reader_id: int = Field(ge=0, lt=2**32)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    kind: str = Field(pattern="^(fixed|mobile)$")


class ReadersIn(BaseModel):
    readers: list[ReaderIn] = Field(max_length=100_000)


@router.post("/readers", status_code=200)
async def import_readers(
    body: ReadersIn, ctx: Ctx, _: Annotated[Principal, require(Role.ops, Role.admin)]
) -> dict[str, int]:
    """Add or replace readers in the registry (store and the workers' registry topic)."""
    from store.writes import upsert_readers
    from stream.geoindex import cells_for

    if not body.readers:
        raise InvalidField("no readers given", field="body.readers")
    producer = ctx.live_producer()
    n = len(body.readers)
    lat = np.array([r.lat if r.kind == "fixed" else np.nan for r in body.readers])
    lon = np.array([r.lon if r.kind == "fixed" else np.nan for r in body.readers])
    r7, r9, r12 = cells_for(lat, lon)
    cols = {
        "reader_id": np.array([r.reader_id for r in body.readers], np.uint32),
        "lat": lat,
        "lon": lon,
        "kind": np.array([1 if r.kind == "fixed" else 2 for r in body.readers], np.int8),
        "gateway_id": np.zeros(n, np.uint32),
        "district": np.array([""] * n, dtype=object),
        "h3_r7": r7,
        "h3_r9": r9,
        "h3_r12": r12,
        "updated_at": np.full(n, accounts.now_ms(), np.int64),
    }
    await ctx.runner.run(upsert_readers, cols)
    for r in body.readers:
        key, value = encode_reader(r.reader_id, r.lat, r.lon, r.kind)
        await producer.send(ctx.settings.topic_readers, value=value, key=key)
    await producer.flush()
    return {"imported": n}


@router.get("/readers", response_model=list[Reader])
async def list_readers(
    ctx: Ctx,
    _: Annotated[Principal, require(Role.ops, Role.admin, Role.police, Role.supervisor)],
) -> list[Reader]:
    """The registered readers (mobile readers have no fixed position)."""
    rows = await ctx.runner.run(accounts.list_readers)
    return [
        Reader(
            reader_id=int(r["reader_id"]),
            lat=None if r["kind"] == "mobile" else float(r["lat"]),
            lon=None if r["kind"] == "mobile" else float(r["lon"]),
            kind=str(r["kind"]),
            h3_r9=r["h3_r9"],
        )
        for r in rows
    ]


@router.delete("/readers/{reader_id}", status_code=204)
async def delete_reader(
    reader_id: Annotated[int, Path(ge=0, lt=2**32)],
    ctx: Ctx,
    _: Annotated[Principal, require(Role.ops, Role.admin)],
) -> Response:
    """Retire a reader: workers stop accepting its reads; its history stays in the store."""
    producer = ctx.live_producer()
    if not await ctx.runner.run(accounts.retire_reader, reader_id):
        raise NotFound(f"no reader {reader_id}", kind="reader", key=reader_id)
    # A tombstone removes it from every worker's registry (the topic is compacted).
    await producer.send_and_wait(
        ctx.settings.topic_readers, value=None, key=int(reader_id).to_bytes(4, "big")
    )
    return Response(status_code=204)


class KeyIn(BaseModel):
    role: Role
    name: str = Field(min_length=1, max_length=100)
    owner_id: str | None = Field(default=None, max_length=100)


@router.post("/keys", status_code=201)
async def create_key(
    body: KeyIn, ctx: Ctx, _: Annotated[Principal, require(Role.admin)]
) -> dict[str, str]:
    """Create an API key; the key is in this response only (the store keeps its hash)."""
    key, key_id, key_hash = new_key(body.role)
    owner = body.owner_id or key_id
    await ctx.runner.run(
        accounts.insert_key,
        key_hash=key_hash,
        key_id=key_id,
        name=body.name,
        role=body.role.value,
        owner_id=owner,
    )
    return {"key": key, "key_id": key_id, "role": body.role.value, "owner_id": owner}


class KeyInfo(BaseModel):
    key_id: str
    name: str
    role: str
    owner_id: str
    created_at: int
    revoked: bool


@router.get("/keys", response_model=list[KeyInfo])
async def list_keys(ctx: Ctx, _: Annotated[Principal, require(Role.admin)]) -> list[KeyInfo]:
    """All API keys (metadata only; keys themselves are never stored)."""
    rows = await ctx.runner.run(accounts.list_keys)
    return [KeyInfo(**{**r, "revoked": bool(r["revoked"])}) for r in rows]


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    ctx: Ctx,
    _: Annotated[Principal, require(Role.admin)],
) -> Response:
    """Revoke a key: refused from the next request on; its open alert streams end."""
    if not await ctx.runner.run(accounts.revoke_key, key_id):
        raise NotFound(f"no live key {key_id}", kind="key", key=key_id)
    ctx.key_revoked(key_id)
    return Response(status_code=204)


@router.get("/export/sightings", response_class=Response)
async def export_sightings(
    request: Request, ctx: Ctx, caller: Annotated[Principal, require(Role.admin)]
) -> Response:
    """All current sightings (contract columns) as a Parquet file (audited: every position)."""
    import pyarrow as pa

    from store.queries import export_sightings as q_export

    cols = await ctx.runner.run(q_export)
    table = pa.table(cols)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    # Written before the file leaves, as a police request's: no unaudited data.
    await write_audit(
        ctx, request, caller, action="export_sightings", target="", params={},
        rows_returned=table.num_rows,
    )  # fmt: skip
    return Response(buf.getvalue(), media_type="application/vnd.apache.parquet")
