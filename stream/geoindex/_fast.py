"""Fast latlng->cell kernels: branch-free block passes the compiler vectorises, plus a guard.

A block of points goes through three loops that LLVM turns into SIMD code:

1. ``project`` (in stream.geoindex._fastproj): unit vector (sin/cos by polynomial, degrees
   reduced exactly), nearest face in the canonical dodecahedron frame, hex2d by two dot
   products and a division, nearest hexagon by cube rounding. It also measures how far
   the point lies from a face boundary and from its hexagon's edges.
2. ``_digits``: the aperture-7 digits, one resolution level at a time across the block.
3. ``_assemble``: base cell and its rotation by table lookups.

This arithmetic is not H3's (no acos/atan2/tan), so it may differ from H3 in the last
bits. It is only trusted when the margins exceed a bound on that difference (dominated
by H3's own ``acos(1 - d^2/2)`` near face centres); otherwise, and for pentagon base
cells, invalid input or |lng| > 1000, the point is recomputed by the exact H3 4.5
formulation (``_kernels.cell_of``). So results equal h3-py's bit for bit; the guard
sends only points very close to a boundary to the exact path. Several resolutions of
the same points share step 1's unit vector and face.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from stream.geoindex._fastconsts import AXIAL_SLOT, ROT9, TURNS
from stream.geoindex._fastproj import project, project_vectors, unit_faces
from stream.geoindex._kernels import cell_of
from stream.geoindex._tables import SLOT_BASE_CELL

BLOCK = 512
_SLOT_BC = SLOT_BASE_CELL.astype(np.int64)


@njit(cache=True, nogil=True)
def _digits(n: int, res: int, a: np.ndarray, b: np.ndarray, dig: np.ndarray) -> None:
    """Aperture-7 digits (face orientation) from finest axial (a, b); a, b end at res 0."""
    unused = (np.uint64(1) << np.uint64(3 * (15 - res))) - np.uint64(1)
    for q in range(n):
        dig[q] = unused
    for r in range(res, 0, -1):
        shift = np.uint64(3 * (15 - r))
        odd = r & 1
        for q in range(n):
            x = a[q]
            y = b[q]
            # Parent centre: round(M (x, y) / 7); n/7 is never a tie, so floor(+1/2) is exact.
            if odd:
                pa = math.floor((3.0 * x - y) * (1.0 / 7.0) + 0.5)
                pb = math.floor((x + 2.0 * y) * (1.0 / 7.0) + 0.5)
                da = x - (2.0 * pa + pb)
                db = y - (3.0 * pb - pa)
            else:
                pa = math.floor((2.0 * x + y) * (1.0 / 7.0) + 0.5)
                pb = math.floor((3.0 * y - x) * (1.0 / 7.0) + 0.5)
                da = x - (3.0 * pa - pb)
                db = y - (pa + 2.0 * pb)
            # Unit IJK offset -> digit 4i + 2j + k: axial (da, db), plus 7 if either < 0.
            d = 4.0 * da + 2.0 * db + (7.0 if min(da, db) < 0.0 else 0.0)
            dig[q] |= np.uint64(np.int64(d)) << shift
            a[q] = pa
            b[q] = pb


@njit(cache=True, nogil=True, error_model="numpy")
def _assemble(
    start: int, n: int, res: int,
    face: np.ndarray, a: np.ndarray, b: np.ndarray, dig: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """Cells from face, resolution-0 axial and digits; 0 where the exact path must decide."""
    head = np.uint64(1 << 59) | (np.uint64(res) << np.uint64(52))
    for q in range(n):
        f = face[q]
        ia = np.int64(a[q]) + 2
        ib = np.int64(b[q]) + 2
        inside = (f >= 0) & (ia >= 0) & (ia <= 4) & (ib >= 0) & (ib <= 4)
        slot = AXIAL_SLOT[ia * 5 + ib if inside else 0]
        good = inside & (slot >= 0)
        s = f * 27 + slot if good else 0
        bc = _SLOT_BC[s]
        good = good & (bc >= 0)
        d = dig[q]
        # First non-zero digit (only pentagons' turns depend on it); unrolled selects.
        lead = np.uint64(0)
        for r in range(15, 0, -1):
            dr = (d >> np.uint64(3 * (15 - r))) & np.uint64(7)
            lead = dr if (dr != 0) & (r <= res) else lead
        turns = TURNS[s * 8 + np.int64(lead)]
        rd = np.uint64(0)
        for g in range(5):
            sh = np.uint64(9 * g)
            rd |= ROT9[turns * 512 + np.int64((d >> sh) & np.uint64(511))] << sh
        cell = head | (np.uint64(max(bc, 0)) << np.uint64(45)) | rd
        out[start + q] = cell if good else np.uint64(0)


@njit(cache=True, nogil=True)
def _exact_where_zero(
    lat: np.ndarray, lng: np.ndarray, start: int, n: int, res: int, out: np.ndarray
) -> None:
    # A valid cell is never 0 (its mode bits are set), so 0 marks the points left over.
    for q in range(start, start + n):
        if out[q] == 0:
            out[q] = cell_of(lat[q], lng[q], res)


@njit(cache=True, nogil=True)
def _run_block(
    lat: np.ndarray, lng: np.ndarray, start: int, n: int, res: int,
    face: np.ndarray, a: np.ndarray, b: np.ndarray, dig: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    project(lat, lng, start, n, res, face, a, b)
    _digits(n, res, a, b, dig)
    _assemble(start, n, res, face, a, b, dig, out)
    _exact_where_zero(lat, lng, start, n, res, out)


@njit(cache=True, nogil=True)
def fast_cells_serial(lat: np.ndarray, lng: np.ndarray, res: int, out: np.ndarray) -> None:
    """H3 cells at ``res`` of points in degrees into ``out``; see the module docstring."""
    face = np.empty(BLOCK, np.int64)
    a = np.empty(BLOCK, np.float64)
    b = np.empty(BLOCK, np.float64)
    dig = np.empty(BLOCK, np.uint64)
    for start in range(0, lat.size, BLOCK):
        n = min(BLOCK, lat.size - start)
        _run_block(lat, lng, start, n, res, face, a, b, dig, out)


@njit(cache=True, nogil=True, parallel=True)
def fast_cells_parallel(lat: np.ndarray, lng: np.ndarray, res: int, out: np.ndarray) -> None:
    """As ``fast_cells_serial``, blocks spread over numba's threads."""
    nblocks = (lat.size + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        face = np.empty(BLOCK, np.int64)
        a = np.empty(BLOCK, np.float64)
        b = np.empty(BLOCK, np.float64)
        dig = np.empty(BLOCK, np.uint64)
        start = blk * BLOCK
        n = min(BLOCK, lat.size - start)
        _run_block(lat, lng, start, n, res, face, a, b, dig, out)


@njit(cache=True, nogil=True)
def _run_block_multi(
    lat: np.ndarray, lng: np.ndarray, start: int, n: int, resolutions: np.ndarray,
    face0: np.ndarray, vec: np.ndarray,
    face: np.ndarray, a: np.ndarray, b: np.ndarray, dig: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    unit_faces(lat, lng, start, n, face0, vec)
    for row in range(resolutions.size):
        res = resolutions[row]
        project_vectors(n, res, face0, vec, face, a, b)
        _digits(n, res, a, b, dig)
        _assemble(start, n, res, face, a, b, dig, out[row])
        _exact_where_zero(lat, lng, start, n, res, out[row])


@njit(cache=True, nogil=True)
def fast_cells_multi_serial(
    lat: np.ndarray, lng: np.ndarray, resolutions: np.ndarray, out: np.ndarray
) -> None:  # fmt: skip
    """``fast_cells_multi`` on the calling thread."""
    face0 = np.empty(BLOCK, np.int64)
    vec = np.empty((3, BLOCK), np.float64)
    face = np.empty(BLOCK, np.int64)
    a = np.empty(BLOCK, np.float64)
    b = np.empty(BLOCK, np.float64)
    dig = np.empty(BLOCK, np.uint64)
    for start in range(0, lat.size, BLOCK):
        n = min(BLOCK, lat.size - start)
        _run_block_multi(lat, lng, start, n, resolutions, face0, vec, face, a, b, dig, out)


@njit(cache=True, nogil=True, parallel=True)
def fast_cells_multi(
    lat: np.ndarray, lng: np.ndarray, resolutions: np.ndarray, out: np.ndarray
) -> None:  # fmt: skip
    """Cells at each of ``resolutions`` into the rows of ``out`` (one projection per point)."""
    nblocks = (lat.size + BLOCK - 1) // BLOCK
    for blk in prange(nblocks):
        face0 = np.empty(BLOCK, np.int64)
        vec = np.empty((3, BLOCK), np.float64)
        face = np.empty(BLOCK, np.int64)
        a = np.empty(BLOCK, np.float64)
        b = np.empty(BLOCK, np.float64)
        dig = np.empty(BLOCK, np.uint64)
        start = blk * BLOCK
        n = min(BLOCK, lat.size - start)
        _run_block_multi(lat, lng, start, n, resolutions, face0, vec, face, a, b, dig, out)
