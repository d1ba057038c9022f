"""Sessionizer state of one partition: the distinct reads of every open (tag, reader) key kept in
flat numpy arrays (key table + open-addressing hash index + segment pool), the numba kernel that
merges a batch into it and diffs the touched keys' sessions, eviction, compaction, snapshot bytes.

Layout. Key k owns the pool segment [k_start[k], k_start[k] + k_cap[k]) of which the first
k_len[k] entries hold its distinct reads sorted by ts (one winner per identity). A key that outgrows
its segment moves to a fresh one at the end of the pool (capacity doubled); the old one becomes
garbage that `compact()` reclaims. Keys are never deleted from the hash index one by one: an evicted
key keeps its slot with k_len == 0 until the next compaction rebuilds the table.
"""

from __future__ import annotations

import io

import numba
import numpy as np

from ingest.reads import FLAG_MOBILE

_EMPTY = -1
_NO_TS = np.iinfo(np.int64).min
_POOL_FIELDS: dict[str, np.dtype] = {
    "ts": np.dtype(np.int64),
    "rssi": np.dtype(np.int8),
    "flags": np.dtype(np.uint8),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
}


@numba.njit(nogil=True, cache=True)
def _hash(tag: np.uint64, reader: np.uint32) -> np.uint64:
    # splitmix-style mixing: tag ids are often sequential, so spread them over the table.
    h = tag * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(reader) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return h


@numba.njit(nogil=True, cache=True)
def _find_or_insert(h_slot, k_tag, k_reader, n_keys, tags, readers, out_slots):  # type: ignore[no-untyped-def]
    mask = np.uint64(len(h_slot) - 1)
    for i in range(len(tags)):
        t, r = tags[i], readers[i]
        j = np.int64(_hash(t, r) & mask)
        while True:
            s = h_slot[j]
            if s == _EMPTY:
                h_slot[j] = n_keys
                k_tag[n_keys], k_reader[n_keys] = t, r
                out_slots[i] = n_keys
                n_keys += 1
                break
            if k_tag[s] == t and k_reader[s] == r:
                out_slots[i] = s
                break
            j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
    return n_keys


@numba.njit(nogil=True, cache=True)
def _rehash(h_slot, k_tag, k_reader, n_keys):  # type: ignore[no-untyped-def]
    mask = np.uint64(len(h_slot) - 1)
    for k in range(n_keys):
        j = np.int64(_hash(k_tag[k], k_reader[k]) & mask)
        while h_slot[j] != _EMPTY:
            j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
        h_slot[j] = k


@numba.njit(nogil=True, cache=True)
def _evict(k_start, k_len, n_keys, p_ts, p_rssi, p_flags, p_lat, p_lon, cutoff, gap_ms):  # type: ignore[no-untyped-def]
    """Drop every whole session whose last read is before `cutoff`; returns reads dropped."""
    dropped = 0
    for k in range(n_keys):
        n = k_len[k]
        s = k_start[k]
        if n == 0 or p_ts[s] >= cutoff:
            continue  # the common case: nothing of this key is old enough
        if p_ts[s + n - 1] < cutoff:
            dropped += n
            k_len[k] = 0
            continue
        # Sessions are whole: find where the first session ending at/after cutoff begins.
        keep = 0
        for i in range(1, n):
            if p_ts[s + i] - p_ts[s + i - 1] > gap_ms:
                if p_ts[s + i - 1] < cutoff:
                    keep = i
                else:
                    break
        if keep > 0:
            for i in range(keep, n):
                d, o = s + i - keep, s + i
                p_ts[d], p_rssi[d], p_flags[d] = p_ts[o], p_rssi[o], p_flags[o]
                p_lat[d], p_lon[d] = p_lat[o], p_lon[o]
            k_len[k] = n - keep
            dropped += keep
    return dropped


@numba.njit(nogil=True, cache=True)
def _gather(k_start, k_len, keys, src_ts, src_rssi, src_flags, src_lat, src_lon, dst_start, dst):  # type: ignore[no-untyped-def]
    """Copy the segments of `keys` to `dst` arrays at offsets `dst_start` (compaction, snapshot)."""
    d_ts, d_rssi, d_flags, d_lat, d_lon = dst
    for i in range(len(keys)):
        k = keys[i]
        s, d = k_start[k], dst_start[i]
        for j in range(k_len[k]):
            d_ts[d + j], d_rssi[d + j], d_flags[d + j] = (
                src_ts[s + j],
                src_rssi[s + j],
                src_flags[s + j],
            )
            d_lat[d + j], d_lon[d + j] = src_lat[s + j], src_lon[s + j]


