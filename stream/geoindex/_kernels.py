"""Exact per-point numba kernels behind stream.geoindex: lat/lng -> H3 cell, parents, hex.

``cell_of`` is the H3 4.5 formulation step by step (the fast block kernels in
``stream.geoindex._fast`` fall back to it near boundaries, on pentagons and for odd input);
``cells_serial`` runs it over an array and is the reference the fast path is tested
against. Invalid input yields 0 for that element only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stream.geoindex._consts import DEG_TO_RAD
from stream.geoindex._proj import (
    DIGITS_UNUSED,
    ROT60_CCW,
    ROT60_CW,
    geo_to_hex2d,
    hex2d_to_ijk,
    ijk_to_digits,
    leading_digit,
    rotate_pent_ccw,
)
from stream.geoindex._tables import PENT, SLOT_BASE_CELL, SLOT_CW, SLOT_ROT60

# ROTN[n, d]: digit d rotated n times 60 degrees ccw (one lookup instead of n passes).
ROTN = np.empty((6, 8), dtype=np.int64)
ROTN[0] = np.arange(8)
for _n in range(1, 6):
    ROTN[_n] = ROT60_CCW[ROTN[_n - 1]]

_CELL_MODE_BITS = np.uint64(1 << 59)
_MAX_LAT = 90.0


@njit(cache=True, nogil=True)
def _rotate_n(digits: np.uint64, res: int, n: int) -> np.uint64:
    out = digits
    for r in range(1, res + 1):
        shift = np.uint64(3 * (15 - r))
        d = int((out >> shift) & np.uint64(7))
        out = (out & ~(np.uint64(7) << shift)) | (np.uint64(ROTN[n, d]) << shift)
    return out


@njit(cache=True, nogil=True)
def cell_of(lat_deg: float, lng_deg: float, res: int) -> np.uint64:
    """H3 cell of one point in degrees; 0 for NaN/inf, |lat| > 90 or res outside 0..15."""
    if not (abs(lat_deg) <= _MAX_LAT) or not np.isfinite(lng_deg) or res < 0 or res > 15:
        return np.uint64(0)
    face, x, y = geo_to_hex2d(lat_deg * DEG_TO_RAD, lng_deg * DEG_TO_RAD, res)
    i, j, k = hex2d_to_ijk(x, y)
    return cell_from_ijk(face, i, j, k, res)


@njit(cache=True, nogil=True)
def cell_from_ijk(face: int, i: int, j: int, k: int, res: int) -> np.uint64:
    """H3 cell from face-centred IJK at ``res`` (0 if it does not map to a base cell)."""
    i, j, k, digits = ijk_to_digits(i, j, k, res)
    if i > 2 or j > 2 or k > 2:
        return np.uint64(0)
    slot = face * 27 + i * 9 + j * 3 + k
    bc = int(SLOT_BASE_CELL[slot])
    if bc < 0:
        return np.uint64(0)
    rot = int(SLOT_ROT60[slot])
    if PENT[bc]:
        # Pentagons have no K sub-sequence: rotate a leading K digit out of it first.
        if leading_digit(digits, res) == 1:
            table = ROT60_CW if SLOT_CW[slot] else ROT60_CCW
            digits = _rotate_n(digits, res, 0)  # keep types uniform for numba
            for r in range(1, res + 1):
                shift = np.uint64(3 * (15 - r))
                d = int((digits >> shift) & np.uint64(7))
                digits = (digits & ~(np.uint64(7) << shift)) | (np.uint64(table[d]) << shift)
        for _ in range(rot):
            digits = rotate_pent_ccw(digits, res)
    elif rot:
        digits = _rotate_n(digits, res, rot)
    return (
        _CELL_MODE_BITS
        | (np.uint64(res) << np.uint64(52))
        | (np.uint64(bc) << np.uint64(45))
        | (digits & DIGITS_UNUSED)
    )


@njit(cache=True, nogil=True)
def cells_serial(lat: np.ndarray, lng: np.ndarray, res: int, out: np.ndarray) -> None:
    """``cell_of`` per element (the exact reference: slower than the fast path, which
    sends it only the points it cannot vouch for)."""
    for p in range(lat.size):
        out[p] = cell_of(lat[p], lng[p], res)


@njit(cache=True, nogil=True)
def parent_of(cell: np.uint64, res: int) -> np.uint64:
    """Parent at ``res`` by bit operations; 0 if ``cell`` is 0 or finer than ``res``."""
    cres = int((cell >> np.uint64(52)) & np.uint64(15))
    if cell == 0 or res < 0 or res > cres:
        return np.uint64(0)
    # Digits res+1..15 become 7; digit r sits at bits 3*(15-r)..+2.
    unused = (np.uint64(1) << np.uint64(3 * (15 - res))) - np.uint64(1)
    return (cell & ~(np.uint64(15) << np.uint64(52))) | (np.uint64(res) << np.uint64(52)) | unused


@njit(cache=True, nogil=True)
def parents(cells: np.ndarray, res: int, out: np.ndarray) -> None:
    for p in range(cells.size):
        out[p] = parent_of(cells[p], res)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@njit(cache=True, nogil=True)
def to_hex(cells: np.ndarray, out: np.ndarray) -> None:
    """Lower-case hex without leading zeros into rows of ``out`` (uint8, width 16)."""
    for p in range(cells.size):
        c = cells[p]
        n = 1
        while n < 16 and (c >> np.uint64(4 * n)) != 0:
            n += 1
        for q in range(n):
            out[p, n - 1 - q] = _HEX[int((c >> np.uint64(4 * q)) & np.uint64(15))]


@njit(cache=True, nogil=True)
def from_hex(buf: np.ndarray, out: np.ndarray) -> None:
    """Parse rows of ASCII hex (NUL padded); 0 for empty, too long or non-hex rows."""
    for p in range(buf.shape[0]):
        v = np.uint64(0)
        ok = buf[p, 0] != 0
        for q in range(buf.shape[1]):
            ch = buf[p, q]
            if ch == 0:
                break
            if q >= 16:
                ok = False
                break
            if 48 <= ch <= 57:
                d = ch - 48
            elif 97 <= ch <= 102:
                d = ch - 87
            elif 65 <= ch <= 70:
                d = ch - 55
            else:
                ok = False
                break
            v = (v << np.uint64(4)) | np.uint64(d)
        out[p] = v if ok else np.uint64(0)
