"""Two API replicas on one store and one alerts topic: both store the alerts for their SSE
clients, but the first alert of a case marks it spotted and calls the owner's webhook once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from recovery.api import ServiceContext
from recovery.notify import Notifier
from recovery.webhook_policy import WebhookPolicy
from tagtrail.broker.launcher import LocalKafka
from tests.recovery.conftest import module_settings
from tests.recovery.harness import running_service
from tests.recovery.test_alerts import NOW, make_alert, produce, wait_until


class Counting(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        Counting.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return  # keep test output clean


@pytest.fixture
def hook() -> Iterator[str]:
    Counting.received = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    finally:
        srv.shutdown()
        srv.server_close()


def test_first_alert_acted_on_once_across_replicas(
    kafka_broker: LocalKafka, tmp_path: Path, hook: str
) -> None:
    settings = module_settings(tmp_path, kafka_broker.bootstrap)
    with running_service(settings) as svc:
        # A second replica: its own context, notifier and alert feed, the same store and topics.
        policy = WebhookPolicy.from_settings(settings)
        other = ServiceContext(
            settings=settings, runner=svc.ctx.runner, bootstrap=settings.kafka,
            notifier=Notifier(delays_s=(0.1,), policy=policy),
        )  # fmt: skip
        svc.call(other.start())
        try:
            owner = {"Authorization": svc.new_key("owner", "o")["Authorization"]}
            cases_made = []
            for i, tag in enumerate((91_001, 91_002, 91_003)):
                r = httpx.post(
                    f"{svc.url}/v1/bikes",
                    json={"tag_id": tag, "plate": f"RP{i}", "webhook_url": hook},
                    headers=owner,
                )
                assert r.status_code == 201, r.text
                r = httpx.post(
                    f"{svc.url}/v1/thefts",
                    json={"tag_id": tag, "stolen_at": NOW - 60_000},
                    headers=owner,
                )
                cases_made.append((r.json()["case"]["case_id"], tag))
            # Two alerts per case, one of them redelivered.
            alerts = [make_alert(c, t, r, NOW + r) for c, t in cases_made for r in (1, 2)]
            produce(svc, alerts + alerts[:2])

            def spotted() -> set[str]:
                return {x["case_id"] for x in Counting.received if x["event"] == "spotted"}

            wait_until(lambda: spotted() == {c for c, _ in cases_made})
            # Both replicas stored every alert (offsets 0..7), for their own SSE clients.
            wait_until(lambda: other.feed.stored_offset == svc.ctx.feed.stored_offset == 7)
            # Give a second (wrong) delivery time to arrive before counting.
            svc.call(asyncio.sleep(1.5))
            events = [x for x in Counting.received if x["event"] == "spotted"]
            assert sorted(x["case_id"] for x in events) == sorted(c for c, _ in cases_made)
        finally:
            svc.call(other.stop())
