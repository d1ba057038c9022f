"""The API's alerts follower resumes after a restart: alerts published while it was down are
stored when it comes back, each once, in stream order (no module service: its own store)."""

from __future__ import annotations

from typing import Any

import pytest

from store import cases
from tagtrail.broker.launcher import LocalKafka
from tests.recovery.conftest import module_settings
from tests.recovery.harness import Service, running_service
from tests.recovery.test_alerts import NOW, make_alert, produce_to, wait_until


def test_alerts_follower_resumes_after_restart(
    kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = module_settings(tmp_path_factory.mktemp("restart"), kafka_broker.bootstrap)
    batch1 = [make_alert("c_r", 9, r, NOW + r) for r in range(3)]
    batch2 = [make_alert("c_r", 9, r, NOW + r) for r in range(3, 6)]

    def stored(svc: Service) -> list[dict[str, Any]]:
        return svc.call(svc.ctx.runner.run(cases.list_alerts, case_id="c_r"))

    with running_service(settings) as svc:
        produce_to(settings.kafka, settings.topic_alerts, batch1)
        wait_until(lambda: len(stored(svc)) == 3)
    # While the API is down: more alerts, and a redelivery of one already stored.
    produce_to(settings.kafka, settings.topic_alerts, [*batch2, batch1[0]])
    with running_service(settings) as svc:
        wait_until(lambda: svc.ctx.feed.stored_offset == 6)
        rows = stored(svc)
        assert [r["stream_offset"] for r in rows] == sorted(r["stream_offset"] for r in rows)
        assert sorted(r["alert_id"] for r in rows) == sorted(a.alert_id for a in batch1 + batch2)
