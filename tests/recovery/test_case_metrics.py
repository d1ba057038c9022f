"""The case metrics the docs list and the recovery dashboard charts come from the real code
paths: `tagtrail_open_cases` follows the case store through report, spotted, recovered and
cancelled; `tagtrail_report_to_first_alert_seconds` is observed when a case's first alert marks
it spotted; `tagtrail_recoveries_total` counts cases marked recovered (by owner or police).
Read from the service's own /metrics with an ops key, as Prometheus scrapes it."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.recovery.harness import Service
from tests.recovery.test_alerts import make_alert, produce, wait_until

NOW = int(time.time() * 1000)


def _scrape(svc: Service, ops: dict[str, str]) -> dict[str, float]:
    r = httpx.get(f"{svc.url}/metrics", headers=ops)
    assert r.status_code == 200, r.text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if not s.labels or (set(s.labels) == {"le"} and s.labels["le"] == "+Inf"):
                out[s.name] = s.value
    return out


def test_case_metrics_follow_the_cases(service: Service) -> None:
    ops = {"Authorization": service.new_key("ops", "scraper")["Authorization"]}
    owner = {"Authorization": service.new_key("owner", "metric owner")["Authorization"]}
    police = {"Authorization": service.new_key("police", "metric desk")["Authorization"]}
    m0 = _scrape(service, ops)
    assert "tagtrail_open_cases" in m0
    open0 = m0["tagtrail_open_cases"]
    rec0 = m0.get("tagtrail_recoveries_total", 0.0)
    first0 = m0.get("tagtrail_report_to_first_alert_seconds_count", 0.0)

    def open_is(n: float) -> bool:
        return _scrape(service, ops)["tagtrail_open_cases"] == n

    case_ids = []
    for tag in (91_001, 91_002, 91_003):
        r = httpx.post(f"{service.url}/v1/bikes", json={"tag_id": tag, "plate": f"M{tag}"},
                       headers=owner)  # fmt: skip
        assert r.status_code == 201, r.text
        r = httpx.post(f"{service.url}/v1/thefts",
                       json={"tag_id": tag, "stolen_at": NOW - 60_000}, headers=owner)  # fmt: skip
        assert r.status_code == 201, r.text
        case_ids.append(r.json()["case"]["case_id"])
    wait_until(lambda: open_is(open0 + 3), timeout_s=10)

    # The first alert of case 0 marks it spotted: one report-to-first-alert observation, and
    # the case is still counted open; a second alert of the same case observes nothing more.
    produce(service, [make_alert(case_ids[0], 91_001, 7, NOW)])
    wait_until(
        lambda: (
            _scrape(service, ops).get("tagtrail_report_to_first_alert_seconds_count", 0)
            == first0 + 1
        )
    )
    produce(service, [make_alert(case_ids[0], 91_001, 8, NOW + 1000)])
    time.sleep(1.0)
    m = _scrape(service, ops)
    assert m["tagtrail_report_to_first_alert_seconds_count"] == first0 + 1
    assert m["tagtrail_open_cases"] == open0 + 3
    assert 0 <= m["tagtrail_report_to_first_alert_seconds_sum"] < 60

    # Recovered by the owner (spotted case) and by police (open case); the third cancelled.
    url = f"{service.url}/v1/thefts"
    r = httpx.patch(f"{url}/{case_ids[0]}", json={"status": "recovered"}, headers=owner)
    assert r.status_code == 200, r.text
    r = httpx.patch(f"{url}/{case_ids[1]}", json={"status": "recovered", "note": "found"},
                    headers=police, params={"reason": "recovered at the depot"})  # fmt: skip
    assert r.status_code == 200, r.text
    r = httpx.patch(f"{url}/{case_ids[2]}", json={"status": "cancelled"}, headers=owner)
    assert r.status_code == 200, r.text
    wait_until(lambda: open_is(open0), timeout_s=10)
    assert _scrape(service, ops)["tagtrail_recoveries_total"] == rec0 + 2
