"""Asking the cluster: the partitions of topics (metadata), end offsets and committed offsets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> list[TopicPartition]:
    """Every partition of `topics` in the cluster's metadata now, in topic and partition order
    (none for a topic that does not exist). One metadata request, whatever the consumer follows.
    """
    # The public partitions_for_topic() answers only for topics the consumer subscribes to or is
    # assigned, and topics() fetches the whole cluster's metadata but returns only the names.
    meta = await consumer._client.fetch_all_metadata()
    return [
        TopicPartition(t, p) for t in topics for p in sorted(meta.partitions_for_topic(t) or ())
    ]


@asynccontextmanager
async def offset_clients(
    bootstrap: str,
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client (committed offsets, groups) and a consumer in no group (metadata, end
    offsets), started, and closed on leaving."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    try:
        await consumer.start()
        try:
            yield admin, consumer
        finally:
            await consumer.stop()
    finally:
        await admin.close()


def committed_offset(om: OffsetAndMetadata | None) -> int:
    """The offset a group committed, or -1 when it has committed none."""
    return -1 if om is None or om.offset < 0 else int(om.offset)
