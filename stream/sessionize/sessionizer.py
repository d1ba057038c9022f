"""Streaming sessionizer of one partition: batches of reads in, exact sighting upserts/retractions
out (numba kernels over sorted arrays), state in stream.sessionize.state, late reads set aside for
backfill.

Why the output is exact (the contract of stream.sessionize.reference, whatever the batching, order,
redelivery): the state holds, per (tag, reader), every distinct read of every session that a future
read could still touch. A batch is merged into the state of the keys it touches; the sessions of
those keys before and after the merge are diffed: sessions whose identity (tag, reader, first_ts)
disappeared are retracted (is_deleted=1), new or changed ones are upserted. All rows of one call
carry one version, greater than any earlier call's, so a ReplacingMergeTree(version, is_deleted)
keyed by (tag_id, reader_id, first_ts) converges on exactly the reference sightings.

Lateness. With W the newest ts seen by the partition, reads with ts < W - max_lateness_ms are not
applied but returned as `late` (for the late-reads topic). Every applied read has ts >= W -
max_lateness_ms, so a session whose last read is before W - max_lateness_ms - gap_ms can never be
touched again: it is final, and its reads are evicted (whole sessions only, so the kept sessions
stay exact).

Backfill of late reads (`backfill`): stored sightings don't carry their reads, so n_reads cannot be
merged from sightings alone. The store keeps the raw reads (days of retention: the tag-reads topic
sunk as-is), and a backfill (1) reads the stored sightings of the late reads' keys, (2) computes
`backfill_window` (every stored session a late read can touch, whole), (3) fetches the raw reads in
that window, (4) calls `backfill(late, raw, stored, version)`: raw and late reads are applied to the
state like a batch (no lateness check), stored sightings of the window whose identity no longer
exists are retracted, and the re-read final sessions are evicted again. Run it in the partition's
owner (the late topic is co-partitioned with the reads topic): a late read may touch a session
still open in the live state, and one session must have one owner. A standalone `tagtrail backfill`
with a fresh Sessionizer is exact only for windows the live state no longer holds (window hi <
live horizon - gap_ms, e.g. once the stream has drained past them); otherwise hand it to the owner.

Restarts (`expect`). Retractions come from diffing the state before and after a call, so they
assume the store holds what the state held. A state restored from a checkpoint does not know the
rows emitted after it before a crash, and redelivered reads batched differently need not make those
sessions again (a partial sighting whose earlier read came in a later batch). So it is told them
(stream.sessionize.expected), and checks each once the replay has passed its input: a row of version
v came from the state after input offset v - 1, so at the first call of version >= v all its reads
are applied again; if its identity is not a session then, it was merged away and is retracted (above
its own version). The check runs before that call's eviction: the row's last read was within
max_lateness of the watermark it was emitted at, so no earlier eviction dropped its session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from core.records.sightings import SIGHTING_DTYPES
from stream.geoindex import cells_for
from stream.sessionize.expected import ExpectedRows
from stream.sessionize.kernels import CAPS, NO_POS, NO_SEG, apply_kernel, session_identities
from stream.sessionize.state import ReadStore

CHANGE_DTYPES: dict[str, np.dtype] = {
    **SIGHTING_DTYPES,
    "version": np.dtype(np.uint64),
    "is_deleted": np.dtype(np.uint8),
}
_NO_TS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class SightingChanges:
    """Upserts (is_deleted=0, full rows) and retractions (is_deleted=1) plus the reads set aside."""

    rows: dict[str, np.ndarray]  # columns of CHANGE_DTYPES
    late: Reads
    n_duplicates: int = 0  # reads of the batch whose identity the state already held
    # Positions (in the reads given to process_parts) of the reads this part applied, when it
    # applied a subset: what the first part's alerts were raised by.
    applied: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows["tag_id"])

    @property
    def n_retractions(self) -> int:
        return int(self.rows["is_deleted"].sum())

    @classmethod
    def empty(cls) -> SightingChanges:
        return cls(_empty_rows(), Reads.empty())


def _empty_rows() -> dict[str, np.ndarray]:
    return {k: np.empty(0, dt) for k, dt in CHANGE_DTYPES.items()}


class Sessionizer:
    """Exact sessionizing of one partition's reads into sighting upserts/retractions.

    Not thread-safe: one partition, one caller. Kernels release the GIL (nogil), so the caller may
    run `process` in an executor to keep an event loop (Kafka heartbeats) responsive.
    """

    def __init__(
        self,
        gap_ms: int = 30_000,
        max_lateness_ms: int = 48 * 3600 * 1000,
        registry: ReaderRegistry | None = None,
        *,
        evict_every_ms: int | None = None,
    ) -> None:
        if gap_ms <= 0 or max_lateness_ms <= 0:
            raise ValueError(
                f"gap_ms and max_lateness_ms must be > 0, got {gap_ms}, {max_lateness_ms}"
            )
        self.gap_ms = int(gap_ms)
        self.max_lateness_ms = int(max_lateness_ms)
        # Eviction scans all keys; doing it every ~1/16 of the horizon keeps it amortized.
        self.evict_every_ms = int(evict_every_ms or max(self.gap_ms, self.max_lateness_ms // 16))
        # Fixed readers' cells are computed once per registry, not per sighting.
        self.set_registry(registry if registry is not None else ReaderRegistry.empty())
        self._store = ReadStore()
        self.watermark = _NO_TS  # newest ts applied or seen in this partition
        self.last_version = -1  # version of the last emitted rows
        self._evicted_at = _NO_TS
        self._duplicates = 0  # reads collapsed into an identity already held, since creation
        # Rows emitted after the restored checkpoint, not yet checked (`expect`), by version.
        self._expected = ExpectedRows()

    # -- public surface --------------------------------------------------------------------------
    def process(self, reads: Reads, version: int) -> SightingChanges:
        """Apply a batch; return the sighting changes of the keys it touched and its late reads.

        `version` should grow with each call (e.g. the input message's offset); rows carry
        max(version, last_version + 1) so later calls always supersede earlier ones. Processing a
        batch again (redelivery) is harmless: its reads are known (no rows) or late.
        """
        return next(self.process_parts(reads, version, None))

    def process_parts(
        self, reads: Reads, version: int, first_tags: np.ndarray | None
    ) -> Iterator[SightingChanges]:
        """`process` in two parts: the reads of `first_tags` (sorted uint64) first, then the rest.

        Yields the changes of each part, the late reads with the first (one part when first_tags
        is None). Together they are exactly process(reads, version): keys are independent, both
        parts see the watermark of the whole batch and carry one version. A caller uses the
        first part early, e.g. to alert on listed tags before the bulk of the batch is applied.
        """
        if len(reads) == 0:
            yield SightingChanges.empty()
            if first_tags is not None:
                yield SightingChanges.empty()
            return
        self.watermark = max(self.watermark, int(reads.ts_ms.max()))
        horizon = self.watermark - self.max_lateness_ms
        late_mask = reads.ts_ms < horizon
        late = Reads.empty()
        kept: np.ndarray | None = None  # positions of `reads` after the late ones left
        if late_mask.any():
            kept = np.flatnonzero(~late_mask)
            late, reads = reads.take(np.flatnonzero(late_mask)), reads.take(kept)
        applied: np.ndarray | None = None
        if first_tags is None:
            parts = [reads]
        else:
            first = np.isin(reads.tag_id, first_tags)
            # Most batches hold no listed tag: then the rest is the batch itself, not a copy.
            if first.any():
                at = np.flatnonzero(first)
                parts = [reads.take(at), reads.take(np.flatnonzero(~first))]
                applied = at if kept is None else kept[at]
            else:
                parts = [Reads.empty(), reads]
                applied = np.empty(0, np.int64)
        v = max(int(version), self.last_version + 1)
        for i, part in enumerate(parts):
            before = self._duplicates
            rows = self._apply(part, v, exact=True)
            if i == len(parts) - 1:
                if self._expected:
                    rows = self._check_expected(rows, v)
                if horizon - self.gap_ms - self._evicted_at >= self.evict_every_ms:
                    self.evict()
            yield SightingChanges(
                rows,
                late if i == 0 else Reads.empty(),
                self._duplicates - before,
                applied if i == 0 and len(parts) == 2 else None,
            )

    def backfill(
        self, late: Reads, raw: Reads, stored: dict[str, np.ndarray], version: int
    ) -> SightingChanges:
        """Merge late reads exactly, from the raw reads and stored sightings of their window.

        `window = backfill_window(late, stored, gap_ms)`; `stored`: the store's current sightings
        of the late reads' keys (at least tag_id, reader_id, first_ts, last_ts); `raw`: every
        stored raw read of those keys inside the window (more is harmless). Rows upsert what
        changed and retract every stored sighting of the window that the late reads merged away.
        """
        if len(late) == 0:
            return SightingChanges.empty()
        window = backfill_window(late, stored, self.gap_ms)
        rows = self._apply(Reads.concat([raw, late]), version)
        # Stored sightings of the window whose identity is no longer a session: retract. (The
        # state may not have held them: they can be final sessions re-read from raw just now.)
        in_win = _in_window(stored["tag_id"], stored["reader_id"], stored["first_ts"], window)
        tags, readers, firsts = (stored[k][in_win] for k in ("tag_id", "reader_id", "first_ts"))
        cur = self._sessions(window["tag_id"], window["reader_id"])
        gone = ~_isin_identity((tags, readers, firsts), cur)
        if gone.any():
            if len(rows["tag_id"]) == 0:  # no rows yet in this call: take a fresh version
                self.last_version = max(int(version), self.last_version + 1)
            extra = {k: stored[k][in_win][gone] for k in ("tag_id", "reader_id", "first_ts")}
            rows = _concat_rows([rows, _retraction_rows(extra, self.last_version)])
        self.evict()  # the re-read final sessions are final again
        return SightingChanges(_last_per_identity(rows), Reads.empty())

    def expect(self, rows: dict[str, np.ndarray]) -> int:
        """Tell a restored state the rows published after its checkpoint (e.g. read back from the
        sightings topic: tag_id, reader_id, first_ts, version, is_deleted; more rows are
        harmless, those up to `last_version` are ignored). Each is retracted once the redelivered
        reads have passed it without making it a session (the module's Restarts). Returns how
        many are expected now."""
        self._expected.add(rows, self.last_version)
        return len(self._expected)

    @property
    def n_expected(self) -> int:
        """Expected rows (`expect`) not checked yet: while any is, the output published since
        the restored checkpoint must stay readable to a restart."""
        return len(self._expected)

    def _check_expected(self, rows: dict[str, np.ndarray], version: int) -> dict[str, np.ndarray]:
        """`rows` plus retractions of the expected rows of a version up to `version` (this
        call's) whose identity is not a session of the state."""
        due = self._expected.take_due(version)
        if due is None:
            return rows
        ident = tuple(due[k] for k in ("tag_id", "reader_id", "first_ts"))
        gone = ~_isin_identity(ident, self._sessions(due["tag_id"], due["reader_id"]))
        if not gone.any():
            return rows
        extra = _retraction_rows({k: due[k][gone] for k in ("tag_id", "reader_id", "first_ts")}, 0)
        # Above the retracted row's own version: on a tie the store's choice would be chance.
        extra["version"] = np.maximum(due["version"][gone] + 1, version).astype(np.uint64)
        return _concat_rows([rows, extra])

    def _sessions(self, tags: np.ndarray, readers: np.ndarray) -> tuple[np.ndarray, ...]:
        """(tag, reader, first_ts) of every session of these keys in the state."""
        st = self._store
        slots = np.unique(st.slots_for(tags, readers))
        arrays = (st.k_tag, st.k_reader, st.k_start, st.k_len, st.pool["ts"], st.ts_base)
        return session_identities(slots, *arrays, self.gap_ms)  # type: ignore[no-any-return]

    def set_registry(self, registry: ReaderRegistry) -> None:
        """Use a new reader registry for rows emitted from now on.

        Rows already emitted keep the positions they had: a moved fixed reader changes a stored
        sighting only when that sighting is emitted again (touched by a read or a backfill).
        """
        self.registry = registry
        self._reg_cells = np.stack(cells_for(registry.lat, registry.lon))

    def evict(self) -> int:
        """Drop the reads of final sessions (last read < horizon - gap); returns reads dropped."""
        if self.watermark == _NO_TS:
            return 0
        cutoff = self.watermark - self.max_lateness_ms - self.gap_ms
        self._evicted_at = cutoff
        return self._store.evict(cutoff, self.gap_ms)

    @property
    def n_state_reads(self) -> int:
        return self._store.n_reads

    def snapshot(self) -> bytes:
        """The whole state as bytes, to checkpoint together with the committed offset.

        Raw array bytes (about the state's memory, ~9-10 bytes per held read) joined in one copy:
        tens of millions of reads take a fraction of a second. `snapshot_parts` avoids the copy.
        """
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> list[memoryview]:
        """snapshot() as zero-copy buffers (views of the live state): write them out, e.g. with
        `file.writelines(parts)`, before the next process/backfill/evict call changes the state.
        """
        meta = {
            "format": 2,
            "gap_ms": self.gap_ms,
            "max_lateness_ms": self.max_lateness_ms,
            "watermark": self.watermark,
            "last_version": self.last_version,
            "evicted_at": self._evicted_at,
        }
        return self._store.to_parts(meta)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays holding the state (valid until the state changes)."""
        return self._store.arrays()

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the state by a snapshot (any bytes-like object, e.g. an mmap of a checkpoint
        file); ValueError if it is not one or its gap_ms differs."""
        store, meta = ReadStore.from_bytes(data)
        # Format 1 (npz, before the compact state) is still read: checkpoints survive upgrades.
        if meta.get("format") not in (1, 2) or meta.get("gap_ms") != self.gap_ms:
            raise ValueError(
                f"snapshot format {meta.get('format')} gap_ms {meta.get('gap_ms')} does not match "
                f"this sessionizer (format 1 or 2, gap_ms {self.gap_ms})"
            )
        self._store = store
        self._expected.clear()
        self.watermark = meta["watermark"]
        self.last_version = meta["last_version"]
        self._evicted_at = meta["evicted_at"]

    # -- internals ---------------------------------------------------------------------------------
    def _apply(self, reads: Reads, version: int, exact: bool = False) -> dict[str, np.ndarray]:
        """Apply reads to the state; rows carry max(version, last_version + 1), or `version`
        itself when `exact` (the caller has already chosen one above last_version)."""
        if len(reads) == 0:
            return _empty_rows()
        store = self._store
        # Key slots first (a hash probe per read), so that one int64 sort of (slot, ts) groups
        # the batch by key in ts order; lexsort over (tag, reader, ts) costs about twice as much.
        read_slot = store.slots_for(reads.tag_id, reads.reader_id)
        ts = reads.ts_ms
        t0 = int(ts.min())
        if int(ts.max()) - t0 < 1 << 32 and store.n_keys < 1 << 31:
            order = np.argsort((read_slot << 32) | (ts - t0))
        else:  # a batch spanning more than 49 days (a backfill): sort the slow way
            order = np.lexsort((ts, read_slot))
        slot_sorted = read_slot[order]
        b = tuple(a[order] for a in (ts, reads.rssi_dbm, reads.flags, reads.lat, reads.lon))
        new_key = np.empty(len(order), bool)
        new_key[0] = True
        np.not_equal(slot_sorted[1:], slot_sorted[:-1], out=new_key[1:])
        starts = np.flatnonzero(new_key)
        g_start = np.append(starts, len(order)).astype(np.int64)
        slots = slot_sorted[starts]
        old_len = store.k_len[slots].astype(np.int64)
        total = old_len + np.diff(g_start)
        # Worst case per group: a fresh segment of the class that fits all its reads, and a side
        # (position) segment if the key has one or the batch brings a position.
        cap = CAPS[np.searchsorted(CAPS, total)]
        has_pos = ~(np.isnan(b[3]) & np.isnan(b[4]))
        may_pos = (store.k_pos[slots] != NO_POS) | np.logical_or.reduceat(has_pos, starts)
        old_cls = store.k_cls[slots]
        old_cap = np.where(old_cls == NO_SEG, 0, CAPS[np.minimum(old_cls, len(CAPS) - 1)])
        store.reserve(int(cap.sum()), int(np.maximum(cap, old_cap)[may_pos].sum()))
        store.fit_ts(t0, int(ts.max()))
        width = int(total.max())
        m = tuple(np.empty(width, a.dtype) for a in b)
        sb = tuple(np.empty(width, np.int64) for _ in range(3))
        sa = tuple(np.empty(width, np.int64) for _ in range(3))
        n_cap = int(2 * old_len.sum() + len(order))
        o_dtypes = (np.uint64, np.uint32, np.int64, np.int64, np.uint32, np.int8)
        o = tuple(
            np.empty(n_cap, dt) for dt in (*o_dtypes, np.float64, np.float64, np.uint8, np.uint8)
        )
        n_out, store.p_used, store.q_used = apply_kernel(
            b,
            g_start,
            slots,
            store.keys(),
            store.pool_arrays(),
            store.pos_arrays(),
            (store.p_used, store.q_used),
            store.free,
            store.ts_base,
            self.gap_ms,
            m,
            sb,
            sa,
            o,
        )
        # Distinct reads the keys gained vs reads offered: the rest were known identities.
        gained = int(store.k_len[slots].astype(np.int64).sum() - old_len.sum())
        self._duplicates += len(order) - gained
        if n_out == 0:
            return _empty_rows()
        if exact:
            self.last_version = max(int(version), self.last_version)
        else:
            self.last_version = max(int(version), self.last_version + 1)
        return self._rows(tuple(a[:n_out] for a in o), self.last_version)

    def _rows(self, o: tuple[np.ndarray, ...], version: int) -> dict[str, np.ndarray]:
        tag, reader, first, last, n, mx, rep_lat, rep_lon, rep_flags, deleted = o
        reg = self.registry
        n_reg = len(reg.reader_id)
        pos = np.minimum(np.searchsorted(reg.reader_id, reader), max(n_reg - 1, 0))
        known = (reg.reader_id[pos] == reader) if n_reg else np.zeros(len(reader), bool)
        lat, lon = np.full(len(tag), np.nan), np.full(len(tag), np.nan)
        cells = np.zeros((3, len(tag)), np.uint64)
        if n_reg:
            lat[known], lon[known] = reg.lat[pos[known]], reg.lon[pos[known]]
            cells[:, known] = self._reg_cells[:, pos[known]]
        mob = np.flatnonzero((rep_flags & FLAG_MOBILE) != 0)
        if len(mob):
            lat[mob], lon[mob] = rep_lat[mob], rep_lon[mob]
            cells[:, mob] = np.stack(cells_for(lat[mob], lon[mob]))
        cols = (tag, reader, first, last, n, mx, lat, lon, cells[0], cells[1], cells[2])
        rows = dict(zip(SIGHTING_DTYPES, cols, strict=True))
        rows["version"] = np.full(len(tag), version, np.uint64)
        rows["is_deleted"] = deleted
        return rows


def _isin_identity(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mask of rows of identity columns `a` that occur in identity columns `b`."""
    fa = pd.DataFrame({"t": a[0], "r": a[1], "f": a[2]})
    fb = pd.DataFrame({"t": b[0], "r": b[1], "f": b[2]}).drop_duplicates()
    fb["hit"] = True
    return fa.merge(fb, on=["t", "r", "f"], how="left")["hit"].notna().to_numpy()


def _in_window(
    tag: np.ndarray, reader: np.ndarray, ts: np.ndarray, window: dict[str, np.ndarray]
) -> np.ndarray:
    """Mask of rows whose ts lies in their key's [lo, hi] of `window` (False for other keys)."""
    f = pd.DataFrame({"tag_id": tag, "reader_id": reader, "ts": ts, "i": np.arange(len(tag))})
    j = f.merge(pd.DataFrame(window), on=["tag_id", "reader_id"], how="inner")
    mask = np.zeros(len(tag), bool)
    mask[j.loc[(j["ts"] >= j["lo"]) & (j["ts"] <= j["hi"]), "i"].to_numpy()] = True
    return mask


def _retraction_rows(ident: dict[str, np.ndarray], version: int) -> dict[str, np.ndarray]:
    """is_deleted rows for identities the state no longer holds (only the key columns matter)."""
    n = len(ident["tag_id"])
    rows = {k: np.zeros(n, dt) for k, dt in CHANGE_DTYPES.items()}
    rows |= {k: v.astype(CHANGE_DTYPES[k]) for k, v in ident.items()}
    rows["last_ts"] = rows["first_ts"].copy()
    rows["lat"][:], rows["lon"][:] = np.nan, np.nan
    rows["version"][:], rows["is_deleted"][:] = version, 1
    return rows


def _concat_rows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in CHANGE_DTYPES}


def _last_per_identity(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep, per (tag, reader, first_ts), the last row (the one that supersedes the others)."""
    n = len(rows["tag_id"])
    if n < 2:
        return rows
    order = np.lexsort((np.arange(n), rows["first_ts"], rows["reader_id"], rows["tag_id"]))
    t, r, f = rows["tag_id"][order], rows["reader_id"][order], rows["first_ts"][order]
    last = np.ones(n, bool)
    last[:-1] = (t[1:] != t[:-1]) | (r[1:] != r[:-1]) | (f[1:] != f[:-1])
    keep = np.sort(order[last])
    return {k: v[keep] for k, v in rows.items()}


def backfill_window(
    late: Reads, stored: dict[str, np.ndarray], gap_ms: int
) -> dict[str, np.ndarray]:
    """Per key of the late reads, the ts range [lo, hi] of raw reads `backfill` needs.

    The core is [min late ts - gap, max late ts + gap]; any stored sighting of the key overlapping
    the core may merge with a late read, so the window widens to cover it whole. Stored sightings
    are separated by more than gap, so one widening suffices. `stored`: sighting columns (at least
    tag_id, reader_id, first_ts, last_ts) of those keys, e.g. from the store's current rows.
    """
    lf = pd.DataFrame({"tag_id": late.tag_id, "reader_id": late.reader_id, "ts": late.ts_ms})
    core = lf.groupby(["tag_id", "reader_id"], as_index=False).agg(
        lo=("ts", "min"), hi=("ts", "max")
    )
    core["lo"] -= gap_ms
    core["hi"] += gap_ms
    sf = pd.DataFrame({k: stored[k] for k in ("tag_id", "reader_id", "first_ts", "last_ts")})
    j = core.merge(sf, on=["tag_id", "reader_id"], how="left")
    hit = (j["first_ts"] <= j["hi"]) & (j["last_ts"] >= j["lo"])
    j["lo2"] = j["lo"].where(~hit, np.minimum(j["lo"], j["first_ts"]))
    j["hi2"] = j["hi"].where(~hit, np.maximum(j["hi"], j["last_ts"]))
    w = j.groupby(["tag_id", "reader_id"], as_index=False).agg(lo=("lo2", "min"), hi=("hi2", "max"))
    return {
        "tag_id": w["tag_id"].to_numpy(np.uint64),
        "reader_id": w["reader_id"].to_numpy(np.uint32),
        "lo": w["lo"].to_numpy(np.int64),
        "hi": w["hi"].to_numpy(np.int64),
    }


def select_window(reads: Reads, window: dict[str, np.ndarray]) -> Reads:
    """The reads inside `window` (as from backfill_window): what the store query should return."""
    return reads.take(
        np.flatnonzero(_in_window(reads.tag_id, reads.reader_id, reads.ts_ms, window))
    )
