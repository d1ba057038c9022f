"""Declares the pipeline's Kafka topics up front with their partitions and cleanup policies."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from core.config import Settings
from stream.exceptions import BrokerUnavailable

log = logging.getLogger(__name__)

# How long created topics may take to have a leader for every partition: a consumer group that
# forms before then may be assigned none of a leaderless partition.
LEADERS_TIMEOUT_S = 30.0


def topic_specs(settings: Settings) -> list[NewTopic]:
    n, rf = settings.partitions, settings.replication_factor
    compacted = {"cleanup.policy": "compact"}
    return [
        # The broker stamps each gateway message with its append time: validation judges a
        # read's timestamp against it, so a gateway with a clock far ahead cannot pass off
        # future reads, and a redelivered message is judged exactly as the first time.
        NewTopic(
            settings.topic_reads, n, rf, topic_configs={"message.timestamp.type": "LogAppendTime"}
        ),
        # The reader registry keyed by reader_id; every worker reads all of it.
        NewTopic(settings.topic_readers, 1, rf, topic_configs=compacted),
        NewTopic(settings.topic_dead_letter, 1, rf),
        NewTopic(settings.topic_late, n, rf),
        NewTopic(settings.topic_sightings, n, rf),
        # Open cases keyed by tag_id: the latest record per tag is the case's current state.
        NewTopic(settings.topic_hotlist, 1, rf, topic_configs=compacted),
        # Stamped with the broker's append time too: the moment an alert is on its topic, for
        # every consumer (the latency the pipeline answers for, apart from any reader's delay).
        NewTopic(
            settings.topic_alerts, 1, rf, topic_configs={"message.timestamp.type": "LogAppendTime"}
        ),
    ]


async def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create missing topics (existing ones are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        raise BrokerUnavailable(f"Kafka broker at {bootstrap} is unreachable") from None
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_specs(settings) if t.name not in existing]
        if missing:
            try:
                resp = await admin.create_topics(missing)
                failed = [
                    (t, code, msg) for t, code, msg in resp.topic_errors if code not in (0, 36)
                ]  # 36: TOPIC_ALREADY_EXISTS, a concurrent create
                if failed:
                    t, code, msg = failed[0]
                    raise BrokerUnavailable(f"cannot create topic {t}: error {code} {msg or ''}")
            except TopicAlreadyExistsError:
                # Another process created them between our list and create: same outcome.
                log.debug("topics created concurrently by another process")
            await _wait_for_leaders(admin, {t.name: t.num_partitions for t in missing})
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, partitions: dict[str, int]) -> None:
    """Return once every partition of these topics has a leader; BrokerUnavailable if that
    takes longer than LEADERS_TIMEOUT_S."""
    deadline = time.monotonic() + LEADERS_TIMEOUT_S
    while True:
        topics: list[dict[str, Any]] = await admin.describe_topics(list(partitions))
        led = {
            t["topic"]: sum(1 for q in t["partitions"] if q["error_code"] == 0 and q["leader"] >= 0)
            for t in topics
            if t["error_code"] == 0
        }
        waiting = sorted(name for name, n in partitions.items() if led.get(name, 0) < n)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"topics {', '.join(waiting)} have no leader for every partition after "
                f"{LEADERS_TIMEOUT_S:.0f} s"
            )
        await asyncio.sleep(0.05)
