"""The e2e benchmark's broker warm-up: a scratch topic's load before the replay is measured.

A freshly started broker interprets its code and compiles the hot paths while it serves the
first seconds of load: in a day's replay its CPU ran at 0.6-0.7 cores through the first gateway
flushes (0.1-0.25 at the same message rate later), competing with the pipeline exactly during the
day's first burst of alerts. A city's broker has been running for weeks; this gives the bench's
broker the same start: gateway-sized compressed messages produced and consumed for a few seconds,
on a topic the pipeline does not read, deleted afterwards.
"""

from __future__ import annotations

import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ingest.publisher import best_compression

TOPIC = "bench-broker-warmup"


async def warm_broker(
    bootstrap: str, seconds: float = 15.0, messages_per_s: int = 1500, partitions: int = 4
) -> dict[str, float]:
    """Produce and consume `messages_per_s` ~4 KB messages on a scratch topic for `seconds`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, partitions, 1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            compression_type=best_compression(),
            linger_ms=5,
            max_batch_size=1024 * 1024,
        )
        consumer = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await producer.start()
        await consumer.start()
        sent = got = 0
        try:
            # Half random, half repeated bytes: compresses about as gateway batches do.
            payloads = [os.urandom(2048) + bytes(2048) for _ in range(64)]
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < seconds:
                due = int(elapsed * messages_per_s) - sent
                for i in range(due):
                    await producer.send(TOPIC, payloads[(sent + i) % 64], partition=i % partitions)
                sent += max(due, 0)
                fetched = await consumer.getmany(timeout_ms=50)
                got += sum(len(v) for v in fetched.values())
            await producer.flush()
        finally:
            await consumer.stop()
            await producer.stop()
        await admin.delete_topics([TOPIC])
    finally:
        await admin.close()
    return {"seconds": seconds, "messages_sent": sent, "messages_received": got}
