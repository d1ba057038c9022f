"""Late-read backfill: merges the late-reads topic into the stored sightings exactly.

The worker sets aside reads older than max_lateness_ms behind its partition's newest event time.
A backfill round takes a batch of them, reads the stored sightings of their (tag, reader) keys
and the stored raw reads of their window (`stream.sessionize.sessionizer.backfill_window`), lets
`Sessionizer.backfill` compute the exact upserts and retractions, writes them with a version above
every stored row of those tags, makes sure the late reads are in raw_reads (a later backfill
sees them), and only then commits the late messages. A round run twice writes the same rows
again: no change. Keys whose stored sightings have lost raw reads (past raw retention) are not
merged but counted: re-deriving them would shrink them.

When a round is exact (see `merge`): the live worker may still change a session near its
lateness horizon, and one session must have one writer. A key is merged only once its window
ends more than gap_ms before that horizon (its partition's watermark floor - max_lateness_ms),
after the worker and the sinks have caught up with the reads published before the floor was
read: then every read of the window is in raw_reads, every row the worker wrote for it is
stored, and the worker never touches those sessions again (a read there would be late). Other
keys are deferred: their messages stay uncommitted and are retried as the stream moves on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import Settings
from core.records.readers import ReaderRegistry
from core.records.reads import READ_DTYPES, Reads
from ingest.publisher import partition_of
from store import queries as q
from store.store import Store
from store.writes import insert_raw_reads, insert_sightings
from stream.sessionize.sessionizer import Sessionizer, backfill_window, select_window


@dataclass(frozen=True, slots=True)
class Merged:
    """What one round did: reads merged, rows written (upserts + retractions), reads deferred."""

    merged: Reads
    rows: int
    retractions: int
    deferred: Reads
    unmergeable: Reads  # their stored sightings' raw reads are gone: left as stored


def watermark_floors(
    store: Store, late: Reads, n_partitions: int, max_lateness_ms: int
) -> dict[int, int]:
    """Per reads partition, a lower bound of its worker's watermark (newest event ts seen).

    From the stored raw reads and sightings (once the worker has caught up with the raw-read sink;
    sightings because raw reads expire by event time, so a replay of old data leaves raw_reads
    empty, and deferred reads then waited for good) and from the late reads themselves (a read is
    late only if its partition had seen ts + max_lateness_ms).
    Read it BEFORE waiting for the pipeline to catch up (`stream.sinks.backfiller`), so that the raw
    reads it saw had been published, hence processed by the worker, by the end of that wait.
    """
    if len(late) == 0:
        return {}
    floors = q.partition_watermarks(store, n_partitions, int(late.ts_ms.min()) + max_lateness_ms)
    part = partition_of(late.reader_id, n_partitions)
    for p in np.unique(part):
        seen = int(late.ts_ms[part == p].max()) + max_lateness_ms + 1
        floors[int(p)] = max(floors.get(int(p), seen), seen)
    return floors


def merge(
    store: Store,
    late: Reads,
    floors: dict[int, int],
    settings: Settings,
    registry: ReaderRegistry,
    n_partitions: int,
) -> Merged:
    """Merge the late reads whose sessions are final into the store; defer the others.

    `floors` from `watermark_floors`, read before the worker and sinks caught up. Raises a
    StoreError (retriable or not) if the store fails; nothing is then half-visible to readers
    beyond what a repeated round writes again.
    """
    if len(late) == 0:
        return Merged(Reads.empty(), 0, 0, Reads.empty(), Reads.empty())
    gap, lateness = settings.gap_ms, settings.max_lateness_ms
    stored = _stored(store, late)
    window = backfill_window(late, stored, gap)
    # Final for the live worker: no read it may still apply (ts >= floor - lateness) lies
    # within gap of the window.
    floor = np.array([floors.get(int(p), np.iinfo(np.int64).min) for p in range(n_partitions)])
    key_floor = floor[partition_of(window["reader_id"], n_partitions)]
    final = window["hi"] + gap < key_floor - lateness
    ok_keys = {k: v[final] for k, v in window.items()}
    take = key_mask(late, ok_keys)
    now, deferred = late.take(np.flatnonzero(take)), late.take(np.flatnonzero(~take))
    if len(now) == 0:
        return Merged(Reads.empty(), 0, 0, deferred, Reads.empty())
    window = ok_keys
    raw_cols = q.raw_reads_between(
        store,
        window["tag_id"],
        window["reader_id"],
        int(window["lo"].min()),
        int(window["hi"].max()),
    )
    raw = Reads.from_columns(**raw_cols) if raw_cols else Reads.empty()
    raw = select_window(raw, window)
    # Stored sightings whose reads are not all in raw_reads (past the raw retention, or stored
    # before raw reads were kept) cannot be re-derived: merging would shrink them. Leave them.
    short = _short_keys(stored, raw, window)
    if len(short["tag_id"]):
        gone = key_mask(now, short)
        unmergeable = now.take(np.flatnonzero(gone))
        now = now.take(np.flatnonzero(~gone))
        window = {k: v[~key_mask_cols(window, short)] for k, v in window.items()}
        raw = select_window(raw, window)
    else:
        unmergeable = Reads.empty()
    if len(now) == 0:
        return Merged(Reads.empty(), 0, 0, deferred, unmergeable)
    version = q.max_sighting_version(store, now.tag_id) + 1
    s = Sessionizer(gap_ms=gap, max_lateness_ms=lateness, registry=registry)
    changes = s.backfill(now, raw, stored, version)
    token = _token(now, version)
    if len(changes):
        insert_sightings(store, changes.rows, dedup_token=f"backfill-rows:{token}")
    # The raw-read sink normally stored them already (it accepts what the worker accepts, late
    # or not); store the ones it has not (a registry change in flight), so that a later round
    # sees them, without counting the others twice in the read-rate views. After the rows: a
    # crash in between re-merges the same reads from the topic, so either order is safe.
    missing = now.take(np.flatnonzero(~_identity_in(now, raw)))
    if len(missing):
        insert_raw_reads(store, missing, dedup_token=f"backfill-raw:{token}")
    return Merged(now, len(changes), changes.n_retractions, deferred, unmergeable)


def _stored(store: Store, late: Reads) -> dict[str, np.ndarray]:
    got = q.sightings_of_keys(store, late.tag_id, late.reader_id)
    if got:
        return got
    return {
        "tag_id": np.empty(0, np.uint64),
        "reader_id": np.empty(0, np.uint32),
        "first_ts": np.empty(0, np.int64),
        "last_ts": np.empty(0, np.int64),
    }


def _short_keys(
    stored: dict[str, np.ndarray], raw: Reads, window: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Keys with a stored sighting in `window` that has more reads than raw_reads holds for it."""
    cols = ("tag_id", "reader_id", "first_ts", "last_ts", "n_reads")
    st = pd.DataFrame({k: stored[k] for k in cols if k in stored})
    if st.empty:
        return {"tag_id": np.empty(0, np.uint64), "reader_id": np.empty(0, np.uint32)}
    st = st.merge(pd.DataFrame(window), on=["tag_id", "reader_id"])
    st = st[(st["first_ts"] <= st["hi"]) & (st["last_ts"] >= st["lo"])].reset_index(drop=True)
    st["i"] = np.arange(len(st))
    rf = pd.DataFrame({"tag_id": raw.tag_id, "reader_id": raw.reader_id, "ts": raw.ts_ms})
    j = rf.drop_duplicates().merge(st, on=["tag_id", "reader_id"])
    j = j[(j["ts"] >= j["first_ts"]) & (j["ts"] <= j["last_ts"])]
    have = np.bincount(j["i"].to_numpy(), minlength=len(st))
    bad = st[have < st["n_reads"].to_numpy()]
    return {
        "tag_id": bad["tag_id"].to_numpy(np.uint64),
        "reader_id": bad["reader_id"].to_numpy(np.uint32),
    }


