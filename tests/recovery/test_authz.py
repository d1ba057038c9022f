"""Authorisation matrix: every route x (anonymous, owner A, owner B, police, supervisor, ops)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.recovery.harness import Service, seed_sightings

ROLES = ("anonymous", "owner_a", "owner_b", "police", "supervisor", "ops")
_tags = itertools.count(1000)
NOW = int(time.time() * 1000)
WHY = {"reason": "authz matrix"}


@pytest.fixture(scope="module")
def world(service: Service) -> dict[str, Any]:
    keys = {
        "anonymous": {},
        "owner_a": service.new_key("owner", "A"),
        "owner_b": service.new_key("owner", "B"),
        "police": service.new_key("police", "P"),
        "supervisor": service.new_key("supervisor", "S"),
        "ops": service.new_key("ops", "O"),
    }
    w: dict[str, Any] = {"keys": {k: _auth(v) for k, v in keys.items()}, "svc": service}
    w["tag_a"] = new_bike(w, "owner_a")
    seed_sightings(service, w["tag_a"], [(7, NOW - 3_600_000, 25.04, 102.71)])
    w["case_a"] = new_case(w, "owner_a")
    return w


def _auth(k: dict[str, str]) -> dict[str, str]:
    return {"Authorization": k["Authorization"]} if k else {}


def new_bike(w: dict[str, Any], owner: str) -> int:
    tag = next(_tags)
    r = httpx.post(
        f"{w['svc'].url}/v1/bikes",
        json={"tag_id": tag, "plate": f"P{tag}", "model": "m", "colour": "c"},
        headers=w["keys"][owner],
    )
    assert r.status_code == 201, r.text
    return tag


def new_case(w: dict[str, Any], owner: str) -> str:
    tag = new_bike(w, owner)
    r = httpx.post(
        f"{w['svc'].url}/v1/thefts",
        json={"tag_id": tag, "stolen_at": NOW - 60_000, "place": "x"},
        headers=w["keys"][owner],
    )
    assert r.status_code == 201, r.text
    return str(r.json()["case"]["case_id"])


def new_reader(w: dict[str, Any]) -> int:
    rid = next(_tags)
    r = httpx.post(
        f"{w['svc'].url}/v1/readers",
        json={"readers": [{"reader_id": rid, "lat": 25.0, "lon": 102.7, "kind": "fixed"}]},
        headers=w["keys"]["ops"],
    )
    assert r.status_code == 200, r.text
    return rid


def E(codes: str) -> dict[str, int]:
    """Expected status per role, in ROLES order."""
    return dict(zip(ROLES, map(int, codes.split()), strict=True))


Req = Callable[[dict[str, Any]], tuple[str, str, dict[str, Any]]]
T = (NOW - 7_200_000, NOW)

# (name, request builder -> (method, path, kwargs), expected status per role: anonymous, owner A,
# owner B, police, supervisor, ops)
ROUTES: list[tuple[str, Req, dict[str, int]]] = [
    ("register bike", lambda w: ("POST", "/v1/bikes", {"json": {
        "tag_id": next(_tags), "plate": "Z1", "model": "m", "colour": "c"}}),
     E("401 201 201 403 403 403")),
    ("list bikes / plate lookup", lambda w: ("GET", "/v1/bikes", {"params": {
        "plate": f"P{w['tag_a']}", **WHY}}),
     E("401 200 200 200 200 403")),
    ("last seen", lambda w: ("GET", f"/v1/bikes/{w['tag_a']}/last-seen", {"params": WHY}),
     E("401 200 404 200 200 403")),
    ("track", lambda w: ("GET", f"/v1/bikes/{w['tag_a']}/track", {"params": {
        "from": T[0], "to": T[1], **WHY}}),
     E("401 403 403 200 200 403")),
    ("report theft", lambda w: ("POST", "/v1/thefts", {"json": {
        "tag_id": new_bike(w, "owner_a"), "stolen_at": NOW - 1000}}),
     E("401 201 404 403 403 403")),
    ("list thefts", lambda w: ("GET", "/v1/thefts", {"params": {"status": "open", **WHY}}),
     E("401 200 200 200 200 403")),
    ("view theft", lambda w: ("GET", f"/v1/thefts/{w['case_a']}", {}),
     E("401 200 404 200 200 403")),
    ("change theft", lambda w: ("PATCH", f"/v1/thefts/{new_case(w, 'owner_a')}", {"json": {
        "status": "recovered"}}),
     E("401 200 404 200 200 403")),
    ("area search", lambda w: ("GET", "/v1/sightings", {"params": {
        "lat": 25.04, "lng": 102.71, "radius_m": 500, "from": T[0], "to": T[1], **WHY}}),
     E("401 403 403 200 200 403")),
    ("alerts", lambda w: ("GET", "/v1/alerts", {"params": WHY}),
     E("401 403 403 200 200 403")),
    ("cells", lambda w: ("GET", "/v1/cells", {"params": {"ids": "8928308280fffff"}}),
     E("401 200 200 200 200 200")),
    ("list readers", lambda w: ("GET", "/v1/readers", {}),
     E("401 403 403 200 200 200")),
    ("import readers", lambda w: ("POST", "/v1/readers", {"json": {"readers": [
        {"reader_id": next(_tags), "lat": 25.0, "lon": 102.7, "kind": "fixed"}]}}),
     E("401 403 403 403 403 200")),
    ("delete reader", lambda w: ("DELETE", f"/v1/readers/{new_reader(w)}", {}),
     E("401 403 403 403 403 204")),
    ("create key", lambda w: ("POST", "/v1/keys", {"json": {"role": "police", "name": "x"}}),
     {r: 403 for r in ROLES} | {"anonymous": 401}),
    ("list keys", lambda w: ("GET", "/v1/keys", {}), {r: 403 for r in ROLES} | {"anonymous": 401}),
    ("revoke key", lambda w: ("DELETE", "/v1/keys/nope", {}),
     {r: 403 for r in ROLES} | {"anonymous": 401}),
    ("export", lambda w: ("GET", "/v1/export/sightings", {}),
     {r: 403 for r in ROLES} | {"anonymous": 401}),
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name,build,expected", ROUTES, ids=[r[0] for r in ROUTES])
def test_matrix(
    world: dict[str, Any], role: str, name: str, build: Req, expected: dict[str, int]
) -> None:
    method, path, kw = build(world)
    r = httpx.request(method, world["svc"].url + path, headers=world["keys"][role], **kw)
    assert r.status_code == expected[role], f"{name} as {role}: {r.status_code} {r.text}"
    if r.status_code >= 400:
        assert "error" in r.json()


def test_alert_stream_matrix(world: dict[str, Any]) -> None:
    url = world["svc"].url + "/v1/alerts/stream"
    want = {"anonymous": 401, "owner_a": 403, "owner_b": 403, "police": 200, "supervisor": 200}
    for role, code in (want | {"ops": 403}).items():
        with httpx.stream("GET", url, headers=world["keys"][role], params=WHY, timeout=10) as r:
            assert r.status_code == code, role
            if code == 200:
                assert r.headers["content-type"].startswith("text/event-stream")


def test_owners_see_only_their_own(world: dict[str, Any]) -> None:
    url, keys = world["svc"].url, world["keys"]
    mine = httpx.get(f"{url}/v1/bikes", headers=keys["owner_a"]).json()
    assert world["tag_a"] in {b["tag_id"] for b in mine}
    theirs = httpx.get(f"{url}/v1/bikes", headers=keys["owner_b"]).json()
    assert world["tag_a"] not in {b["tag_id"] for b in theirs}
    cases_b = httpx.get(f"{url}/v1/thefts", headers=keys["owner_b"]).json()
    assert world["case_a"] not in {c["case_id"] for c in cases_b}
    # Police plate lookups never show the owner's webhook.
    pol = httpx.get(
        f"{url}/v1/bikes", params={"plate": f"P{world['tag_a']}", **WHY}, headers=keys["police"]
    ).json()
    assert [b["tag_id"] for b in pol] == [world["tag_a"]] and pol[0]["webhook_url"] is None


@pytest.mark.parametrize(
    "path",
    ["/v1/bikes/{tag}/last-seen", "/v1/bikes/{tag}/track", "/v1/sightings", "/v1/alerts",
     "/v1/thefts", "/v1/alerts/stream"],
)  # fmt: skip
def test_police_need_a_reason(world: dict[str, Any], path: str) -> None:
    params = {"from": T[0], "to": T[1], "lat": 25.0, "lng": 102.7, "radius_m": 100}
    r = httpx.get(
        world["svc"].url + path.format(tag=world["tag_a"]),
        params=params,
        headers=world["keys"]["police"],
    )
    assert r.status_code == 400, r.text
    assert "reason" in r.json()["error"]
