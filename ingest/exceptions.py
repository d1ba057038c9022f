"""Errors of the gateway side: wire-format rejections (stable reason codes) and publish failures."""

from __future__ import annotations

from core.errors import TagtrailError

# Stable, machine-readable reason codes. They appear in dead-letter headers and metric labels, so
# they are part of the contract: add new ones, never rename.
# Structural: the whole message is rejected (and dead-lettered with its original bytes).
BAD_MAGIC = "bad_magic"
UNKNOWN_VERSION = "unknown_version"
BAD_HEADER = "bad_header"  # reserved header bits/fields not zero
TRUNCATED = "truncated"
LENGTH_MISMATCH = "length_mismatch"  # bytes beyond the declared body length
CHECKSUM = "checksum"
COUNT_MISMATCH = "count_mismatch"  # declared body length does not fit the read count
# Per read: only the offending reads are split off (see ingest.validate.split_invalid).
UNKNOWN_READER = "unknown_reader"
BAD_LATLON = "bad_latlon"
BAD_TIMESTAMP = "bad_timestamp"

STRUCTURAL_REASONS: tuple[str, ...] = (
    BAD_MAGIC,
    UNKNOWN_VERSION,
    BAD_HEADER,
    TRUNCATED,
    LENGTH_MISMATCH,
    CHECKSUM,
    COUNT_MISMATCH,
)
READ_REASONS: tuple[str, ...] = (UNKNOWN_READER, BAD_LATLON, BAD_TIMESTAMP)
REASONS: tuple[str, ...] = STRUCTURAL_REASONS + READ_REASONS


class IngestError(TagtrailError):
    """Base of the errors raised by the ingest package."""


class WireError(IngestError):
    """A gateway message failed decoding or validation.

    `reason` is one of REASONS (stable; route on it, never on the message text). `bad_reads` is the
    number of reads that failed a per-read check (0 for structural errors). Never retriable: the
    same bytes fail the same way, so the caller must dead-letter them, not retry.
    """

    retriable = False

    def __init__(self, reason: str, message: str, *, bad_reads: int = 0) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown wire error reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message
        self.bad_reads = bad_reads

    @property
    def structural(self) -> bool:
        """True when the whole message is unusable (as opposed to some of its reads)."""
        return self.reason in STRUCTURAL_REASONS


class PublishError(IngestError):
    """Sending a batch to Kafka failed; `retriable` is copied from the Kafka client's error."""

    def __init__(self, message: str, *, retriable: bool, topic: str, partition: int | None) -> None:
        super().__init__(message, retriable=retriable)
        self.topic = topic
        self.partition = partition
