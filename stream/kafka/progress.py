"""How far the pipeline has got: consumer-group offsets against the topics' end offsets."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from core.config import Settings
from stream.kafka.cluster import committed_offset, offset_clients, topic_partitions
from stream.kafka.groups import drain_stages


async def lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages of `topics` not yet committed by `group` (0 when it has caught up)."""
    return sum(behind for behind, _, _ in (await partition_lag(bootstrap, group, topics)).values())


async def partition_lag(
    bootstrap: str, group: str, topics: list[str]
) -> dict[TopicPartition, tuple[int, int, int]]:
    """Per partition of `topics`: (messages behind, end offset, offset `group` committed;
    -1 when it has committed none)."""
    async with offset_clients(bootstrap) as (admin, consumer):
        tps = await topic_partitions(consumer, topics)
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        out = {}
        for tp in tps:
            done = committed_offset(committed.get(tp))
            out[tp] = (max(end[tp] - max(done, 0), 0), end[tp], done)
        return out


async def wait_drained(settings: Settings, bootstrap: str, timeout_s: float = 600.0) -> None:
    """Return once the worker and the sinks have committed everything published so far.

    The reads are drained first (by the worker and the raw-read sink), then the sightings they
    produced (published before the reads' offsets were committed), so checks in this order are
    enough (`stream.kafka.groups.drain_stages`). A broker that is briefly unreachable
    (restarting) is waited for like any other lag, until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    for group, topic in drain_stages(settings):
        while True:
            try:
                parts = await partition_lag(bootstrap, group, [topic])
                behind = sum(n for n, _, _ in parts.values())
                # Which partitions, and where the group stands: a stuck member shows as one.
                why = f"{behind} messages behind: " + ", ".join(
                    f"partition {tp.partition} end {end} committed {done}"
                    for tp, (n, end, done) in sorted(parts.items())
                    if n
                )
            except (KafkaError, OSError) as e:
                behind, why = -1, f"broker unreachable: {e}"
            if behind == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"pipeline did not drain {topic} within {timeout_s:.0f} s ({why})"
                )
            await asyncio.sleep(0.25)
