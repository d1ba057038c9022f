"""Prometheus metrics of the stream workers and the sink (names follow Prometheus conventions)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ingest import exceptions as _ingest_errors

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
ALERTS = Counter("tagtrail_alerts_total", "Theft alerts produced")
# Broker append of a step's oldest message -> the step starting: time spent in fetch and buffers.
QUEUE_SECONDS = Histogram(
    "tagtrail_worker_queue_seconds",
    "Broker append of the oldest message in a worker step to the step's start",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# stream/worker/checkpoint_turns.py: a checkpoint holds steps only while its writer is forked.
CHECKPOINT_PAUSE = Histogram(
    "tagtrail_checkpoint_pause_seconds",
    "Worker steps held to start a partition checkpoint (fork of its writer)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
CHECKPOINT_SECONDS = Histogram(
    "tagtrail_checkpoint_seconds",
    "Partition checkpoint started to durable on disk",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# stream/worker/checkpoint_turns.py: a burst of alerts stops a live writer; the partition is saved
# at a later turn.
CHECKPOINTS_STOPPED = Counter(
    "tagtrail_checkpoints_stopped_total",
    "Partition checkpoint writers stopped to let a burst of alerts through",
)
ALERT_LATENCY = Histogram(
    "tagtrail_alert_latency_seconds",
    "Gateway publish of the read to alert produced",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- Definitions the dashboards and alert rules use. Each comment names where the metric must be
# updated; every process imports them from here so the default registry never sees a name twice.

# stream/worker/worker.py: reads that only extended an existing sighting (reads in - new sightings).
DUPLICATE_READS = Counter(
    "tagtrail_duplicate_reads_total", "Reads collapsed into an existing sighting"
)
# tagtrail/metrics_server.py OpsPoller: committed offset of the consumer group vs end offset.
CONSUMER_LAG = Gauge(
    "tagtrail_consumer_lag",
    "Messages not yet committed by the consumer group",
    ["group", "topic", "partition"],
)
# tagtrail/metrics_server.py OpsPoller, from store.health.reader_health over the silence window.
READERS_SILENT = Gauge(
    "tagtrail_reader_silent", "Registered readers with no reads or sightings in the window"
)
READERS_REGISTERED = Gauge("tagtrail_readers_registered", "Readers in the registry")
# tagtrail/metrics_server.py instrument_api (route is the route template, bounded cardinality).
API_REQUESTS = Counter(
    "tagtrail_api_requests_total", "API requests by route template and status", ["route", "status"]
)
API_SECONDS = Histogram(
    "tagtrail_api_request_seconds",
    "API request latency by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
# The recovery service's case metrics (open cases, report to first alert, recoveries) are
# recovery/metrics.py's: recovery may not import stream.metrics.

# Every reason series exists from the start at 0, so the first rejection already shows in rate()
# (a labelled counter that appears at its first increment hides that increment).
for _reason in _ingest_errors.REASONS:
    DEAD_LETTERS.labels(reason=_reason)
for _reason in _ingest_errors.READ_REASONS:
    INVALID_READS.labels(reason=_reason)
