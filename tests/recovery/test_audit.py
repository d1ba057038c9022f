"""Audit completeness: every police data request is recorded exactly once, with its reason or
case, route, parameters and rows returned (a refused one with its status and what it was told);
owners' requests for their own data are not police access."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from store import accounts
from tests.recovery.harness import Service, seed_sightings

NOW = int(time.time() * 1000)
DAY = 86_400_000


def _records(svc: Service, key_id: str) -> list[dict[str, Any]]:
    return svc.call(svc.ctx.runner.run(lambda s: accounts.audit_records(s, actor=key_id)))


def test_every_police_request_is_audited_once(service: Service) -> None:
    owner = service.new_key("owner", "o")
    pol = service.new_key("police", "auditee")
    hp = {"Authorization": pol["Authorization"]}
    tag = 70_001
    r = httpx.post(
        f"{service.url}/v1/bikes",
        json={"tag_id": tag, "plate": "AUD1"},
        headers={"Authorization": owner["Authorization"]},
    )
    assert r.status_code == 201
    seed_sightings(
        service, tag, [(5, NOW - 3_600_000, 25.0, 102.7), (6, NOW - 60_000, 25.0, 102.8)]
    )
    case_id = httpx.post(
        f"{service.url}/v1/thefts",
        json={"tag_id": tag, "stolen_at": NOW - 7_200_000},
        headers={"Authorization": owner["Authorization"]},
    ).json()["case"]["case_id"]
    # (method, path, params, json, expected action, expected rows, expected reason, case)
    calls = [
        ("GET", f"/v1/bikes/{tag}/last-seen", {"reason": "r1"}, None, "last_seen", 1, "r1", ""),
        ("GET", f"/v1/bikes/{tag}/track", {"from": NOW - DAY, "to": NOW, "case_id": case_id},
         None, "track", 2, "", case_id),
        ("GET", "/v1/bikes", {"plate": "AUD1", "reason": "r3"}, None, "plate_lookup", 1, "r3", ""),
        ("GET", "/v1/sightings", {"lat": 25.0, "lng": 102.7, "radius_m": 50, "from": NOW - DAY,
         "to": NOW, "reason": "r4"}, None, "area_search", 1, "r4", ""),
        ("GET", "/v1/thefts", {"status": "open", "reason": "r5"}, None, "list_cases", None, "r5",
         ""),
        ("GET", f"/v1/thefts/{case_id}", {}, None, "view_case", 1, "", case_id),
        ("GET", "/v1/alerts", {"reason": "r7"}, None, "list_alerts", 0, "r7", ""),
        ("PATCH", f"/v1/thefts/{case_id}", {}, {"status": "spotted"}, "change_case", 1, "",
         case_id),
    ]  # fmt: skip
    for method, path, params, body, *_ in calls:
        r = httpx.request(method, service.url + path, params=params, json=body, headers=hp)
        assert r.is_success, (path, r.text)
    with httpx.stream(
        "GET", f"{service.url}/v1/alerts/stream", params={"reason": "r9"}, headers=hp, timeout=10
    ) as r:
        assert r.status_code == 200
    # The stream is audited again when it ends (with what it delivered); a refused request
    # (no reason) is audited as refused, with its status.
    time.sleep(0.005)
    assert httpx.get(f"{service.url}/v1/bikes/{tag}/last-seen", headers=hp).status_code == 400

    def all_in() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recs = _records(service, pol["key_id"])
            if len(recs) == len(calls) + 3:
                return recs
            time.sleep(0.1)
        raise AssertionError([r["action"] for r in recs])

    recs = all_in()
    assert len({r["request_id"] for r in recs}) == len(recs)
    served, rest = recs[: len(calls) + 1], recs[len(calls) + 1 :]
    assert sorted(r["action"] for r in rest) == ["alert_stream_end", "refused"]
    refused = next(r for r in rest if r["action"] == "refused")
    assert refused["status"] == 400 and "reason" in refused["refusal"]
    assert refused["route"] == "GET /v1/bikes/{tag_id}/last-seen"
    assert all(r["status"] == 200 and r["refusal"] == "" for r in served)
    for rec, (method, _path, _params, _, action, rows, reason, case) in zip(
        served, calls, strict=False
    ):
        assert rec["action"] == action
        assert rec["role"] == "police"
        assert rec["route"].startswith(method + " /v1/")
        assert rec["reason"] == reason and rec["case_id"] == case
        if rows is not None:
            assert rec["rows_returned"] == rows, action
        assert isinstance(json.loads(rec["params"]), dict)
        assert NOW - 60_000 < rec["at_ms"] <= int(time.time() * 1000)
    assert served[-1]["action"] == "alert_stream" and served[-1]["reason"] == "r9"
    # Owners reading their own data are not police access.
    assert _records(service, owner["key_id"]) == []


def test_old_data_needs_a_supervisor(service: Service) -> None:
    pol = {"Authorization": service.new_key("police", "p90")["Authorization"]}
    sup = {"Authorization": service.new_key("supervisor", "s90")["Authorization"]}
    old = {"from": NOW - 100 * DAY, "to": NOW - 99 * DAY, "reason": "cold case"}
    assert httpx.get(f"{service.url}/v1/bikes/1/track", params=old, headers=pol).status_code == 403
    assert httpx.get(f"{service.url}/v1/bikes/1/track", params=old, headers=sup).status_code == 200
    area = {**old, "lat": 25.0, "lng": 102.7, "radius_m": 100}
    assert httpx.get(f"{service.url}/v1/sightings", params=area, headers=pol).status_code == 403
    assert httpx.get(f"{service.url}/v1/sightings", params=area, headers=sup).status_code == 200
    # A last sighting older than 90 days is old data too.
    seed_sightings(service, 70_500, [(5, NOW - 120 * DAY, 25.0, 102.7)])
    r = httpx.get(f"{service.url}/v1/bikes/70500/last-seen", params=old, headers=pol)
    assert r.status_code == 403
    r = httpx.get(f"{service.url}/v1/bikes/70500/last-seen", params=old, headers=sup)
    assert r.status_code == 200
