"""Police access is justified and traced: a stated case_id must exist, be open or spotted and
concern the tag asked about; refused requests are audited with their status; the admin export is
audited; client_ip is the socket's peer, not what a client's X-Forwarded-For says (a trusted
proxy: test_trusted_proxy.py); and the OpenAPI schema says what the police routes enforce."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from core.config import load_settings
from core.errors import ConfigError
from store import accounts
from tests.recovery.harness import Service, seed_sightings

NOW = int(time.time() * 1000)
DAY = 86_400_000
HOUR = 3_600_000


def _h(key: dict[str, str], **more: str) -> dict[str, str]:
    return {"Authorization": key["Authorization"], **more}


def _audit(svc: Service, key_id: str) -> list[dict[str, Any]]:
    return svc.call(svc.ctx.runner.run(lambda s: accounts.audit_records(s, actor=key_id)))


def _report(svc: Service, owner: dict[str, str], tag: int) -> str:
    r = httpx.post(
        f"{svc.url}/v1/bikes", json={"tag_id": tag, "plate": f"J{tag}"}, headers=_h(owner)
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{svc.url}/v1/thefts", json={"tag_id": tag, "stolen_at": NOW - HOUR}, headers=_h(owner)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["case"]["case_id"])


@pytest.fixture(scope="module")
def world(service: Service) -> dict[str, Any]:
    owner = service.new_key("owner", "o")
    w: dict[str, Any] = {"owner": owner, "tag_a": 71_001, "tag_b": 71_002, "tag_c": 71_003}
    w["case_a"] = _report(service, owner, w["tag_a"])
    w["case_b"] = _report(service, owner, w["tag_b"])
    w["case_c"] = _report(service, owner, w["tag_c"])
    r = httpx.patch(
        f"{service.url}/v1/thefts/{w['case_c']}", json={"status": "cancelled"}, headers=_h(owner)
    )
    assert r.status_code == 200, r.text
    seed_sightings(service, w["tag_a"], [(5, NOW - HOUR, 25.0, 102.7)])
    return w


def test_a_case_id_must_exist_be_active_and_concern_the_tag(
    service: Service, world: dict[str, Any]
) -> None:
    pol = service.new_key("police", "justified")
    tag = world["tag_a"]
    seen = f"{service.url}/v1/bikes/{tag}/last-seen"
    track = f"{service.url}/v1/bikes/{tag}/track"
    window = {"from": NOW - DAY, "to": NOW}
    area = {**window, "lat": 25.0, "lng": 102.7, "radius_m": 100}
    cases = [
        (seen, {"case_id": world["case_a"]}, 200),
        (seen, {"case_id": "c_invented"}, 422),  # no such case
        (seen, {"case_id": world["case_b"]}, 403),  # another tag's case
        (seen, {"case_id": world["case_c"]}, 409),  # cancelled
        (seen, {"case_id": "c_invented", "reason": "a reason does not cover a bad case"}, 422),
        (track, {**window, "case_id": world["case_b"]}, 403),
        (track, {**window, "case_id": world["case_a"]}, 200),
        (f"{service.url}/v1/sightings", {**area, "case_id": "c_invented"}, 422),
        (f"{service.url}/v1/sightings", {**area, "case_id": world["case_b"]}, 200),
        (f"{service.url}/v1/alerts", {"case_id": world["case_c"]}, 409),
        (f"{service.url}/v1/thefts", {"case_id": "c_invented"}, 422),
        (f"{service.url}/v1/bikes", {"plate": f"J{tag}", "case_id": "c_invented"}, 422),
    ]
    for url, params, want in cases:
        time.sleep(0.005)  # audit rows are listed by time (ms)
        r = httpx.get(url, params=params, headers=_h(pol))
        assert r.status_code == want, (url, params, r.text)
        if want != 200:
            assert "case" in r.json()["error"], r.text
    # Every one audited: served ones with their case, refused ones with status and reason.
    recs = _audit(service, pol["key_id"])
    assert [(r["case_id"], r["status"]) for r in recs] == [
        (p.get("case_id", ""), want) for _, p, want in cases
    ]
    for rec, (_, _, want) in zip(recs, cases, strict=True):
        assert (rec["action"] == "refused") == (want != 200)
        assert bool(rec["refusal"]) == (want != 200)


def test_refused_police_requests_are_audited(service: Service, world: dict[str, Any]) -> None:
    pol = service.new_key("police", "refused")
    owner = world["owner"]
    tag = world["tag_a"]
    url = service.url
    old = {"from": NOW - 100 * DAY, "to": NOW - 99 * DAY, "reason": "cold case"}
    assert httpx.get(f"{url}/v1/bikes/{tag}/last-seen", headers=_h(pol)).status_code == 400
    time.sleep(0.005)  # audit rows are listed by time (ms)
    assert httpx.get(f"{url}/v1/bikes/{tag}/track", params=old, headers=_h(pol)).status_code == 403
    time.sleep(0.005)
    r = httpx.get(f"{url}/v1/bikes/{tag}/track", params={"reason": "x"}, headers=_h(pol))
    assert r.status_code == 422  # no window
    recs = _audit(service, pol["key_id"])
    assert [(r["action"], r["status"]) for r in recs] == [
        ("refused", 400), ("refused", 403), ("refused", 422)
    ]  # fmt: skip
    assert "reason" in recs[0]["refusal"] and "90 days" in recs[1]["refusal"]
    assert recs[1]["reason"] == "cold case" and recs[1]["target"] == str(tag)
    assert all(r["route"] == "GET /v1/bikes/{tag_id}/track" for r in recs[1:])
    # A non-police key on a police-only route is refused and audited as well.
    r = httpx.get(f"{url}/v1/bikes/{tag}/track", params=old, headers=_h(owner))
    assert r.status_code == 403
    [rec] = _audit(service, owner["key_id"])
    assert (rec["action"], rec["status"], rec["role"]) == ("refused", 403, "owner")


def test_the_sightings_export_is_audited(service: Service, world: dict[str, Any]) -> None:
    admin = {"Authorization": f"Bearer {service.admin_key}"}
    since = int(time.time() * 1000)
    r = httpx.get(f"{service.url}/v1/export/sightings", headers=admin)
    assert r.status_code == 200
    rows = pq.read_table(io.BytesIO(r.content)).num_rows
    assert rows >= 1
    recs = service.call(service.ctx.runner.run(lambda s: accounts.audit_records(s, since_ms=since)))
    [rec] = [x for x in recs if x["action"] == "export_sightings"]
    assert rec["role"] == "admin" and rec["rows_returned"] == rows
    assert rec["route"] == "GET /v1/export/sightings"


def test_client_ip_is_the_peer_not_a_forwarded_header(
    service: Service, world: dict[str, Any]
) -> None:
    pol = service.new_key("police", "spoofer")
    r = httpx.get(
        f"{service.url}/v1/alerts",
        params={"reason": "r"},
        headers=_h(pol, **{"X-Forwarded-For": "203.0.113.7"}),
    )
    assert r.status_code == 200
    [rec] = _audit(service, pol["key_id"])
    assert rec["client_ip"] == "127.0.0.1"


def test_trusted_proxies_are_addresses() -> None:
    s = load_settings(trusted_proxies=" 10.0.0.0/8, 127.0.0.1 ,")
    assert s.trusted_proxies == "10.0.0.0/8,127.0.0.1"
    with pytest.raises(ConfigError, match="TAGTRAIL_TRUSTED_PROXIES"):
        load_settings(trusted_proxies="proxy.example")


POLICE_OPS = [
    ("get", "/v1/bikes"),
    ("get", "/v1/bikes/{tag_id}/last-seen"),
    ("get", "/v1/bikes/{tag_id}/track"),
    ("get", "/v1/sightings"),
    ("get", "/v1/thefts"),
    ("get", "/v1/alerts"),
    ("get", "/v1/alerts/stream"),
]


@pytest.mark.parametrize("method,path", POLICE_OPS)
def test_the_schema_says_what_police_routes_enforce(
    service: Service, method: str, path: str
) -> None:
    pol = _h(service.new_key("police", "reader of the schema"))
    op = httpx.get(f"{service.url}/openapi.json", headers=pol).json()["paths"][path][method]
    text = op.get("description", "") + op.get("summary", "")
    assert "case_id" in text and "reason" in text, text
    params = {p["name"]: p.get("description", "") for p in op["parameters"]}
    assert "open or spotted" in params["case_id"] and "case_id or reason" in params["case_id"]
    assert "400" in params["reason"] and "case_id or reason" in params["reason"]
