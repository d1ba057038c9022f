"""A consumer-group member of the pipeline: the consumer the worker and the raw-read sink share."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from core.config import Settings
from stream.faust_app import METADATA_MAX_AGE_MS

# The largest message a member fetches in one go (the broker's message.max.bytes).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def group_consumer(settings: Settings, bootstrap: str, group: str) -> AIOKafkaConsumer:
    """A consumer for `group` that commits by hand, from the earliest offset when it has none."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        # A killed member's partitions move to the others after this long without heartbeats.
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
        # After a broker restart the group sees the topic's partitions again within this.
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )
