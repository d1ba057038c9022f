"""The alert ids already on the alerts topic since a time: what a worker taking over a partition
adds to the checkpoint's `alerted` set.

A checkpoint is saved every few seconds, so a worker killed after publishing an alert but before
its next checkpoint leaves a state that does not know the alert was sent; the new owner re-applies
the messages since the checkpoint and would publish the alert again. Reading back the alerts
published since the checkpoint (with a margin for clock differences) closes that gap.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer

from core.records.alerts import Alert
from stream.kafka.cluster import topic_partitions

log = logging.getLogger(__name__)

# Broker append times and the worker's checkpoint clock may differ this much.
CLOCK_MARGIN_MS = 60_000


async def alert_ids_since(bootstrap: str, topic: str, since_ms: int) -> set[str]:
    """Ids of the alerts on `topic` with a timestamp at or after `since_ms - CLOCK_MARGIN_MS`,
    read up to the end offsets as of this call."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    ids: set[str] = set()
    try:
        tps = await topic_partitions(consumer, [topic])
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times(
            {tp: max(since_ms - CLOCK_MARGIN_MS, 0) for tp in tps}
        )
        todo = {}
        for tp in tps:
            found = starts.get(tp)
            if found is None or found.offset >= ends[tp]:
                continue  # nothing since then
            consumer.seek(tp, found.offset)
            todo[tp] = ends[tp]
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, msgs in batches.items():
                for m in msgs:
                    if m.offset < todo.get(tp, -1) and m.value is not None:
                        try:
                            ids.add(Alert.decode(m.value).alert_id)
                        except (ValueError, TypeError, KeyError) as e:
                            log.warning("alerts offset %d: undecodable record (%s)", m.offset, e)
                if msgs and msgs[-1].offset + 1 >= todo.get(tp, 0):
                    todo.pop(tp, None)
    finally:
        await consumer.stop()
    return ids
