"""A consumer-group member of the pipeline: the consumer the worker and the raw-read sink share,
and the rebalance listener every member uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from core.config import Settings
from stream.faust_app import METADATA_MAX_AGE_MS

# The largest message a member fetches in one go (the broker's message.max.bytes).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

OnPartitions = Callable[[set[TopicPartition]], Awaitable[None]]


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


class PartitionsListener(ConsumerRebalanceListener):
    """Hands a member's revoked and assigned partitions to its callbacks (None: nothing to do).

    With `on_fatal`, a callback's failure goes to it before aiokafka sees it: aiokafka logs and
    swallows a listener's exception, and a member that failed to hand over or take over its
    partitions (a lost batch, a half-adopted state) must not go on as if it had.
    """

    def __init__(
        self,
        *,
        revoked: OnPartitions | None = None,
        assigned: OnPartitions | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._revoked = revoked
        self._assigned = assigned
        self._on_fatal = on_fatal

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._revoked is not None:
            await self._call(self._revoked, revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._assigned is not None:
            await self._call(self._assigned, assigned)

    async def _call(self, callback: OnPartitions, partitions: set[TopicPartition]) -> None:
        try:
            await callback(partitions)
        except Exception as e:
            if self._on_fatal is not None:
                self._on_fatal(e)
            raise
