"""The pipeline's consumer-group names, one place for the members and for whoever checks on them."""

from __future__ import annotations

from core.config import Settings


def worker_group(settings: Settings) -> str:
    """The workers: the reads topic into sightings, late reads, dead letters and alerts."""
    return settings.consumer_group


def raw_group(settings: Settings) -> str:
    """The raw-read sinks: the reads topic into the store's raw_reads."""
    return f"{settings.consumer_group}-raw"


def sink_group(settings: Settings) -> str:
    """The sighting sinks (and their Faust app): the sightings topic into the store."""
    return f"{settings.consumer_group}-sink"


def backfill_group(settings: Settings) -> str:
    """The backfiller (one per pipeline): the late-reads topic merged into the store."""
    return f"{settings.consumer_group}-backfill"


def drain_stages(settings: Settings) -> list[tuple[str, str]]:
    """(group, topic) of every stage whose committed offsets say what the pipeline has done, in
    the order their inputs are produced: the reads' consumers, then the sightings' (the worker
    publishes sightings before it commits the reads they came from), so checking them in this
    order is enough to know that everything published so far has been processed."""
    return [
        (worker_group(settings), settings.topic_reads),
        (raw_group(settings), settings.topic_reads),
        (sink_group(settings), settings.topic_sightings),
    ]
