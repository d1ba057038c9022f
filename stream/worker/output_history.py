"""The sighting rows a reads partition's owner published after its checkpoint, read back from the
sightings topic: what a restarted owner must retract if the redelivered reads do not make them
again (`Sessionizer.expect`).

A partition's upserts go to one sightings partition (`publishing.sightings_partition`), each
message with a header naming the reads partition, and a checkpoint records where that partition's
output stood when its state was saved. Reading from there to the end gives every row published
after the checkpoint, by any process that owned the partition since.
"""

from __future__ import annotations

import logging

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.records.sightings import concat_upserts, decode_upserts
from stream.kafka.group_member import MAX_MESSAGE_BYTES
from stream.worker.alert_history import CLOCK_MARGIN_MS
from stream.worker.publishing import READS_PARTITION_HEADER

log = logging.getLogger(__name__)


async def published_since(
    bootstrap: str,
    topic: str,
    reads_partition: int,
    sightings_partition: int,
    start: int | None,
    since_ms: int = 0,
) -> tuple[dict[str, np.ndarray], int, int]:
    """(rows, first offset read, end offset) of the upserts of `reads_partition` on
    `sightings_partition` of `topic`, from offset `start` (None: from the first message at or
    after `since_ms` less a clock margin, or the beginning when `since_ms` is 0) up to the end
    offset as of this call."""
    tp = TopicPartition(topic, sightings_partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    header = str(reads_partition).encode()
    parts: list[dict[str, np.ndarray]] = []
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        first = (await consumer.beginning_offsets([tp]))[tp]
        if start is None and since_ms > 0:
            found = (await consumer.offsets_for_times({tp: max(since_ms - CLOCK_MARGIN_MS, 0)}))[tp]
            start = found.offset if found is not None else end
        # Below the log start (retention): what is left is all there is.
        start = max(start if start is not None else first, first)
        at = start
        if at < end:
            consumer.seek(tp, at)
        while at < end:
            batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=2000)).get(tp, [])
            for m in batch:
                if m.offset >= end:
                    break
                if m.value is not None and (READS_PARTITION_HEADER, header) in list(m.headers):
                    parts.append(decode_upserts(m.value))
            # The position, not the last record: offsets may have gaps (compaction, markers).
            at = max(at, await consumer.position(tp))
    finally:
        await consumer.stop()
    rows = concat_upserts(parts)
    log.debug(
        "read back %d sighting rows of reads partition %d from %s offsets [%d, %d)",
        len(rows["tag_id"]), reads_partition, topic, start, end,
    )  # fmt: skip
    return rows, start, end


async def log_start(bootstrap: str, topic: str, partition: int) -> int:
    """The first offset `topic`'s `partition` still holds (retention deletes older ones)."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return int((await consumer.beginning_offsets([tp]))[tp])
    finally:
        await consumer.stop()
