"""Prometheus metrics of the stream workers and the sink (names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

READS_IN = Counter("tagtrail_reads_total", "Valid reads accepted by the workers")
INVALID_READS = Counter("tagtrail_invalid_reads_total", "Reads rejected, by reason", ["reason"])
DEAD_LETTERS = Counter(
    "tagtrail_dead_letters_total", "Dead-letter records produced, by reason", ["reason"]
)
LATE_READS = Counter("tagtrail_late_reads_total", "Reads beyond the maximum lateness")
BATCH_SECONDS = Histogram(
    "tagtrail_worker_batch_seconds",
    "Time to process one gateway batch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
SIGHTINGS_WRITTEN = Counter(
    "tagtrail_sightings_written_total", "Sighting upserts written to the store"
)
SINK_BATCH_ROWS = Histogram(
    "tagtrail_sink_batch_rows",
    "Rows per store insert",
    buckets=(10, 100, 1000, 10_000, 100_000, 1_000_000),
)
SINK_SECONDS = Histogram("tagtrail_sink_insert_seconds", "Time of one store insert")
HOTLIST_SIZE = Gauge("tagtrail_hotlist_size", "Open theft cases held by the worker")
