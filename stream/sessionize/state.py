"""Sessionizer state of one partition: the distinct reads of every open (tag, reader) key kept in
flat numpy arrays (key table + open-addressing hash index + segment pools), the numba kernel that
merges a batch into it and diffs the touched keys' sessions, eviction, compaction, snapshot bytes.

Layout, sized for tens of millions of reads per worker (~10 bytes per read, keys included):

* Key k owns the pool segment [k_start[k], k_start[k] + CAPS[k_cls[k]]) whose first k_len[k]
  entries hold its distinct reads sorted by ts (one winner per identity): ts as an offset from the
  store-wide `ts_base` (uint32, 49.7 days of range), rssi int8, flags uint8: 6 bytes per read.
* Positions are only carried by mobile readers' reads (a small share), so lat/lon live in a side
  pool: a key that holds any read with a position has a parallel segment there (k_pos[k], same
  capacity, NaN for its reads without one); every other key has none (k_pos == NO_POS).
* Segment capacities come from size classes ~1.25x apart (CAPS). A key that outgrows its segment
  moves to the smallest class that fits; the old segment goes on its class's free list (the link
  is kept in the free segment's first entry), which later allocations of that class reuse, so
  growth leaves little garbage. `compact()` slides all segments together in place (no second
  copy of the state) and drops evicted keys from the table.
* ts range. A batch whose ts would not fit the uint32 offsets rebases the live offsets (rare:
  the live state spans ~2 days of 49.7); if the state itself spans more than 2^32 ms (only with a
  huge max lateness), the ts pool widens to int64 absolute ts, and narrows again once eviction
  brings the span back. Either way exact: nothing ever wraps.

Snapshots are the used parts of the arrays as raw bytes behind a small JSON header (no zip, no
crc, one copy), so a checkpoint of a big state costs about a memcpy.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from stream.sessionize.kernels import (
    _EMPTY,
    _NIL,
    _NO_TS,
    CAPS,
    NO_POS,
    NO_SEG,
    _evict,
    _find_or_insert,
    _live_span,
    _rehash,
    _shift_live,
    _slide,
)

_U32_MAX = 2**32 - 1
_MAX_POOL = 2**32 - 2  # segment starts are uint32 and _NIL must never be a start
_MAGIC = b"TTSTATE2"
_KEY_ARRAYS: dict[str, np.dtype] = {
    "k_tag": np.dtype(np.uint64),
    "k_reader": np.dtype(np.uint32),
    "k_start": np.dtype(np.uint32),
    "k_len": np.dtype(np.uint32),
    "k_cls": np.dtype(np.uint8),
    "k_pos": np.dtype(np.uint32),
}
_POOL_FIELDS = ("ts", "rssi", "flags")
_POS_FIELDS = ("lat", "lon")


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


def _excl_cumsum(a: np.ndarray) -> np.ndarray:
    out = np.zeros(len(a), np.int64)
    np.cumsum(a[:-1], out=out[1:])
    return out


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    """`a` with room for `cap` entries, resized in place (realloc: a big block is remapped, not
    copied, so growing never holds the old and the new array at once)."""
    a.resize(cap, refcheck=False)  # nothing keeps views of the store's arrays between calls
    return a


def _check_layout(a: dict[str, np.ndarray]) -> None:
    """Dtypes and segment bounds of snapshot arrays: the kernels do not bounds-check."""
    want = {**_KEY_ARRAYS, "p_rssi": np.dtype(np.int8), "p_flags": np.dtype(np.uint8)}
    want |= {"q_lat": np.dtype(np.float64), "q_lon": np.dtype(np.float64)}
    bad = [k for k, dt in want.items() if a[k].dtype != dt]
    if a["p_ts"].dtype not in (np.uint32, np.int64) or a["free"].shape != (2, len(CAPS)):
        bad.append("p_ts/free")
    if bad:
        raise ValueError(f"unexpected dtypes or shapes of {bad}")
    seg = a["k_cls"] != NO_SEG
    cap = CAPS[np.minimum(a["k_cls"], len(CAPS) - 1)]
    pos = seg & (a["k_pos"] != NO_POS)
    n_p, n_q, free = len(a["p_ts"]), len(a["q_lat"]), a["free"]
    if (
        len({len(a[k]) for k in _KEY_ARRAYS}) > 1
        or len({n_p, len(a["p_rssi"]), len(a["p_flags"])}) > 1
        or len(a["q_lon"]) != n_q
        or np.any(a["k_len"][seg] > cap[seg])
        or np.any(a["k_len"][~seg] != 0)
        or np.any(a["k_start"][seg].astype(np.int64) + cap[seg] > n_p)
        or np.any(a["k_pos"][pos].astype(np.int64) + cap[pos] > n_q)
        or np.any((free[0] != _NIL) & (free[0] >= n_p))
        or np.any((free[1] != _NIL) & (free[1] >= n_q))
    ):
        raise ValueError("segments out of bounds")


class ReadStore:
    """The distinct reads per (tag, reader) key of one partition, in flat arrays."""

    def __init__(self, key_capacity: int = 1024, pool_capacity: int = 8192) -> None:
        self.n_keys = 0
        for name, dt in _KEY_ARRAYS.items():
            setattr(self, name, np.zeros(key_capacity, dt))
        self.h_slot = np.full(_pow2_at_least(2 * key_capacity), _EMPTY, np.uint32)
        self.ts_base = 0  # ts of a pool entry = ts_base + stored value
        self.p_used = self.q_used = 0
        self.pool = {
            "ts": np.zeros(pool_capacity, np.uint32),
            "rssi": np.zeros(pool_capacity, np.int8),
            "flags": np.zeros(pool_capacity, np.uint8),
        }
        self.pos = {k: np.zeros(1024, np.float64) for k in _POS_FIELDS}
        self.free = np.full((2, len(CAPS)), _NIL, np.int64)  # heads: pool, side pool

    @property
    def wide(self) -> bool:
        """True while the ts pool holds int64 absolute ts (the state spans > 2^32 ms)."""
        return self.pool["ts"].dtype == np.int64

    def keys(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in _KEY_ARRAYS)

    def pool_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self.pool[k] for k in _POOL_FIELDS)

    def pos_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self.pos[k] for k in _POS_FIELDS)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """Every array of the state (whole, not the used parts): the memory it holds."""
        return (*self.keys(), self.h_slot, *self.pool_arrays(), *self.pos_arrays(), self.free)

    @property
    def n_reads(self) -> int:
        return int(self.k_len[: self.n_keys].sum(dtype=np.int64))

    def nbytes_used(self) -> int:
        """Bytes of the arrays' used parts (keys, hash index, pools up to their high-water mark)."""
        keys = sum(a[: self.n_keys].nbytes for a in self.keys()) + self.h_slot.nbytes
        pool = sum(a[: self.p_used].nbytes for a in self.pool_arrays())
        return keys + pool + sum(a[: self.q_used].nbytes for a in self.pos_arrays())

    # -- keys ---------------------------------------------------------------------------------
    def slots_for(self, tags: np.ndarray, readers: np.ndarray) -> np.ndarray:
        """Slot index of each (tag, reader), inserting unknown keys (with no reads) first."""
        need = self.n_keys + len(tags)
        if need >= _EMPTY:
            raise ValueError(f"sessionizer state: more than {_EMPTY - 1} keys in one partition")
        if need > len(self.k_tag):
            cap = max(need, len(self.k_tag) * 3 // 2)
            for name in _KEY_ARRAYS:
                setattr(self, name, _grow(getattr(self, name), cap))
        if 5 * need > 3 * len(self.h_slot):  # keep the load factor <= 0.6
            self._rehash(need)
        out = np.empty(len(tags), np.int64)
        self.n_keys = _find_or_insert(self.h_slot, self.keys(), self.n_keys, tags, readers, out)
        return out

    def _rehash(self, n: int) -> None:
        self.h_slot = np.full(_pow2_at_least(2 * n), _EMPTY, np.uint32)
        _rehash(self.h_slot, self.k_tag, self.k_reader, self.n_keys)

    # -- pools --------------------------------------------------------------------------------
    def reserve(self, extra: int, extra_pos: int) -> None:
        """Make room for `extra` more pool entries past p_used, `extra_pos` past q_used."""
        need = self.p_used + extra
        if need > _MAX_POOL:
            raise ValueError(f"sessionizer state: more than {_MAX_POOL} reads in one partition")
        cap = len(self.pool["ts"])
        if need > cap:
            new_cap = min(max(need, cap * 5 // 4), _MAX_POOL)
            self.pool = {k: _grow(a, new_cap) for k, a in self.pool.items()}
        need = self.q_used + extra_pos
        if need > len(self.pos["lat"]):
            new_cap = min(max(need, len(self.pos["lat"]) * 5 // 4), _MAX_POOL)
            self.pos = {k: _grow(a, new_cap) for k, a in self.pos.items()}

    def fit_ts(self, lo: int, hi: int) -> None:
        """Make ts in [lo, hi] storable: rebase the uint32 offsets, or widen to int64 if the
        state plus [lo, hi] spans more than 2^32 ms."""
        if self.wide or (lo >= self.ts_base and hi - self.ts_base <= _U32_MAX):
            return
        s_lo, s_hi, live = _live_span(self.k_start, self.k_len, self.n_keys, self.pool["ts"])
        if live:
            lo, hi = min(lo, self.ts_base + int(s_lo)), max(hi, self.ts_base + int(s_hi))
        if hi - lo > _U32_MAX:
            ts = self.pool["ts"]
            wide = np.zeros(len(ts), np.int64)
            wide[: self.p_used] = ts[: self.p_used]  # free-list links keep their values
            _shift_live(self.k_start, self.k_len, self.n_keys, wide, self.ts_base)
            self.pool["ts"], self.ts_base = wide, 0
            return
        # Leave 1/4 of the free range below (late reads), 3/4 above (time moves on).
        new_base = max(lo - (_U32_MAX - (hi - lo)) // 4, int(_NO_TS))
        _shift_live(self.k_start, self.k_len, self.n_keys, self.pool["ts"], self.ts_base - new_base)
        self.ts_base = new_base

    def _narrow(self) -> None:
        """Back to uint32 offsets once the live state spans at most half their range."""
        s_lo, s_hi, live = _live_span(self.k_start, self.k_len, self.n_keys, self.pool["ts"])
        if live and int(s_hi) - int(s_lo) > _U32_MAX // 2:
            return
        new_base = int(s_lo) - _U32_MAX // 4 if live else 0
        ts = self.pool["ts"]
        _shift_live(self.k_start, self.k_len, self.n_keys, ts, -new_base)
        # Garbage entries may wrap in the cast; live entries and free-list links (< 2^32) don't.
        self.pool["ts"], self.ts_base = ts.astype(np.uint32), new_base

    # -- eviction and compaction -------------------------------------------------------------
    def evict(self, cutoff_ts: int, gap_ms: int) -> int:
        """Drop whole sessions whose last read is before cutoff_ts; compact when much is garbage."""
        cutoff = min(max(cutoff_ts - self.ts_base, int(_NO_TS)), 2**63 - 1)
        dropped = int(
            _evict(
                self.keys(), self.n_keys, self.pool_arrays(), self.pos_arrays(), self.free,
                cutoff, gap_ms,
            )
        )  # fmt: skip
        if self.wide:
            self._narrow()
        n_reads = self.n_reads
        live_keys = int(np.count_nonzero(self.k_len[: self.n_keys]))
        if self.n_keys > 2 * live_keys + 1024 or self.p_used > 3 * n_reads // 2 + 65536:
            self.compact()
        return dropped

    def compact(self) -> None:
        """Slide every live segment down in place (tightest class) and drop evicted keys."""
        live = np.flatnonzero(self.k_len[: self.n_keys] > 0)
        n = len(live)
        for name in _KEY_ARRAYS:
            a = getattr(self, name)
            a[:n] = a[live]
        self.n_keys = n
        lens = self.k_len[:n].astype(np.int64)
        cls = np.searchsorted(CAPS, lens)  # <= the current class: segments only move down
        caps = CAPS[cls]
        order = np.argsort(self.k_start[:n], kind="stable")
        dst = _excl_cumsum(caps[order])
        for a in self.pool_arrays():
            _slide(order, self.k_start, self.k_len, dst, a)
        self.k_start[order] = dst
        self.p_used = int(caps.sum())
        has = np.flatnonzero(self.k_pos[:n] != NO_POS)
        order_q = has[np.argsort(self.k_pos[has], kind="stable")]
        dst_q = _excl_cumsum(caps[order_q])
        for a in self.pos_arrays():
            _slide(order_q, self.k_pos, self.k_len, dst_q, a)
        self.k_pos[order_q] = dst_q
        self.q_used = int(caps[order_q].sum())
        self.k_cls[:n] = cls
        self.free[:] = _NIL
        # Give memory back: the pools' tails and the key table's dead part.
        self.pool = {k: _grow(a, max(8192, self.p_used * 9 // 8)) for k, a in self.pool.items()}
        self.pos = {k: _grow(a, max(1024, self.q_used * 9 // 8)) for k, a in self.pos.items()}
        for name in _KEY_ARRAYS:
            setattr(self, name, _grow(getattr(self, name), max(1024, n * 9 // 8)))
        self._rehash(n)

    # -- persistence ---------------------------------------------------------------------------
    def _snapshot_arrays(self) -> dict[str, np.ndarray]:
        out = {name: a[: self.n_keys] for name, a in zip(_KEY_ARRAYS, self.keys(), strict=True)}
        out |= {f"p_{k}": a[: self.p_used] for k, a in self.pool.items()}
        out |= {f"q_{k}": a[: self.q_used] for k, a in self.pos.items()}
        return out | {"free": self.free}

    def to_parts(self, meta: dict[str, int]) -> list[memoryview]:
        """The snapshot as buffers without copying: a JSON header, then the arrays' raw bytes.

        Views of the live arrays: write them out (e.g. `file.writelines`) before the state
        changes again. Free segments and slack are included as they are (~the used memory).
        """
        arrays = self._snapshot_arrays()
        header = {
            "meta": meta,
            "ts_base": self.ts_base,
            "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()],
        }
        h = json.dumps(header).encode()
        head = [memoryview(b) for b in (_MAGIC, struct.pack("<Q", len(h)), h)]
        return head + [memoryview(np.ascontiguousarray(a)).cast("B") for a in arrays.values()]

    def to_bytes(self, meta: dict[str, int]) -> bytes:
        """to_parts joined: one copy, no compression (a checkpoint runs while processing waits)."""
        return b"".join(self.to_parts(meta))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> tuple[ReadStore, dict[str, int]]:
        """Inverse of to_bytes (also reads the npz snapshots of the previous format); `data` may
        be any bytes-like object (e.g. an mmap of a checkpoint file: read once, not copied
        whole). Raises ValueError on a blob that is not a state snapshot."""
        data = memoryview(data).cast("B")
        if data[:2] == b"PK":
            return cls._from_npz(data)
        try:
            if data[: len(_MAGIC)] != _MAGIC:
                raise ValueError("bad magic")
            (n_h,) = struct.unpack_from("<Q", data, len(_MAGIC))
            off = len(_MAGIC) + 8 + n_h
            header = json.loads(bytes(data[off - n_h : off]))
            arrays = {}
            for name, dt, shape in header["arrays"]:
                dtype = np.dtype(dt)
                n = int(np.prod(shape)) if shape else 1
                if off + n * dtype.itemsize > len(data):
                    raise ValueError("truncated")
                arrays[name] = np.frombuffer(data, dtype, n, off).reshape(shape)
                off += n * dtype.itemsize
            expected = {*_KEY_ARRAYS, *(f"p_{k}" for k in _POOL_FIELDS), "free"}
            expected |= {f"q_{k}" for k in _POS_FIELDS}
            if set(arrays) != expected or off != len(data):
                raise ValueError("unexpected arrays or trailing bytes")
            _check_layout(arrays)
            meta, ts_base = dict(header["meta"]), int(header["ts_base"])
        except (ValueError, KeyError, TypeError, struct.error) as e:
            raise ValueError(f"not a sessionizer snapshot: {e}") from e
        n_keys, p_used = len(arrays["k_tag"]), len(arrays["p_ts"])
        store = cls(max(1024, n_keys * 9 // 8), max(8192, p_used * 9 // 8))
        for name in _KEY_ARRAYS:
            getattr(store, name)[:n_keys] = arrays[name]
        store.n_keys, store.p_used, store.q_used = n_keys, p_used, len(arrays["q_lat"])
        if arrays["p_ts"].dtype == np.int64:
            store.pool["ts"] = store.pool["ts"].astype(np.int64)
        for k in _POOL_FIELDS:
            store.pool[k][:p_used] = arrays[f"p_{k}"]
        store.reserve(0, store.q_used)
        for k in _POS_FIELDS:
            store.pos[k][: store.q_used] = arrays[f"q_{k}"]
        store.free[:] = arrays["free"]
        store.ts_base = ts_base
        store._rehash(n_keys)
        return store, {k: int(v) for k, v in meta.items()}

    @classmethod
    def _from_npz(cls, data: bytes) -> tuple[ReadStore, dict[str, int]]:
        """A snapshot of the previous format: live keys' reads concatenated (npz)."""
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            a = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"not a sessionizer snapshot: {e}") from e
        missing = {"tag", "reader", "len", "ts", "rssi", "flags", "lat", "lon"} - set(a)
        if missing:
            raise ValueError(f"sessionizer snapshot lacks {sorted(missing)}")
        store = cls()
        lens = a["len"].astype(np.int64)
        n, total = len(lens), int(lens.sum())
        store.slots_for(a["tag"].astype(np.uint64), a["reader"].astype(np.uint32))
        cls_ = np.searchsorted(CAPS, lens)
        starts = _excl_cumsum(CAPS[cls_])
        within = np.arange(total) - np.repeat(_excl_cumsum(lens), lens)
        has_pos = ~(np.isnan(a["lat"]) & np.isnan(a["lon"]))
        key_pos = np.zeros(n, bool)
        np.logical_or.at(key_pos, np.repeat(np.arange(n), lens), has_pos)
        q_starts = _excl_cumsum(CAPS[cls_] * key_pos)
        store.reserve(int(CAPS[cls_].sum()), int((CAPS[cls_] * key_pos).sum()))
        ts = a["ts"].astype(np.int64)
        if total:
            store.fit_ts(int(ts.min()), int(ts.max()))
        dst = np.repeat(starts, lens) + within
        store.pool["ts"][dst] = ts - store.ts_base
        store.pool["rssi"][dst], store.pool["flags"][dst] = a["rssi"], a["flags"]
        rd = np.repeat(key_pos, lens)
        q_dst = np.repeat(q_starts, lens)[rd] + within[rd]
        store.pos["lat"][q_dst], store.pos["lon"][q_dst] = a["lat"][rd], a["lon"][rd]
        store.k_start[:n], store.k_len[:n], store.k_cls[:n] = starts, lens, cls_
        store.k_pos[:n] = np.where(key_pos, q_starts, NO_POS)
        store.p_used, store.q_used = int(CAPS[cls_].sum()), int((CAPS[cls_] * key_pos).sum())
        meta = {k[5:]: int(v[0]) for k, v in a.items() if k.startswith("meta_")}
        return store, meta
