"""The raw-read sink keeps exactly the reads the worker accepts: one validation rule, judged at the
message's Kafka timestamp (no services needed: the worker's CPU step and the sink's decoding)."""

from __future__ import annotations

import numpy as np

from core.config import Settings
from core.records.readers import ReaderRegistry
from core.records.reads import Reads
from ingest.exceptions import BAD_TIMESTAMP, UNKNOWN_READER
from ingest.wire import encode_batch
from stream.followers.registry import RegistryFollower
from stream.sinks.raw_reads import valid_reads
from stream.worker.processing import Processor

PUBLISHED_MS = 1_790_000_000_000.0  # long ago: the wall clock must not matter
SKEW_MS = 600_000


def registry() -> RegistryFollower:
    follower = RegistryFollower("127.0.0.1:1", "readers")  # never started: no broker needed
    follower.registry = ReaderRegistry.from_columns([1, 2], [25.0, 25.1], [102.7, 102.8])
    return follower


def message() -> bytes:
    """Two good reads, one from an unknown reader, one just beyond the allowed clock skew."""
    base = int(PUBLISHED_MS)
    reads = Reads.from_columns(
        tag_id=[10, 11, 12, 13],
        reader_id=[1, 2, 3, 1],
        ts_ms=[base - 5_000, base + SKEW_MS, base, base + SKEW_MS + 1],
        rssi_dbm=[-50, -60, -55, -40],
    )
    return encode_batch(reads, gateway_id=7, batch_seq=1)


def test_worker_and_sink_accept_the_same_reads_at_the_message_timestamp() -> None:
    settings = Settings(max_clock_skew_ms=SKEW_MS, max_lateness_ms=3_600_000)
    proc = Processor(settings, registry())
    # Delivered twice (a redelivery): judged the same, whatever the wall clock says.
    for _ in range(2):
        out = proc.step([(message(), "reads", 0, 0, PUBLISHED_MS)])
        assert out.n_reads == 2
        assert sorted(r for r, _ in out.dead_reasons) == [BAD_TIMESTAMP, UNKNOWN_READER]
    raw = valid_reads([(message(), PUBLISHED_MS)], registry().registry.reader_id, SKEW_MS)
    assert raw.tag_id.tolist() == [10, 11]
    # A later publish time makes the far read acceptable to both, again identically.
    later = PUBLISHED_MS + 1
    out = Processor(settings, registry()).step([(message(), "reads", 0, 0, later)])
    raw = valid_reads([(message(), later)], registry().registry.reader_id, SKEW_MS)
    assert out.n_reads == len(raw) == 3
    assert np.array_equal(np.sort(raw.tag_id), [10, 11, 13])


def test_sink_skips_undecodable_messages_as_the_worker_dead_letters_them() -> None:
    raw = valid_reads(
        [(b"not a batch", PUBLISHED_MS), (message(), PUBLISHED_MS)],
        registry().registry.reader_id,
        SKEW_MS,
    )
    assert raw.tag_id.tolist() == [10, 11]
