"""Alerts are location data: the 90-day rule covers the alert list and the stream (replayed and
live), a revoked key's open stream ends within a second, a bad Last-Event-ID is a 400 (never a
traceback), and a stream is audited for what it delivered."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from store import accounts, cases
from tests.recovery.harness import Service, SSEClient
from tests.recovery.test_alerts import make_alert, produce, wait_until

NOW = int(time.time() * 1000)
DAY = 86_400_000
WHY = {"reason": "privacy"}
OLD = make_alert("c_cold", 81_001, 7, NOW - 100 * DAY)  # its sighting ended 100 days ago
FRESH = make_alert("c_warm", 81_002, 7, NOW - 60_000)


def _stored(svc: Service) -> list[dict[str, Any]]:
    return svc.call(svc.ctx.runner.run(cases.list_alerts, limit=10_000))


@pytest.fixture(scope="module")
def keys(service: Service) -> dict[str, dict[str, str]]:
    """Police and supervisor keys, and the module's topic holding OLD then FRESH, stored."""
    produce(service, [OLD, FRESH])
    wait_until(lambda: len(_stored(service)) >= 2)
    return {
        "police": service.new_key("police", "p"),
        "supervisor": service.new_key("supervisor", "s"),
    }


def _h(key: dict[str, str], **more: str) -> dict[str, str]:
    return {"Authorization": key["Authorization"], **more}


def _ids(events: list[dict[str, str]]) -> list[str]:
    return [json.loads(e["data"])["alert_id"] for e in events]


def test_alert_list_keeps_the_90_day_rule(service: Service, keys: dict[str, Any]) -> None:
    url = f"{service.url}/v1/alerts"
    for params in (WHY, {**WHY, "case": "c_cold"}):
        got = httpx.get(url, params=params, headers=_h(keys["police"])).json()["alerts"]
        assert OLD.alert_id not in {a["alert_id"] for a in got}, params
    got = httpx.get(url, params=WHY, headers=_h(keys["police"])).json()["alerts"]
    assert FRESH.alert_id in {a["alert_id"] for a in got}
    # A supervisor sees old data.
    got = httpx.get(url, params={**WHY, "case": "c_cold"}, headers=_h(keys["supervisor"]))
    assert [a["alert_id"] for a in got.json()["alerts"]] == [OLD.alert_id]


def test_stream_keeps_the_90_day_rule_replayed_and_live(
    service: Service, keys: dict[str, Any]
) -> None:
    url = f"{service.url}/v1/alerts/stream"
    # Replayed from the start: the police key gets FRESH first; the supervisor OLD too.
    s = SSEClient(url, _h(keys["police"], **{"Last-Event-ID": "-1"}), WHY)
    assert _ids(s.events(1)) == [FRESH.alert_id]
    s.close()
    s = SSEClient(url, _h(keys["supervisor"], **{"Last-Event-ID": "-1"}), WHY)
    assert _ids(s.events(2)) == [OLD.alert_id, FRESH.alert_id]
    s.close()
    # Live (from the hub): an old alert is left out, the fresh one after it arrives.
    live = SSEClient(url, _h(keys["police"]), WHY)
    old2, fresh2 = (make_alert("c_x", 81_003, 8, t) for t in (NOW - 95 * DAY, NOW - 1000))
    produce(service, [old2, fresh2])
    assert _ids(live.events(1)) == [fresh2.alert_id]
    live.close()


def _audit(svc: Service, key_id: str) -> list[dict[str, Any]]:
    return svc.call(svc.ctx.runner.run(lambda s: accounts.audit_records(s, actor=key_id)))


def test_a_stream_is_audited_for_what_it_delivered(service: Service, keys: dict[str, Any]) -> None:
    key = service.new_key("police", "watcher")
    marker = make_alert("c_mark", 81_005, 9, NOW)
    produce(service, [marker])  # stored after everything before it
    wait_until(lambda: marker.alert_id in {a["alert_id"] for a in _stored(service)})
    last = max(a["stream_offset"] for a in _stored(service))
    s = SSEClient(
        f"{service.url}/v1/alerts/stream", _h(key, **{"Last-Event-ID": "-1"}), {"reason": "w"}
    )
    got: list[dict[str, str]] = []
    while not got or int(got[-1]["id"]) < last:
        got += s.events(1)
    time.sleep(0.3)
    s.close()
    assert OLD.alert_id not in _ids(got)
    wait_until(lambda: len(_audit(service, key["key_id"])) == 2, timeout_s=10)
    opened, ended = _audit(service, key["key_id"])
    assert (opened["action"], opened["rows_returned"]) == ("alert_stream", 0)
    assert ended["action"] == "alert_stream_end" and ended["reason"] == "w"
    assert ended["rows_returned"] == len(got) > 0
    assert json.loads(ended["params"])["opened"] == opened["request_id"]


def test_revoking_a_key_ends_its_open_stream_within_a_second(
    service: Service, keys: dict[str, Any]
) -> None:
    key = service.new_key("police", "soon revoked")
    lines: list[str] = []
    ended = threading.Event()
    ended_at: list[float] = []

    def read() -> None:
        # A read timeout (the stream going on) ends the reader too, without setting `ended`.
        timeout = httpx.Timeout(10.0, read=4.0)
        try:
            with httpx.stream(
                "GET", f"{service.url}/v1/alerts/stream", params=WHY, headers=_h(key),
                timeout=timeout,
            ) as r:  # fmt: skip
                for line in r.iter_lines():
                    lines.append(line)
            ended_at.append(time.monotonic())
            ended.set()
        except httpx.ReadTimeout:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: any("connected" in x for x in lines), timeout_s=10)
    live = make_alert("c_live", 81_004, 9, NOW)
    produce(service, [live])
    wait_until(lambda: any(live.alert_id in x for x in lines), timeout_s=10)

    admin = {"Authorization": f"Bearer {service.admin_key}"}
    r = httpx.delete(f"{service.url}/v1/keys/{key['key_id']}", headers=admin)
    assert r.status_code == 204
    revoked_at = time.monotonic()
    after = make_alert("c_live", 81_004, 9, NOW + 1000)
    produce(service, [after])
    reader.join(6)
    assert ended.is_set(), "the revoked key's stream went on"
    assert ended_at[0] - revoked_at < 1.0
    assert not any(after.alert_id in x for x in lines)
    r = httpx.get(f"{service.url}/v1/alerts", params=WHY, headers=_h(key))
    assert r.status_code == 401


@pytest.mark.parametrize(
    "last_event_id",
    ["9223372036854775807", "99999999999999999999", str(2**53), "9" * 40, "abc", "-2", "1.5",
     "+1", "", "0x10", "100000"],
)  # fmt: skip
def test_a_bad_last_event_id_is_a_400(
    service: Service, keys: dict[str, Any], last_event_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    # ("100000" is an integer, but no event of this stream: the topic holds a handful.)
    with caplog.at_level("ERROR"):
        r = httpx.get(
            f"{service.url}/v1/alerts/stream",
            params=WHY,
            headers=_h(keys["police"], **{"Last-Event-ID": last_event_id}),
            timeout=10,
        )
        time.sleep(0.2)
    assert r.status_code == 400, r.text
    assert "Last-Event-ID" in r.json()["error"]
    assert [x for x in caplog.records if x.exc_info] == []