def _identity_in(reads: Reads, other: Reads) -> np.ndarray:
    """True where the read's identity (tag_id, reader_id, ts_ms) is among `other`'s."""
    have = pd.MultiIndex.from_arrays([other.tag_id, other.reader_id, other.ts_ms])
    return pd.MultiIndex.from_arrays([reads.tag_id, reads.reader_id, reads.ts_ms]).isin(have)


def key_mask_cols(cols: dict[str, np.ndarray], keys: dict[str, np.ndarray]) -> np.ndarray:
    """True where (cols tag_id, reader_id) is one of `keys`."""
    have = pd.MultiIndex.from_arrays([keys["tag_id"], keys["reader_id"]])
    return pd.MultiIndex.from_arrays([cols["tag_id"], cols["reader_id"]]).isin(have)


def key_mask(reads: Reads, keys: dict[str, np.ndarray]) -> np.ndarray:
    """True where the read's (tag_id, reader_id) is one of `keys`."""
    have = pd.MultiIndex.from_arrays([keys["tag_id"], keys["reader_id"]])
    return pd.MultiIndex.from_arrays([reads.tag_id, reads.reader_id]).isin(have)


def _token(reads: Reads, version: int) -> str:
    """A dedup token for the writes of a round: the same reads at the same version, stored once."""
    h = hashlib.blake2b(digest_size=16)
    for k in READ_DTYPES:
        h.update(np.ascontiguousarray(getattr(reads, k)).tobytes())
    return f"{version}:{h.hexdigest()}"
