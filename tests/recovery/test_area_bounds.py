"""A police area search is bounded before it is expanded: a coarse cell (res 1: 5.8 M res-9
children) is refused at once with the reason, and the event loop stays free meanwhile (a
concurrent /healthz answers while area requests are in flight)."""

from __future__ import annotations

import asyncio
import time

import httpx
from h3.api import basic_int as h3i

from tests.recovery.harness import Service

NOW = int(time.time() * 1000)
DAY = 86_400_000


def _area(cell: int, k: int = 0) -> dict[str, object]:
    return {"from": NOW - DAY, "to": NOW, "cell": h3i.int_to_str(cell), "k": k,
            "reason": "area bound test"}  # fmt: skip


def test_a_coarse_cell_is_refused_with_its_reason(service: Service) -> None:
    pol = {"Authorization": service.new_key("police", "area-bound")["Authorization"]}
    coarse = h3i.latlng_to_cell(25.0, 102.7, 1)
    t0 = time.perf_counter()
    r = httpx.get(f"{service.url}/v1/sightings", params=_area(coarse), headers=pol, timeout=30)
    took = time.perf_counter() - t0
    assert r.status_code == 400, r.text
    assert "too large" in r.json()["error"]
    assert "res-9 cells" in r.json()["error"]
    # Loose: listing 5.8 M children took ~1.5 s; a bound checked before expanding takes none.
    assert took < 0.5, took
    # A res-5 cell with a wide ring is refused too (331 cells x 2,401 children each).
    mid = h3i.latlng_to_cell(25.0, 102.7, 5)
    r = httpx.get(f"{service.url}/v1/sightings", params=_area(mid, 10), headers=pol, timeout=30)
    assert r.status_code == 400, r.text
    # Within the bound still answers: a res-6 cell (343 children) and its 2-ring.
    ok = h3i.latlng_to_cell(25.0, 102.7, 6)
    r = httpx.get(f"{service.url}/v1/sightings", params=_area(ok, 2), headers=pol, timeout=30)
    assert r.status_code == 200, r.text


def test_healthz_is_not_held_by_area_searches(service: Service) -> None:
    pol = {"Authorization": service.new_key("police", "area-loop")["Authorization"]}
    coarse = h3i.latlng_to_cell(25.0, 102.7, 1)
    allowed = h3i.latlng_to_cell(25.0, 102.7, 6)

    async def run() -> tuple[list[int], float]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:

            async def area(params: dict[str, object]) -> int:
                r = await http.get("/v1/sightings", params=params, headers=pol)
                return r.status_code

            async def health() -> float:
                await asyncio.sleep(0.05)  # the area requests are in flight by now
                t0 = time.perf_counter()
                r = await http.get("/healthz")
                assert r.status_code == 200
                return time.perf_counter() - t0

            areas = [area(_area(coarse)) for _ in range(4)]
            areas += [area(_area(allowed, 2)) for _ in range(4)]
            *codes, waited = await asyncio.gather(*areas, health())
        return codes, waited

    codes, waited = asyncio.run(run())
    assert codes == [400] * 4 + [200] * 4
    # Loose: four coarse searches listed on the event loop held /healthz for seconds (1.15 s
    # each); bounded first and expanded off the loop, /healthz is not queued behind them.
    assert waited < 0.5, waited
