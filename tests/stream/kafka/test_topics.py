"""Topics as the pipeline declares them: partitions, compaction and broker-stamped read times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.config import Settings
from stream.kafka.topics import ensure_topics, topic_specs


def test_specs_follow_settings(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(partitions=6, replication_factor=3)
    specs = {t.name: t for t in topic_specs(s)}
    assert specs[s.topic_reads].num_partitions == 6 and specs[s.topic_late].num_partitions == 6
    assert all(t.replication_factor == 3 for t in specs.values())
    assert specs[s.topic_hotlist].topic_configs == {"cleanup.policy": "compact"}


def test_read_messages_carry_the_broker_append_time(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    """A gateway's own timestamp (here a day ahead) is replaced by the broker's clock."""
    s = settings_factory()

    async def go() -> tuple[int, int]:
        await ensure_topics(s, kafka_bootstrap)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await prod.start()
        try:
            ahead = int(time.time() * 1000) + 86_400_000
            await prod.send_and_wait(s.topic_reads, b"x", partition=0, timestamp_ms=ahead)
        finally:
            await prod.stop()
        cons = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await cons.start()
        try:
            tp = TopicPartition(s.topic_reads, 0)
            cons.assign([tp])
            msg = await asyncio.wait_for(cons.getone(), 20)
            return msg.timestamp, msg.timestamp_type
        finally:
            await cons.stop()

    before = int(time.time() * 1000)
    ts, ts_type = asyncio.run(go())
    assert ts_type == 1  # LogAppendTime
    assert before - 5_000 <= ts <= int(time.time() * 1000) + 5_000


def test_created_topics_have_a_leader_for_every_partition(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    """ensure_topics returns only once consumers can be assigned every partition."""
    s = settings_factory(partitions=6)

    async def go() -> dict[str, list[int]]:
        await ensure_topics(s, kafka_bootstrap)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            topics = await admin.describe_topics([t.name for t in topic_specs(s)])
        finally:
            await admin.close()
        return {t["topic"]: [q["leader"] for q in t["partitions"]] for t in topics}

    leaders = asyncio.run(go())
    for spec in topic_specs(s):
        assert len(leaders[spec.name]) == spec.num_partitions
        assert all(leader >= 0 for leader in leaders[spec.name]), spec.name


def test_partition_lag_names_where_a_group_stands(
    settings_factory: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    from stream.kafka.progress import partition_lag

    s = settings_factory(partitions=3)

    async def go() -> dict[TopicPartition, tuple[int, int, int]]:
        await ensure_topics(s, kafka_bootstrap)
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await prod.start()
        try:
            for _ in range(3):
                await prod.send_and_wait(s.topic_sightings, b"x", partition=1)
        finally:
            await prod.stop()
        group = "partial-" + s.consumer_group
        # The group has committed the first of partition 1's three messages.
        # No auto-commit: stopping would otherwise commit the consumer's position (the end,
        # once it resolved it) over the offset this test commits.
        cons = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await cons.start()
        try:
            cons.assign([TopicPartition(s.topic_sightings, 1)])
            await cons.commit({TopicPartition(s.topic_sightings, 1): 1})
        finally:
            await cons.stop()
        return await partition_lag(kafka_bootstrap, group, [s.topic_sightings])

    got = asyncio.run(go())
    assert got == {
        TopicPartition(s.topic_sightings, 0): (0, 0, -1),
        TopicPartition(s.topic_sightings, 1): (2, 3, 1),
        TopicPartition(s.topic_sightings, 2): (0, 0, -1),
    }
