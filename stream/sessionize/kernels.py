"""The numba kernels of the sessionizer state (stream.sessionize.state): hash index, segment
allocation, eviction, compaction moves, ts rebasing, and the merge-and-diff kernel over a sorted
batch.

They work on the flat arrays that `stream.sessionize.state.ReadStore` owns (layout in its
docstring) and release the GIL, so the worker runs them off its event loop.
"""

from __future__ import annotations

import numba
import numpy as np

from core.records.reads import FLAG_MOBILE


def _size_classes() -> np.ndarray:
    caps = [1]
    while caps[-1] < 2**32:
        caps.append(max(caps[-1] + 1, caps[-1] * 5 // 4))
    return np.array(caps, np.int64)


CAPS = _size_classes()  # segment capacity of each size class (< 255 classes)
NO_SEG = 255  # k_cls of a key without a segment (no reads)
_NIL = 0xFFFFFFFF  # end of a free list; also "no position segment" and "empty hash slot"
NO_POS = _NIL
_EMPTY = _NIL
_NO_TS = np.iinfo(np.int64).min


@numba.njit(nogil=True, cache=True)
def _hash(tag: np.uint64, reader: np.uint32) -> np.uint64:
    # splitmix-style mixing: tag ids are often sequential, so spread them over the table.
    h = tag * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(reader) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return h


@numba.njit(nogil=True, cache=True)
def _find_or_insert(h_slot, keys, n_keys, tags, readers, out_slots):  # type: ignore[no-untyped-def]
    k_tag, k_reader, k_start, k_len, k_cls, k_pos = keys
    mask = np.uint64(len(h_slot) - 1)
    for i in range(len(tags)):
        t, r = tags[i], readers[i]
        j = np.int64(_hash(t, r) & mask)
        while True:
            s = np.int64(h_slot[j])
            if s == _EMPTY:
                h_slot[j] = n_keys
                k_tag[n_keys], k_reader[n_keys], k_start[n_keys] = t, r, 0
                k_len[n_keys], k_cls[n_keys], k_pos[n_keys] = 0, NO_SEG, NO_POS
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
        while np.int64(h_slot[j]) != _EMPTY:
            j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
        h_slot[j] = k


@numba.njit(nogil=True, cache=True)
def _alloc(c, free_head, link, used):  # type: ignore[no-untyped-def]
    """Start of a segment of class c: the head of c's free list, else fresh at `used`."""
    h = free_head[c]
    if h != _NIL:
        free_head[c] = np.int64(link[h])
        return h, used
    return used, used + CAPS[c]


@numba.njit(nogil=True, cache=True)
def _free(s, c, free_head, link):  # type: ignore[no-untyped-def]
    link[s] = free_head[c]  # the free segment's first entry holds the next free segment
    free_head[c] = s


@numba.njit(nogil=True, cache=True)
def _evict(keys, n_keys, pool, pos, free, cutoff, gap_ms):  # type: ignore[no-untyped-def]
    """Drop every whole session whose last read is before `cutoff` (a ts offset); reads dropped."""
    _, _, k_start, k_len, k_cls, k_pos = keys
    p_ts, p_rssi, p_flags = pool
    q_lat, q_lon = pos
    dropped = 0
    for k in range(n_keys):
        n = np.int64(k_len[k])
        s = np.int64(k_start[k])
        if n == 0 or np.int64(p_ts[s]) >= cutoff:
            continue  # the common case: nothing of this key is old enough
        qs = np.int64(k_pos[k])
        if np.int64(p_ts[s + n - 1]) < cutoff:
            dropped += n
            c = np.int64(k_cls[k])
            _free(s, c, free[0], p_ts)
            if qs != NO_POS:
                _free(qs, c, free[1], q_lat)
            k_len[k], k_cls[k], k_pos[k] = 0, NO_SEG, NO_POS
            continue
        # Sessions are whole: find where the first session ending at/after cutoff begins.
        keep = 0
        for i in range(1, n):
            if np.int64(p_ts[s + i]) - np.int64(p_ts[s + i - 1]) > gap_ms:
                if np.int64(p_ts[s + i - 1]) < cutoff:
                    keep = i
                else:
                    break
        if keep > 0:
            for i in range(keep, n):
                d, o = s + i - keep, s + i
                p_ts[d], p_rssi[d], p_flags[d] = p_ts[o], p_rssi[o], p_flags[o]
                if qs != NO_POS:
                    q_lat[qs + i - keep], q_lon[qs + i - keep] = q_lat[qs + i], q_lon[qs + i]
            k_len[k] = n - keep
            dropped += keep
    return dropped


@numba.njit(nogil=True, cache=True)
def _slide(order, starts, lens, dst, arr):  # type: ignore[no-untyped-def]
    """Move the segments of keys `order` (ascending starts) down to `dst` (<= starts): in place."""
    for i in range(len(order)):
        k = order[i]
        s, d = np.int64(starts[k]), dst[i]
        for j in range(np.int64(lens[k])):
            arr[d + j] = arr[s + j]


@numba.njit(nogil=True, cache=True)
def _shift_live(k_start, k_len, n_keys, p_ts, delta):  # type: ignore[no-untyped-def]
    """Add delta to every live ts entry (rebase); free-list links and slack stay as they are."""
    for k in range(n_keys):
        s = np.int64(k_start[k])
        for i in range(np.int64(k_len[k])):
            p_ts[s + i] = np.int64(p_ts[s + i]) + delta


@numba.njit(nogil=True, cache=True)
def _live_span(k_start, k_len, n_keys, p_ts):  # type: ignore[no-untyped-def]
    lo, hi, any_ = np.int64(0), np.int64(0), False
    for k in range(n_keys):
        n = np.int64(k_len[k])
        if n > 0:
            s = np.int64(k_start[k])
            a, b = np.int64(p_ts[s]), np.int64(p_ts[s + n - 1])
            lo, hi = (a, b) if not any_ else (min(lo, a), max(hi, b))
            any_ = True
    return lo, hi, any_


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
        if np.int64(ts[i]) - np.int64(ts[i - 1]) > gap_ms:
            s_lo[n], s_hi[n], s_rep[n] = start, i - 1, rep
            n += 1
            start, rep = i, i
        elif rssi[i] > rssi[rep]:
            rep = i
    s_lo[n], s_hi[n], s_rep[n] = start, hi - 1, rep
    return n + 1


@numba.njit(nogil=True, cache=True)
def _emit(o, n_out, tag, reader, first, last, n, mx, flags, lat, lon, deleted):  # type: ignore[no-untyped-def]
    o_tag, o_reader, o_first, o_last, o_n, o_max, o_lat, o_lon, o_flags, o_del = o
    o_tag[n_out], o_reader[n_out], o_first[n_out], o_last[n_out] = tag, reader, first, last
    o_n[n_out], o_max[n_out], o_flags[n_out] = n, mx, flags
    o_lat[n_out], o_lon[n_out], o_del[n_out] = lat, lon, deleted
    return n_out + 1


@numba.njit(nogil=True, cache=True)
def apply_kernel(b, g_start, slots, keys, pool, pos, used, free, base, gap_ms, m, sb, sa, o):  # type: ignore[no-untyped-def]
    """Merge each batch group into its key's reads, diff the key's sessions, write the reads back.

    b: batch (ts, rssi, flags, lat, lon) sorted by (key slot, ts); group g is rows
    [g_start[g], g_start[g+1]) of key slot slots[g]. keys/pool/pos/free: the ReadStore arrays
    (room for every possible allocation reserved by the caller); used: (p_used, q_used); base:
    ts_base (every batch ts - base fits the ts pool). m/sb/sa: scratch for the merged reads and
    the sessions before/after. o: output columns. Returns (rows emitted, p_used, q_used).
    """
    b_ts, b_rssi, b_flags, b_lat, b_lon = b
    k_tag, k_reader, k_start, k_len, k_cls, k_pos = keys
    p_ts, p_rssi, p_flags = pool
    q_lat, q_lon = pos
    p_used, q_used = used
    m_ts, m_rssi, m_flags, m_lat, m_lon = m
    mobile = np.uint8(FLAG_MOBILE)
    n_out = 0
    for g in range(len(slots)):
        k = slots[g]
        s, n_old, qs = np.int64(k_start[k]), np.int64(k_len[k]), np.int64(k_pos[k])
        has_q = qs != NO_POS
        i, j, j1, n_m, changed, any_pos = 0, g_start[g], g_start[g + 1], 0, False, has_q
        # 1. Merge old (distinct) and new reads by ts; equal ts fold into one winner.
        while i < n_old or j < j1:
            if j >= j1 or (i < n_old and np.int64(p_ts[s + i]) + base <= b_ts[j]):
                t, r, f = np.int64(p_ts[s + i]) + base, p_rssi[s + i], p_flags[s + i]
                la, lo = (q_lat[qs + i], q_lon[qs + i]) if has_q else (np.nan, np.nan)
                new = False
                i += 1
            else:
                t, r, f, la, lo, new = b_ts[j], b_rssi[j], b_flags[j], b_lat[j], b_lon[j], True
                any_pos = any_pos or not (np.isnan(la) and np.isnan(lo))
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
            fb = np.int64(p_ts[sb[0][y]]) + base if y < nb else _NO_TS
            if y < nb and (x >= na or fb < fa):  # identity gone: retract
                lo_, hi_, rb = sb[0][y], sb[1][y], sb[2][y]
                la, lo = (q_lat[qs + rb - s], q_lon[qs + rb - s]) if has_q else (np.nan, np.nan)
                last = np.int64(p_ts[hi_]) + base
                n_out = _emit(
                    o, n_out, k_tag[k], k_reader[k], fb, last, hi_ - lo_ + 1, p_rssi[rb],
                    p_flags[rb], la, lo, 1,
                )  # fmt: skip
                y += 1
                continue
            if y < nb and fb == fa:
                ra, rb = sa[2][x], sb[2][y]
                la, lo = (q_lat[qs + rb - s], q_lon[qs + rb - s]) if has_q else (np.nan, np.nan)
                same = (
                    m_ts[sa[1][x]] == np.int64(p_ts[sb[1][y]]) + base
                    and sa[1][x] - sa[0][x] == sb[1][y] - sb[0][y]
                    and m_rssi[ra] == p_rssi[rb]
                    and (m_flags[ra] & mobile) == (p_flags[rb] & mobile)
                    and ((m_flags[ra] & mobile) == 0 or (_eq(m_lat[ra], la) and _eq(m_lon[ra], lo)))
                )
                y += 1
                if same:
                    x += 1
                    continue
            lo_, hi_, ra = sa[0][x], sa[1][x], sa[2][x]
            n_out = _emit(
                o, n_out, k_tag[k], k_reader[k], m_ts[lo_], m_ts[hi_], hi_ - lo_ + 1, m_rssi[ra],
                m_flags[ra], m_lat[ra], m_lon[ra], 0,
            )  # fmt: skip
            x += 1
        # 3. Write the merged reads back: a key that outgrew its segment (or shrank to under
        # half of it after eviction) moves to the smallest class that fits, its side segment too.
        c_old, c_new = np.int64(k_cls[k]), np.searchsorted(CAPS, n_m)
        if c_old == NO_SEG or n_m > CAPS[c_old] or c_new + 3 <= c_old:
            if c_old != NO_SEG:
                _free(s, c_old, free[0], p_ts)
            if has_q:
                _free(qs, c_old, free[1], q_lat)
                has_q = False
            s, p_used = _alloc(c_new, free[0], p_ts, p_used)
            k_start[k], k_cls[k] = s, c_new
        if any_pos:
            if not has_q:
                qs, q_used = _alloc(np.int64(k_cls[k]), free[1], q_lat, q_used)
                k_pos[k] = qs
            for q in range(n_m):
                q_lat[qs + q], q_lon[qs + q] = m_lat[q], m_lon[q]
        for q in range(n_m):
            p_ts[s + q], p_rssi[s + q], p_flags[s + q] = m_ts[q] - base, m_rssi[q], m_flags[q]
        k_len[k] = n_m
    return n_out, p_used, q_used


@numba.njit(nogil=True, cache=True)
def session_identities(slots, k_tag, k_reader, k_start, k_len, p_ts, base, gap_ms):  # type: ignore[no-untyped-def]
    """(tag, reader, first_ts) of every session in the state of the given key slots."""
    n = 0
    for k in slots:
        n += np.int64(k_len[k])
    tag, reader, first = np.empty(n, np.uint64), np.empty(n, np.uint32), np.empty(n, np.int64)
    m = 0
    for k in slots:
        s = np.int64(k_start[k])
        for i in range(np.int64(k_len[k])):
            if i == 0 or np.int64(p_ts[s + i]) - np.int64(p_ts[s + i - 1]) > gap_ms:
                tag[m], reader[m], first[m] = k_tag[k], k_reader[k], np.int64(p_ts[s + i]) + base
                m += 1
    return tag[:m], reader[:m], first[:m]
