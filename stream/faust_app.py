"""The Faust app the sink's agents run in, and the fatal-error exit shared by the stream services.

Only the sink uses Faust: its batches are large and its latency does not matter. The worker,
whose alerts must leave within a fraction of a second, consumes with aiokafka directly
(`stream.worker.worker` says why).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as FaustKafkaProducer

from core.config import Settings

log = logging.getLogger(__name__)

METADATA_MAX_AGE_MS = 5000


def exit_now(exc: BaseException) -> None:
    """Leave the process at once, without running `finally` blocks.

    Faust acknowledges a step's events in a `finally` even when the step failed, which would
    commit offsets of reads that produced nothing. Exiting before that keeps them uncommitted,
    so a restarted process handles them again: nothing is lost.
    """
    log.critical("stream step failed; exiting without committing: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class IdempotentProducer(FaustKafkaProducer):
    """Faust's producer with Kafka idempotence: a send that aiokafka retries because a broker
    restart lost its acknowledgement is written once."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "enable_idempotence": True}


def faust_app(settings: Settings, bootstrap: str, group: str) -> faust.App:
    """A Faust app for raw-bytes topics that stream.kafka.topics has declared."""
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(settings.data_dir / "faust"),  # not the working directory
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,  # stream.kafka.topics declares every topic with its policy
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # A killed member's partitions move to the others after this long without heartbeats.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        # A rebalance while a restarted broker has not yet led its partitions assigns none of a
        # topic's partitions; the consumer rejoins when its metadata shows them again, which
        # without this waits for the 5-minute default refresh.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )
    app.transport.Producer = IdempotentProducer  # before the producer is created (app.start)
    return app
