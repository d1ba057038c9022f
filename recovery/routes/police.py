"""Area search over sightings (police, audited) and H3 cell outlines for the console's map."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from h3.api import basic_int as h3i

from recovery.audit import Access, police_only
from recovery.deps import Caller, Ctx
from recovery.exceptions import InvalidField, InvalidRequest
from recovery.schemas import ERRORS, CellBoundary, Sightings, sightings_out

router = APIRouter(tags=["police"], responses=ERRORS)  # type: ignore[arg-type]
MAX_AREA_WINDOW_MS = 7 * 86_400_000
MAX_ROWS = 10_000
MAX_CELLS = 20_000


def _parse_cell(text: str, field: str) -> int:
    try:
        cell = int(text, 16)
    except ValueError:
        raise InvalidField(f"cell {text!r} is not a hex H3 index", field=field) from None
    if not 0 < cell < 2**64 or not h3i.is_valid_cell(cell):
        raise InvalidField(f"cell {text!r} is not a valid H3 cell", field=field)
    return cell


def _res9_count(cell: int, k: int) -> int:
    """How many res-9 cells the k-ring of `cell` covers, counted without listing them (at most
    331 ring cells, each sized by H3's closed form: 7^(9-r), fewer for pentagons)."""
    res = h3i.get_resolution(cell)
    if res > 9:
        raise InvalidField("cell resolution must be 9 or coarser", field="query.cell")
    if k == 0:
        return int(h3i.cell_to_children_size(cell, 9))
    return sum(int(h3i.cell_to_children_size(c, 9)) for c in h3i.grid_disk(cell, k))


def _check_area(cell: int, k: int) -> None:
    """InvalidRequest, with the size, if the area covers more than MAX_CELLS res-9 cells: checked
    before anything is expanded (a res-1 cell alone has 5.8 M children)."""
    n = _res9_count(cell, k)
    if n > MAX_CELLS:
        res = h3i.get_resolution(cell)
        raise InvalidRequest(
            f"area too large: a res-{res} cell with k={k} covers {n} res-9 cells (at most "
            f"{MAX_CELLS}); give a finer cell or a smaller k"
        )


def _res9_cells(cell: int, k: int) -> np.ndarray:
    """The res-9 cells of the k-ring of `cell`, sorted (bounded by `_check_area` first)."""
    res = h3i.get_resolution(cell)
    out: list[int] = []
    for c in h3i.grid_disk(cell, k):
        out.extend(h3i.cell_to_children(c, 9) if res < 9 else [c])
    return np.array(sorted(out), dtype=np.uint64)


@router.get("/sightings", response_model=Sightings)
async def area_search(
    ctx: Ctx,
    access: Access,
    from_ms: Annotated[int, Query(alias="from", ge=0, lt=2**53, description="UTC epoch ms")],
    to_ms: Annotated[int, Query(alias="to", ge=0, lt=2**53, description="UTC epoch ms")],
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lng: Annotated[float | None, Query(ge=-180, le=180)] = None,
    radius_m: Annotated[float | None, Query(gt=0, le=5000)] = None,
    cell: Annotated[str | None, Query(min_length=1, max_length=16, description="H3 hex")] = None,
    k: Annotated[int, Query(ge=0, le=10)] = 0,
) -> Sightings:
    """Police, stating `case_id` (an open or spotted case) or `reason`: sightings within
    radius_m of lat/lng, or in an H3 cell and its k-ring, overlapping [from, to) (at most 7
    days; from over 90 days ago only for supervisors; audited). At most 10,000 rows, oldest
    first."""
    from store.queries import sightings_in_area

    await police_only(access)
    disc = lat is not None and lng is not None and radius_m is not None
    if disc == (cell is not None):
        raise InvalidRequest("give either lat, lng and radius_m, or cell (and k)")
    if not 0 < to_ms - from_ms <= MAX_AREA_WINDOW_MS:
        raise InvalidRequest("need from < to, at most 7 days apart")
    access.check_age(from_ms)
    if disc:
        cols = await ctx.runner.run(
            lambda s: sightings_in_area(s, from_ms, to_ms, lat=lat, lon=lng, radius_m=radius_m)
        )
    else:
        parsed = _parse_cell(cell or "", "query.cell")
        _check_area(parsed, k)
        # Up to 20,000 cells to list and sort: off the event loop.
        cells = await asyncio.to_thread(_res9_cells, parsed, k)
        cols = await ctx.runner.run(lambda s: sightings_in_area(s, from_ms, to_ms, cells=cells))
    out = await asyncio.to_thread(
        sightings_out, {k_: v[:MAX_ROWS] for k_, v in cols.items()} if cols else {}
    )
    params = {"from": from_ms, "to": to_ms, "lat": lat, "lng": lng, "radius_m": radius_m,
              "cell": cell, "k": k}  # fmt: skip
    await access.record("area_search", cell or f"{lat},{lng}", params, len(out))
    return Sightings(count=len(out), sightings=out)


@router.get("/cells", response_model=list[CellBoundary])
async def cell_boundaries(
    _: Caller, ids: Annotated[str, Query(min_length=1, max_length=17 * 500)]
) -> list[CellBoundary]:
    """Outlines (lat, lng vertices) of up to 500 comma-separated hex H3 cells, for drawing."""
    parts = [p for p in ids.split(",") if p]
    if len(parts) > 500:
        raise InvalidRequest("at most 500 cells per request")
    out = []
    for p in parts:
        c = _parse_cell(p.strip(), "query.ids")
        out.append(CellBoundary(cell=c, boundary=list(h3i.cell_to_boundary(c))))
    return out
