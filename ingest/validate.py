"""Per-read validation of decoded gateway batches: vectorised checks with stable reason codes.

Structural checks live in `ingest.wire`; this module judges the reads themselves (unknown reader,
bad position, absurd timestamp) and splits a batch into the valid reads and the rejected groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.records.reads import FLAG_MOBILE, Reads
from ingest.exceptions import BAD_LATLON, BAD_TIMESTAMP, UNKNOWN_READER, WireError


class Batch(Protocol):
    """What validation needs of a decoded gateway message (ingest.wire.Batch): its reads.

    A protocol rather than the class itself, so validation does not import the wire format that
    calls it."""

    @property
    def reads(self) -> Reads: ...


# 2015-01-01T00:00:00Z: no deployed reader predates it, so anything earlier is a clock that lost
# its time (a reset RTC typically reports 1970 or 2000).
MIN_TS_MS = 1_420_070_400_000
# How far a read may be ahead of the consumer's clock: gateway clocks drift by seconds to minutes;
# beyond this the time is wrong, and a future ts would corrupt sessionizing.
DEFAULT_MAX_FUTURE_MS = 10 * 60 * 1000


def reader_set(reader_ids: object) -> np.ndarray:
    """Turn reader ids (any int array-like) into the sorted unique uint32 array the checks need."""
    ids = np.asarray(reader_ids)
    if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() > 0xFFFF_FFFF):
        raise ValueError("reader ids must be integers in 0..2**32-1")
    return np.unique(ids.astype(np.uint32))


# Reader ids up to this bound are checked in a table indexed by id (one gather per read, about
# ten times faster than a binary search over the registry); larger ids use the search.
_TABLE_MAX_ID = 1 << 24
_table_cache: tuple[np.ndarray, np.ndarray] | None = None  # (known_readers, its table)


def _known_table(known_readers: np.ndarray) -> np.ndarray:
    """known[id] for ids 0..max+1, the last entry False (ids beyond the registry are clipped to it).
    Cached for the last registry array seen: it changes only when the registry does."""
    global _table_cache
    cached = _table_cache
    if cached is not None and cached[0] is known_readers:
        return cached[1]
    table = np.zeros(int(known_readers[-1]) + 2, dtype=bool)
    table[known_readers] = True
    _table_cache = (known_readers, table)  # one assignment: safe across threads
    return table


def unknown_reader_mask(reader_id: np.ndarray, known_readers: np.ndarray) -> np.ndarray:
    """True where reader_id is not in `known_readers` (sorted unique uint32, see reader_set)."""
    if len(known_readers) == 0:
        return np.ones(len(reader_id), dtype=bool)
    if known_readers[-1] < _TABLE_MAX_ID:
        table = _known_table(known_readers)
        return ~table[np.minimum(reader_id, len(table) - 1)]
    idx = np.searchsorted(known_readers, reader_id)
    np.minimum(idx, len(known_readers) - 1, out=idx)
    return known_readers[idx] != reader_id


def bad_latlon_mask(reads: Reads) -> np.ndarray:
    """True where a read's position is unusable.

    Mobile reads (FLAG_MOBILE) need finite lat in [-90, 90] and lon in [-180, 180], and not exactly
    (0, 0), which is what GPS modules report without a fix. Fixed reads must carry no position
    (both NaN): the reader registry is the source of truth for where a fixed reader stands.
    """
    lat, lon = reads.lat, reads.lon
    mobile = (reads.flags & FLAG_MOBILE) != 0
    # Comparisons with NaN are False, so non-finite values fail `in_range` without an isfinite pass.
    in_range = (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0) & ((lat != 0.0) | (lon != 0.0))
    no_position = np.isnan(lat) & np.isnan(lon)
    return np.where(mobile, ~in_range, ~no_position)


def bad_timestamp_mask(
    ts_ms: np.ndarray, now_ms: int | np.ndarray | None, max_future_ms: int = DEFAULT_MAX_FUTURE_MS
) -> np.ndarray:
    """True where ts_ms is before 2015 or (when now_ms is given) more than max_future_ms ahead.

    now_ms is one time for all reads, or one per read."""
    bad = ts_ms < MIN_TS_MS
    if now_ms is not None:
        bad |= ts_ms > now_ms + max_future_ms
    return bad


def reason_masks(
    reads: Reads,
    known_readers: np.ndarray | None = None,
    now_ms: int | np.ndarray | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> list[tuple[str, np.ndarray]]:
    """Disjoint masks, one per failing reason, in priority order (a read gets its first failure).

    Priority: unknown_reader, bad_latlon, bad_timestamp — a read from an unknown reader is
    reported as such even if its position is also wrong, because that is the actionable fault.
    Reasons with no failing read are left out, so an all-valid batch gives [].
    """
    checks: list[tuple[str, np.ndarray]] = []
    if known_readers is not None:
        checks.append((UNKNOWN_READER, unknown_reader_mask(reads.reader_id, known_readers)))
    checks.append((BAD_LATLON, bad_latlon_mask(reads)))
    checks.append((BAD_TIMESTAMP, bad_timestamp_mask(reads.ts_ms, now_ms, max_future_ms)))
    out: list[tuple[str, np.ndarray]] = []
    taken: np.ndarray | None = None
    for reason, mask in checks:
        if taken is not None:
            mask = mask & ~taken
        if mask.any():
            out.append((reason, mask))
            taken = mask if taken is None else taken | mask
    return out


def check_reads(
    reads: Reads,
    known_readers: np.ndarray | None = None,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> None:
    """Raise WireError (reason of the first failing check) if any read is invalid."""
    masks = reason_masks(reads, known_readers, now_ms, max_future_ms)
    if not masks:
        return
    reason, first = masks[0]
    total = sum(int(m.sum()) for _, m in masks)
    i = int(np.argmax(first))
    raise WireError(
        reason,
        f"{total} of {len(reads)} reads invalid; first: read {i} (reader {reads.reader_id[i]}, "
        f"ts_ms {reads.ts_ms[i]}, lat {reads.lat[i]}, lon {reads.lon[i]})",
        bad_reads=total,
    )


def split_reads(
    reads: Reads,
    known_readers: np.ndarray | None = None,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> tuple[Reads, list[tuple[str, Reads]]]:
    """Split reads into (valid reads, [(reason, rejected reads), ...]).

    Every input read is in exactly one output group, so counts add up. An all-valid input is
    returned as is (no copy).
    """
    masks = reason_masks(reads, known_readers, now_ms, max_future_ms)
    if not masks:
        return reads, []
    bad = masks[0][1].copy()
    for _, m in masks[1:]:
        bad |= m
    rejected = [(reason, reads.take(np.flatnonzero(m))) for reason, m in masks]
    return reads.take(np.flatnonzero(~bad)), rejected


def split_invalid(
    batch: Batch,
    known_readers: np.ndarray | None = None,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> tuple[Reads, list[tuple[str, Reads]]]:
    """split_reads for a decoded Batch: what a consumer does after `decode_structure`.

    The valid reads continue down the pipeline; each rejected group is re-encoded with
    `ingest.wire.dead_letters_for` and produced on the dead-letter topic, so it can be replayed.
    """
    return split_reads(batch.reads, known_readers, now_ms, max_future_ms)


def split_invalid_many(
    batches: Sequence[Batch],
    known_readers: np.ndarray | None,
    now_ms: Sequence[int],
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> tuple[Reads, list[list[tuple[str, Reads]]], np.ndarray]:
    """split_invalid of each batch (judged at its own now_ms), checked in one vectorised pass.

    Returns the valid reads of all batches concatenated in batch order, per batch its rejected
    groups exactly as split_invalid gives them, and the batch index of each valid read. One pass
    over many small gateway messages costs a fraction of one call per message.
    """
    reads = Reads.concat([b.reads for b in batches])
    counts = np.fromiter((len(b.reads) for b in batches), dtype=np.int64, count=len(batches))
    now = np.repeat(np.asarray(now_ms, dtype=np.int64), counts)
    masks = reason_masks(reads, known_readers, now, max_future_ms)
    rejected: list[list[tuple[str, Reads]]] = [[] for _ in batches]
    source = np.repeat(np.arange(len(batches), dtype=np.int32), counts)
    if not masks:
        return reads, rejected, source
    bad = masks[0][1].copy()
    for _, m in masks[1:]:
        bad |= m
    ends = np.cumsum(counts)
    for i in np.unique(np.searchsorted(ends, np.flatnonzero(bad), side="right")).tolist():
        lo, hi = int(ends[i] - counts[i]), int(ends[i])
        rejected[i] = [
            (reason, batches[i].reads.take(np.flatnonzero(m[lo:hi])))
            for reason, m in masks
            if m[lo:hi].any()
        ]
    keep = np.flatnonzero(~bad)
    return reads.take(keep), rejected, source[keep]
