"""Route behaviour: registration, theft report with back-search, case lifecycle and hotlist
records, validation errors, oversize bodies, rate limits, key revocation, reader registry."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.records.alerts import decode_hotlist, hotlist_key
from recovery.ratelimit import RateLimiter
from tests.recovery.harness import Service, seed_sightings

_tags = itertools.count(50_000)
NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def owner(service: Service) -> dict[str, str]:
    return service.new_key("owner", "owner")


@pytest.fixture(scope="module")
def police(service: Service) -> dict[str, str]:
    return service.new_key("police", "desk")


def h(key: dict[str, str]) -> dict[str, str]:
    return {"Authorization": key["Authorization"]}


def register(svc: Service, owner: dict[str, str], **extra: Any) -> int:
    tag = next(_tags)
    body = {"tag_id": tag, "plate": f"K{tag}", "model": "m", "colour": "blue", **extra}
    r = httpx.post(f"{svc.url}/v1/bikes", json=body, headers=h(owner))
    assert r.status_code == 201, r.text
    return tag


def hotlist_records(svc: Service) -> list[tuple[bytes, bytes | None]]:
    async def read() -> list[tuple[bytes, bytes | None]]:
        c = AIOKafkaConsumer(bootstrap_servers=svc.ctx.bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tp = TopicPartition(svc.ctx.settings.topic_hotlist, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            end = (await c.end_offsets([tp]))[tp]
            out: list[tuple[bytes, bytes | None]] = []
            while await c.position(tp) < end:
                for m in (await c.getmany(tp, timeout_ms=1000)).get(tp, []):
                    out.append((m.key, m.value))
            return out
        finally:
            await c.stop()

    return asyncio.run(read())


def test_theft_report_back_search_and_lifecycle(
    service: Service, owner: dict[str, str], police: dict[str, str]
) -> None:
    tag = register(service, owner)
    # Seen before the theft (last-seen only) and twice after it (back-search).
    seed_sightings(
        service,
        tag,
        [
            (1, NOW - 5 * 3_600_000, 25.01, 102.70),
            (2, NOW - 2 * 3_600_000, 25.02, 102.71),
            (3, NOW - 1 * 3_600_000, 25.03, 102.72),
        ],
    )
    r = httpx.post(
        f"{service.url}/v1/thefts",
        json={"plate": f"K{tag}", "stolen_at": NOW - 3 * 3_600_000, "place": "market"},
        headers=h(owner),
    )
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["case"]["status"] == "open" and rep["case"]["tag_id"] == tag
    assert rep["last_seen"]["reader_id"] == 3
    assert [s["reader_id"] for s in rep["sightings"]] == [2, 3]
    case_id = rep["case"]["case_id"]
    # One active case per tag.
    again = httpx.post(
        f"{service.url}/v1/thefts", json={"tag_id": tag, "stolen_at": NOW}, headers=h(owner)
    )
    assert again.status_code == 409
    # Owner may not mark spotted; police may; then owner confirms recovered; nothing after close.
    patch = f"{service.url}/v1/thefts/{case_id}"
    assert httpx.patch(patch, json={"status": "spotted"}, headers=h(owner)).status_code == 403
    assert httpx.patch(patch, json={"status": "spotted"}, headers=h(police)).status_code == 200
    assert httpx.patch(patch, json={"status": "recovered"}, headers=h(owner)).status_code == 200
    assert httpx.patch(patch, json={"status": "closed"}, headers=h(police)).status_code == 200
    assert httpx.patch(patch, json={"status": "recovered"}, headers=h(owner)).status_code == 409
    detail = httpx.get(patch, headers=h(owner)).json()
    assert [x["status"] for x in detail["history"]] == ["open", "spotted", "recovered", "closed"]
    # The hotlist saw open, spotted, then a tombstone (recovered) and another (closed).
    mine = [v for k, v in hotlist_records(service) if k == hotlist_key(tag)]
    states = [None if v is None else decode_hotlist(v).status for v in mine]  # type: ignore[union-attr]
    assert states == ["open", "spotted", None, None]


def test_cancel_stops_alerting(service: Service, owner: dict[str, str]) -> None:
    tag = register(service, owner)
    r = httpx.post(
        f"{service.url}/v1/thefts", json={"tag_id": tag, "stolen_at": NOW}, headers=h(owner)
    )
    case_id = r.json()["case"]["case_id"]
    assert r.json()["last_seen"] is None and r.json()["sightings"] == []
    r = httpx.patch(
        f"{service.url}/v1/thefts/{case_id}", json={"status": "cancelled"}, headers=h(owner)
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    mine = [v for k, v in hotlist_records(service) if k == hotlist_key(tag)]
    assert mine[-1] is None and json.loads(mine[0])["case_id"] == case_id  # type: ignore[arg-type]


def test_validation_errors_name_fields(service: Service, owner: dict[str, str]) -> None:
    r = httpx.post(f"{service.url}/v1/thefts", json={"stolen_at": "yesterday"}, headers=h(owner))
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid request" and any(
        "stolen_at" in f["field"] for f in body["fields"]
    )
    r = httpx.post(
        f"{service.url}/v1/thefts", json={"tag_id": 1, "plate": "x", "stolen_at": NOW},
        headers=h(owner),
    )  # fmt: skip
    assert r.status_code == 422 and "exactly one" in r.text
    r = httpx.post(
        f"{service.url}/v1/thefts", json={"tag_id": 1, "stolen_at": NOW + 86_400_000},
        headers=h(owner),
    )  # fmt: skip
    assert r.status_code == 422
    r = httpx.post(f"{service.url}/v1/bikes", content=b"{not json", headers=h(owner))
    assert r.status_code == 422 and "error" in r.json()
    r = httpx.post(
        f"{service.url}/v1/bikes",
        json={"tag_id": 5, "plate": "x", "webhook_url": "ftp://nope"},
        headers=h(owner),
    )
    assert r.status_code == 422
    # Webhooks may not point inside the network (only 127.0.0.1 is allowed, for the tests).
    for url in (
        "http://example.org/h",
        "https://10.1.2.3/h",
        "https://169.254.169.254/latest",
        "https://localhost:8080/h",
        "http://127.0.0.2/h",
        "https://u:p@example.org/",
    ):
        r = httpx.post(
            f"{service.url}/v1/bikes",
            json={"tag_id": 5, "plate": "x", "webhook_url": url},
            headers=h(owner),
        )
        assert r.status_code == 422 and "webhook_url" in r.text, (url, r.text)


def test_tag_of_another_owner_is_refused(service: Service, owner: dict[str, str]) -> None:
    tag = register(service, owner)
    other = service.new_key("owner", "other")
    r = httpx.post(f"{service.url}/v1/bikes", json={"tag_id": tag, "plate": "Q"}, headers=h(other))
    assert r.status_code == 409


def test_oversize_bodies_are_refused(service: Service, owner: dict[str, str]) -> None:
    # Large enough that the client is still sending when the 413 is ready: the server reads
    # the rest first, so the client sees the 413, not a connection reset.
    for size in (200_000, 900_000, 900_000):
        big = json.dumps({"tag_id": 1, "plate": "x", "model": "m" * size})
        r = httpx.post(
            f"{service.url}/v1/bikes",
            content=big,
            headers={**h(owner), "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and "error" in r.json()

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b" " * 10_000

    # No Content-Length (chunked): counted as it arrives.
    r = httpx.post(
        f"{service.url}/v1/bikes",
        content=chunks(),
        headers={**h(owner), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_rate_limit_per_key(service: Service) -> None:
    key = service.new_key("ops", "busy")
    quiet = service.new_key("ops", "quiet")
    old = service.ctx.limiter
    service.ctx.limiter = RateLimiter(rate_per_s=0.5, burst=3)
    try:
        codes = [
            httpx.get(f"{service.url}/v1/readers", headers=h(key)).status_code for _ in range(5)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = httpx.get(f"{service.url}/v1/readers", headers=h(key))
        assert int(r.headers["Retry-After"]) >= 1 and "rate limit" in r.json()["error"]
        # Another key has its own bucket.
        assert httpx.get(f"{service.url}/v1/readers", headers=h(quiet)).status_code == 200
    finally:
        service.ctx.limiter = old


def test_keys_list_and_revoke(service: Service) -> None:
    admin = {"Authorization": f"Bearer {service.admin_key}"}
    k = service.new_key("police", "to revoke")
    assert httpx.get(f"{service.url}/v1/alerts", params={"reason": "t"}, headers=h(k)).is_success
    listed = httpx.get(f"{service.url}/v1/keys", headers=admin).json()
    assert any(x["key_id"] == k["key_id"] and not x["revoked"] for x in listed)
    assert all("hash" not in "".join(x) for x in listed)
    r = httpx.delete(f"{service.url}/v1/keys/{k['key_id']}", headers=admin)
    assert r.status_code == 204
    r = httpx.get(f"{service.url}/v1/alerts", params={"reason": "t"}, headers=h(k))
    assert r.status_code == 401
    assert httpx.delete(f"{service.url}/v1/keys/{k['key_id']}", headers=admin).status_code == 404


def test_reader_registry_crud(service: Service) -> None:
    ops = service.new_key("ops", "ops")
    body = {
        "readers": [
            {"reader_id": 90001, "lat": 25.05, "lon": 102.7, "kind": "fixed"},
            {"reader_id": 90002, "lat": 0.0, "lon": 0.0, "kind": "mobile"},
        ]
    }
    assert httpx.post(f"{service.url}/v1/readers", json=body, headers=h(ops)).status_code == 200
    got = {r["reader_id"]: r for r in httpx.get(f"{service.url}/v1/readers", headers=h(ops)).json()}
    assert got[90001]["lat"] == 25.05 and got[90002]["lat"] is None
    assert httpx.delete(f"{service.url}/v1/readers/90001", headers=h(ops)).status_code == 204
    got = {r["reader_id"] for r in httpx.get(f"{service.url}/v1/readers", headers=h(ops)).json()}
    assert 90001 not in got and 90002 in got
    assert httpx.delete(f"{service.url}/v1/readers/90001", headers=h(ops)).status_code == 404


def test_area_search_and_cells(
    service: Service, owner: dict[str, str], police: dict[str, str]
) -> None:
    tag = register(service, owner)
    seed_sightings(service, tag, [(11, NOW - 600_000, 25.1001, 102.8001)])
    from h3.api import basic_int as h3i

    cell = f"{h3i.latlng_to_cell(25.1001, 102.8001, 9):x}"
    window = {"from": NOW - 3_600_000, "to": NOW, "reason": "area test"}
    by_disc = httpx.get(
        f"{service.url}/v1/sightings",
        params={**window, "lat": 25.1, "lng": 102.8, "radius_m": 100},
        headers=h(police),
    ).json()
    assert tag in {s["tag_id"] for s in by_disc["sightings"]}
    by_cell = httpx.get(
        f"{service.url}/v1/sightings", params={**window, "cell": cell, "k": 1}, headers=h(police)
    ).json()
    assert tag in {s["tag_id"] for s in by_cell["sightings"]}
    coarse = f"{h3i.cell_to_parent(int(cell, 16), 7):x}"
    r = httpx.get(
        f"{service.url}/v1/sightings", params={**window, "cell": coarse}, headers=h(police)
    )
    assert r.status_code == 200 and tag in {s["tag_id"] for s in r.json()["sightings"]}
    r = httpx.get(
        f"{service.url}/v1/sightings",
        params={**window, "cell": cell, "lat": 1, "lng": 1, "radius_m": 5},
        headers=h(police),
    )
    assert r.status_code == 400
    r = httpx.get(f"{service.url}/v1/sightings", params={**window, "cell": "zz"}, headers=h(police))
    assert r.status_code == 422
    cells = httpx.get(f"{service.url}/v1/cells", params={"ids": cell}, headers=h(police)).json()
    assert cells[0]["cell"] == cell and len(cells[0]["boundary"]) == 6


def test_health_metrics_console(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "ready"}
    ops = {"Authorization": service.new_key("ops", "metrics")["Authorization"]}
    assert "tagtrail_webhooks_total" in httpx.get(f"{service.url}/metrics", headers=ops).text
    page = httpx.get(f"{service.url}/console/")
    assert page.status_code == 200 and "console.js" in page.text
    assert httpx.get(f"{service.url}/console/console.js").status_code == 200
    assert httpx.get(f"{service.url}/nope").json() == {"error": "Not Found"}


def test_last_seen_before_the_theft(service: Service, owner: dict[str, str]) -> None:
    tag = register(service, owner)
    seed_sightings(service, tag, [(21, NOW - 5 * 3_600_000, 25.0, 102.7)])
    r = httpx.post(
        f"{service.url}/v1/thefts",
        json={"tag_id": tag, "stolen_at": NOW - 3_600_000},
        headers=h(owner),
    )
    assert r.status_code == 201
    assert r.json()["last_seen"]["reader_id"] == 21 and r.json()["sightings"] == []
