"""Reading back the alerts already published since a time (a partition's new owner does this)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from pytest import MonkeyPatch

from core.config import Settings
from core.records.alerts import Alert, alert_id
from stream.kafka.topics import ensure_topics
from stream.worker import alert_history
from stream.worker.alert_history import alert_ids_since


def _alert(case: str, first_ts: int) -> Alert:
    return Alert(
        alert_id=alert_id(case, 5, 7, first_ts), case_id=case, tag_id=5, reader_id=7,
        first_ts=first_ts, last_ts=first_ts + 1, lat=25.0, lon=102.7, h3_r9=1,
        read_published_ms=first_ts,
    )  # fmt: skip


def test_ids_since_a_time_with_the_clock_margin(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str, monkeypatch: MonkeyPatch
) -> None:
    # The alerts topic is stamped with broker append times: "old" alerts are appended a margin
    # before the recent ones (a margin shortened to keep the test short).
    margin_ms = 1_000
    monkeypatch.setattr(alert_history, "CLOCK_MARGIN_MS", margin_ms)
    s = settings_factory()
    old = [_alert("c1", 1), _alert("c1", 2)]
    recent = [_alert("c2", 3), _alert("c2", 4)]

    async def go() -> tuple[set[str], set[str], set[str]]:
        await ensure_topics(s, kafka_bootstrap)
        p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await p.start()
        try:
            for a in old:
                await p.send_and_wait(s.topic_alerts, a.encode())
            await asyncio.sleep(3 * margin_ms / 1000)
            now = int(time.time() * 1000)
            for a in recent:
                await p.send_and_wait(s.topic_alerts, a.encode())
            await p.send_and_wait(s.topic_alerts, b"not json")
        finally:
            await p.stop()
        return (
            # A checkpoint saved `margin` after the recent alerts' append: they are still read.
            await alert_ids_since(kafka_bootstrap, s.topic_alerts, now + margin_ms - 10),
            await alert_ids_since(kafka_bootstrap, s.topic_alerts, 0),
            await alert_ids_since(kafka_bootstrap, s.topic_alerts, now + 10 * margin_ms),
        )

    since_now, everything, future = asyncio.run(go())
    assert since_now == {a.alert_id for a in recent}
    assert everything == {a.alert_id for a in old + recent}
    assert future == set()
