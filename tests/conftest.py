"""Session fixtures: the real local Kafka broker and fresh data folders, on random ports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import Settings, load_settings
from tagtrail.broker.launcher import LocalKafka

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Kafka 4 broker for the whole session; killed at teardown even when tests fail."""
    settings = load_settings()
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka"), settings.kafka_cache_dir, heap_mb=512, partitions=4
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)
        broker.kill()


@pytest.fixture
def kafka_bootstrap(kafka_broker: LocalKafka) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Topic/group names unique to a test: tests sharing the broker never see each other's data."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def settings_factory(
    tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Callable[..., Settings]:
    """Settings for one test: fresh data folder, the session broker, topics unique to the test."""

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "kafka": kafka_bootstrap,
            "api_port": 0,
            "topic_reads": unique_name("reads"),
            "topic_readers": unique_name("readers"),
            "topic_dead_letter": unique_name("dlq"),
            "topic_late": unique_name("late"),
            "topic_sightings": unique_name("sightings"),
            "topic_hotlist": unique_name("hotlist"),
            "topic_alerts": unique_name("alerts"),
            "consumer_group": unique_name("group"),
        }
        base.update(overrides)
        return load_settings(**base)

    return make