@numba.njit(nogil=True, cache=True)
def _better(r_a, la_a, lo_a, f_a, r_b, la_b, lo_b, f_b):  # type: ignore[no-untyped-def]
    """True if read a beats read b of one identity: rssi desc, lat, lon (NaN last), flags asc."""
    if r_a != r_b:
        return r_a > r_b
    la_a, la_b = np.inf if np.isnan(la_a) else la_a, np.inf if np.isnan(la_b) else la_b
    if la_a != la_b:
        return la_a < la_b
    lo_a, lo_b = np.inf if np.isnan(lo_a) else lo_a, np.inf if np.isnan(lo_b) else lo_b
    if lo_a != lo_b:
        return lo_a < lo_b
    return f_a < f_b


@numba.njit(nogil=True, cache=True)
def _eq(a, b):  # type: ignore[no-untyped-def]
    return a == b or (np.isnan(a) and np.isnan(b))


@numba.njit(nogil=True, cache=True)
def _sessions(ts, rssi, lo, hi, gap_ms, s_lo, s_hi, s_rep):  # type: ignore[no-untyped-def]
    """Split reads [lo, hi) (sorted, distinct ts) into sessions; rep = first read of max rssi."""
    if hi <= lo:
        return 0
    n, start, rep = 0, lo, lo
    for i in range(lo + 1, hi):
        if ts[i] - ts[i - 1] > gap_ms:
            s_lo[n], s_hi[n], s_rep[n] = start, i - 1, rep
            n += 1
            start, rep = i, i
        elif rssi[i] > rssi[rep]:
            rep = i
    s_lo[n], s_hi[n], s_rep[n] = start, hi - 1, rep
    return n + 1


@numba.njit(nogil=True, cache=True)
def _emit(o, n_out, tag, reader, ts, rssi, flags, lat, lon, lo, hi, rep, deleted):  # type: ignore[no-untyped-def]
    o_tag, o_reader, o_first, o_last, o_n, o_max, o_lat, o_lon, o_flags, o_del = o
    o_tag[n_out], o_reader[n_out], o_first[n_out], o_last[n_out] = tag, reader, ts[lo], ts[hi]
    o_n[n_out], o_max[n_out], o_flags[n_out] = hi - lo + 1, rssi[rep], flags[rep]
    o_lat[n_out], o_lon[n_out], o_del[n_out] = lat[rep], lon[rep], deleted
    return n_out + 1


@numba.njit(nogil=True, cache=True)
def apply_kernel(b, g_start, slots, keys, pool, p_used, gap_ms, m, sb, sa, o):  # type: ignore[no-untyped-def]
    """Merge each batch group into its key's reads, diff the key's sessions, write the reads back.

    b: batch (ts, rssi, flags, lat, lon) sorted by (tag, reader, ts); group g is rows
    [g_start[g], g_start[g+1]) of key slot slots[g]. keys/pool: the ReadStore arrays (room for
    every possible relocation reserved by the caller). m/sb/sa: scratch for the merged reads and
    the sessions before/after. o: output columns. Returns (rows emitted, new p_used).
    """
    b_ts, b_rssi, b_flags, b_lat, b_lon = b
    k_tag, k_reader, k_start, k_len, k_cap = keys
    p_ts, p_rssi, p_flags, p_lat, p_lon = pool
    m_ts, m_rssi, m_flags, m_lat, m_lon = m
    mobile = np.uint8(FLAG_MOBILE)
    n_out = 0
    for g in range(len(slots)):
        k = slots[g]
        s, n_old = k_start[k], k_len[k]
        i, j, j1, n_m, changed = 0, g_start[g], g_start[g + 1], 0, False
        # 1. Merge old (distinct) and new reads by ts; equal ts fold into one winner.
        while i < n_old or j < j1:
            if j >= j1 or (i < n_old and p_ts[s + i] <= b_ts[j]):
                t, r, f, la, lo, new = (
                    p_ts[s + i],
                    p_rssi[s + i],
                    p_flags[s + i],
                    p_lat[s + i],
                    p_lon[s + i],
                    False,
                )
                i += 1
            else:
                t, r, f, la, lo, new = b_ts[j], b_rssi[j], b_flags[j], b_lat[j], b_lon[j], True
                j += 1
            if n_m > 0 and m_ts[n_m - 1] == t:
                q = n_m - 1
                if _better(r, la, lo, f, m_rssi[q], m_lat[q], m_lon[q], m_flags[q]):
                    m_rssi[q], m_flags[q], m_lat[q], m_lon[q] = r, f, la, lo
                    changed = True
            else:
                m_ts[n_m], m_rssi[n_m], m_flags[n_m], m_lat[n_m], m_lon[n_m] = t, r, f, la, lo
                n_m += 1
                changed = changed or new
        if not changed:
            continue  # every read was already known (redelivery): nothing to emit or store
        # 2. Diff the sessions before and after by first_ts.
        nb = _sessions(p_ts, p_rssi, s, s + n_old, gap_ms, sb[0], sb[1], sb[2])
        na = _sessions(m_ts, m_rssi, 0, n_m, gap_ms, sa[0], sa[1], sa[2])
        x = y = 0
        while x < na or y < nb:
            fa = m_ts[sa[0][x]] if x < na else _NO_TS
            fb = p_ts[sb[0][y]] if y < nb else _NO_TS
            if y < nb and (x >= na or fb < fa):  # identity gone: retract
                n_out = _emit(
                    o,
                    n_out,
                    k_tag[k],
                    k_reader[k],
                    p_ts,
                    p_rssi,
                    p_flags,
                    p_lat,
                    p_lon,
                    sb[0][y],
                    sb[1][y],
                    sb[2][y],
                    1,
                )
                y += 1
                continue
            if y < nb and fb == fa:
                ra, rb = sa[2][x], sb[2][y]
                same = (
                    m_ts[sa[1][x]] == p_ts[sb[1][y]]
                    and sa[1][x] - sa[0][x] == sb[1][y] - sb[0][y]
                    and m_rssi[ra] == p_rssi[rb]
                    and (m_flags[ra] & mobile) == (p_flags[rb] & mobile)
                    and (
                        (m_flags[ra] & mobile) == 0
                        or (_eq(m_lat[ra], p_lat[rb]) and _eq(m_lon[ra], p_lon[rb]))
                    )
                )
                y += 1
                if same:
                    x += 1
                    continue
            n_out = _emit(
                o,
                n_out,
                k_tag[k],
                k_reader[k],
                m_ts,
                m_rssi,
                m_flags,
                m_lat,
                m_lon,
                sa[0][x],
                sa[1][x],
                sa[2][x],
                0,
            )
            x += 1
        # 3. Write the merged reads back; a key that outgrew its segment moves to a bigger one.
        if n_m > k_cap[k]:
            s = p_used
            k_start[k], k_cap[k] = s, max(2 * n_m, 4)
            p_used += k_cap[k]
        for q in range(n_m):
            p_ts[s + q], p_rssi[s + q], p_flags[s + q] = m_ts[q], m_rssi[q], m_flags[q]
            p_lat[s + q], p_lon[s + q] = m_lat[q], m_lon[q]
        k_len[k] = n_m
    return n_out, p_used


