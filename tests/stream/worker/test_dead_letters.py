"""Garbage through the real pipeline: every mutated gateway message is either processed or sits in
the dead-letter topic with its reason, and the read counts add up (nothing lost, no crash)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.config import Settings
from core.records.readers import encode_reader
from core.records.reads import Reads
from ingest.exceptions import WireError
from ingest.wire import KIND_MESSAGE, KIND_READS, decode_dead_letter, decode_structure, encode_batch
from stream.kafka.progress import wait_drained
from tagtrail.up import Pipeline

READERS = np.arange(1, 6, dtype=np.uint32)


def messages(n: int, seed: int) -> list[bytes]:
    """Valid batches, some with unknown readers, and mutations: bit flips, cuts, random bytes."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000) - 60_000
    out = []
    for i in range(n):
        k = int(rng.integers(1, 20))
        readers = rng.choice(np.append(READERS, [999, 1000]), k)  # 999/1000: not registered
        reads = Reads.from_columns(
            tag_id=rng.integers(1, 50, k),
            reader_id=readers,
            ts_ms=now + rng.integers(0, 60_000, k),
            rssi_dbm=rng.integers(-90, -40, k),
            flags=np.zeros(k),
        )
        data = bytearray(encode_batch(reads, gateway_id=int(i % 7), batch_seq=i))
        kind = i % 4
        if kind == 1:  # flip a few bits anywhere
            for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # truncated
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 3 and i % 8 == 3:  # pure noise
            data = bytearray(rng.integers(0, 256, int(rng.integers(0, 200))).astype(np.uint8))
        out.append(bytes(data))
    return out


async def run(settings: Settings) -> None:
    inputs = messages(1200, seed=4)
    async with Pipeline(settings) as p:
        producer = AIOKafkaProducer(bootstrap_servers=p.bootstrap, acks="all")
        await producer.start()
        try:
            for r in READERS:
                key, value = encode_reader(int(r), 25.0 + int(r) * 1e-3, 102.7, "fixed")
                await producer.send(settings.topic_readers, value, key=key)
            await producer.flush()
            while len(p.registry.registry.reader_id) < len(READERS):
                await asyncio.sleep(0.1)
            for i, data in enumerate(inputs):
                await producer.send(settings.topic_reads, data, partition=i % settings.partitions)
            await producer.flush()
        finally:
            await producer.stop()
        await wait_drained(settings, p.bootstrap, timeout_s=120)
        worker_reads = p.app.state.reads

        consumer = AIOKafkaConsumer(
            bootstrap_servers=p.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(settings.topic_dead_letter, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            records = []
            while len(records) < end:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                records.extend(batch.get(tp, []))
        finally:
            await consumer.stop()

    dead = [decode_dead_letter(list(r.headers), bytes(r.value)) for r in records]
    # Expected, input by input: structural failures whole, the rest split by read.
    want_whole: Counter[tuple[str, bytes]] = Counter()
    total_reads = 0
    for data in inputs:
        try:
            total_reads += len(decode_structure(data).reads)
        except WireError as e:
            want_whole[(e.reason, data)] += 1
    got_whole = Counter((d.reason, d.value) for d in dead if d.kind == KIND_MESSAGE)
    assert got_whole == want_whole
    dead_reads = sum(len(decode_structure(d.value).reads) for d in dead if d.kind == KIND_READS)
    assert {d.reason for d in dead if d.kind == KIND_READS} <= {
        "unknown_reader",
        "bad_timestamp",
        "bad_latlon",
    }
    assert dead_reads > 0 and len(want_whole) > 100
    assert worker_reads + dead_reads == total_reads  # every read accounted for


def test_mutated_messages_end_in_dead_letters(settings_factory: Callable[..., Settings]) -> None:
    asyncio.run(run(settings_factory()))
