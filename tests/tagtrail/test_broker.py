"""The local broker really runs: produce/consume through it, restart it, and fail clearly."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.config import load_settings
from tagtrail.broker.launcher import KafkaStartError, LocalKafka, metadata_ok, new_cluster_id


async def _roundtrip(bootstrap: str, topic: str, payload: bytes) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), 20)
        return bytes(msg.value)
    finally:
        await consumer.stop()


def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    assert asyncio.run(metadata_ok(kafka_bootstrap))


def test_produce_consume(kafka_bootstrap: str, unique_name) -> None:
    assert asyncio.run(_roundtrip(kafka_bootstrap, unique_name("t"), b"hello")) == b"hello"


def test_restart_keeps_data(tmp_path: Path) -> None:
    settings = load_settings()
    with LocalKafka(tmp_path / "k", settings.kafka_cache_dir, heap_mb=384) as broker:
        assert asyncio.run(_roundtrip(broker.bootstrap, "keep", b"before")) == b"before"
        broker.restart()
        consumer_value = asyncio.run(_roundtrip(broker.bootstrap, "keep2", b"after"))
        assert consumer_value == b"after"
    assert broker.proc is not None and broker.proc.poll() is not None


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        broker = LocalKafka(tmp_path / "k", settings.kafka_cache_dir, port=port)
        with pytest.raises(KafkaStartError, match=f"port {port} is taken"):
            broker.start()


def test_cluster_ids_never_look_like_options() -> None:
    ids = [new_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