@numba.njit(nogil=True, cache=True)
def session_identities(slots, k_tag, k_reader, k_start, k_len, p_ts, gap_ms):  # type: ignore[no-untyped-def]
    """(tag, reader, first_ts) of every session in the state of the given key slots."""
    n = 0
    for k in slots:
        n += k_len[k]
    tag, reader, first = np.empty(n, np.uint64), np.empty(n, np.uint32), np.empty(n, np.int64)
    m = 0
    for k in slots:
        s = k_start[k]
        for i in range(k_len[k]):
            if i == 0 or p_ts[s + i] - p_ts[s + i - 1] > gap_ms:
                tag[m], reader[m], first[m] = k_tag[k], k_reader[k], p_ts[s + i]
                m += 1
    return tag[:m], reader[:m], first[:m]


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


class ReadStore:
    """The distinct reads per (tag, reader) key of one partition, in flat arrays."""

    def __init__(self, key_capacity: int = 1024, pool_capacity: int = 8192) -> None:
        self._reset(key_capacity, pool_capacity)

    def _reset(self, key_capacity: int, pool_capacity: int) -> None:
        self.n_keys = 0
        self.k_tag = np.zeros(key_capacity, np.uint64)
        self.k_reader = np.zeros(key_capacity, np.uint32)
        self.k_start = np.zeros(key_capacity, np.int64)
        self.k_len = np.zeros(key_capacity, np.int64)
        self.k_cap = np.zeros(key_capacity, np.int64)
        self.h_slot = np.full(_pow2_at_least(2 * key_capacity), _EMPTY, np.int64)
        self.p_used = 0
        self.pool = {k: np.zeros(pool_capacity, dt) for k, dt in _POOL_FIELDS.items()}

    # -- keys ---------------------------------------------------------------------------------
    def slots_for(self, tags: np.ndarray, readers: np.ndarray) -> np.ndarray:
        """Slot index of each (tag, reader), inserting unknown keys (with no reads) first."""
        need = self.n_keys + len(tags)
        if need > len(self.k_tag):
            self._grow_keys(max(need, 2 * len(self.k_tag)))
        if 2 * need > len(self.h_slot):  # keep the load factor <= 1/2
            self.h_slot = np.full(_pow2_at_least(4 * need), _EMPTY, np.int64)
            _rehash(self.h_slot, self.k_tag, self.k_reader, self.n_keys)
        out = np.empty(len(tags), np.int64)
        self.n_keys = _find_or_insert(
            self.h_slot, self.k_tag, self.k_reader, self.n_keys, tags, readers, out
        )
        return out

    def _grow_keys(self, cap: int) -> None:
        for name in ("k_tag", "k_reader", "k_start", "k_len", "k_cap"):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    # -- pool ---------------------------------------------------------------------------------
    def reserve(self, extra: int) -> None:
        """Make room for `extra` more pool entries past p_used."""
        need = self.p_used + extra
        cap = len(self.pool["ts"])
        if need > cap:
            new_cap = max(need, 2 * cap)
            for k, old in self.pool.items():
                new = np.empty(new_cap, old.dtype)  # past p_used is never read
                new[: self.p_used] = old[: self.p_used]
                self.pool[k] = new

    def pool_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(self.pool[k] for k in _POOL_FIELDS)

    @property
    def n_reads(self) -> int:
        return int(self.k_len[: self.n_keys].sum())

    # -- eviction and compaction -------------------------------------------------------------
    def evict(self, cutoff_ts: int, gap_ms: int) -> int:
        """Drop whole sessions whose last read is before cutoff_ts; compact when mostly garbage."""
        dropped = int(
            _evict(self.k_start, self.k_len, self.n_keys, *self.pool_arrays(), cutoff_ts, gap_ms)
        )
        live_keys = int(np.count_nonzero(self.k_len[: self.n_keys]))
        if self.n_keys > 2 * live_keys + 1024 or self.p_used > 2 * self.n_reads + 65536:
            self.compact()
        return dropped

    def compact(self) -> None:
        """Rebuild with live keys only and tight segments (slack of len/2 for the next reads)."""
        tags, readers, lens, cols = self.export()
        caps = lens + lens // 2 + 4
        self._load(tags, readers, lens, cols, caps)

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Live keys (tag, reader, len) and their reads concatenated in key order."""
        keys = np.flatnonzero(self.k_len[: self.n_keys] > 0)
        lens = self.k_len[keys]
        starts = np.zeros(len(keys), np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        total = int(lens.sum())
        cols = {k: np.empty(total, dt) for k, dt in _POOL_FIELDS.items()}
        _gather(self.k_start, self.k_len, keys, *self.pool_arrays(), starts, tuple(cols.values()))
        return self.k_tag[keys].copy(), self.k_reader[keys].copy(), lens.copy(), cols

    def _load(
        self,
        tags: np.ndarray,
        readers: np.ndarray,
        lens: np.ndarray,
        cols: dict[str, np.ndarray],
        caps: np.ndarray,
    ) -> None:
        n = len(tags)
        self._reset(max(1024, 2 * n), max(8192, int(caps.sum())))
        self.n_keys = n
        self.k_tag[:n], self.k_reader[:n], self.k_len[:n], self.k_cap[:n] = (
            tags,
            readers,
            lens,
            caps,
        )
        starts = np.zeros(n, np.int64)
        np.cumsum(caps[:-1], out=starts[1:])
        self.k_start[:n] = starts
        self.p_used = int(caps.sum())
        src_start = np.zeros(n, np.int64)
        np.cumsum(lens[:-1], out=src_start[1:])
        # Scatter the concatenated reads into the segments (same kernel, roles swapped).
        _gather(src_start, lens, np.arange(n), *cols.values(), starts, self.pool_arrays())
        _rehash(self.h_slot, self.k_tag, self.k_reader, n)

    # -- persistence ---------------------------------------------------------------------------
    def to_bytes(self, meta: dict[str, int]) -> bytes:
        """The live state plus integer `meta` as an .npz (no pickle)."""
        tags, readers, lens, cols = self.export()
        buf = io.BytesIO()
        meta_arr = {f"meta_{k}": np.array([v], np.int64) for k, v in meta.items()}
        np.savez(buf, tag=tags, reader=readers, len=lens, **cols, **meta_arr)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[ReadStore, dict[str, int]]:
        """Inverse of to_bytes; raises ValueError on a blob that is not a state snapshot."""
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"not a sessionizer snapshot: {e}") from e
        missing = {"tag", "reader", "len", *_POOL_FIELDS} - set(arrays)
        if missing:
            raise ValueError(f"sessionizer snapshot lacks {sorted(missing)}")
        store = cls()
        lens = arrays["len"].astype(np.int64)
        cols = {k: arrays[k].astype(dt) for k, dt in _POOL_FIELDS.items()}
        store._load(arrays["tag"], arrays["reader"], lens, cols, lens + lens // 2 + 4)
        meta = {k[5:]: int(v[0]) for k, v in arrays.items() if k.startswith("meta_")}
        return store, meta
