"""H3 forward projection in numba: lat/lng -> icosahedron face -> hex2d -> IJK -> digits.

Everything here is table-free (only the icosahedron constants), so the table generator
can use it before ``_h3tables`` exists. Each step follows the published H3 description
and performs the same floating-point operations in the same order, so results agree
bit for bit with the reference library (no fastmath: it would reorder them).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from stream.geoindex._consts import (
    AP7_ROT_RADS,
    EPSILON,
    FACE_AXIS_AZ,
    FACE_CENTER_XYZ,
    FACE_EAST,
    FACE_NORTH,
    INV_RES0_U_GNOMONIC,
    RSIN60,
    SQRT7,
    TWO_PI,
)

# All 15 digits set to 7 ("unused"), the H3 digit field of a fresh index.
DIGITS_UNUSED = np.uint64((1 << 45) - 1)
# Digit rotation by one 60-degree step; digits are 4*i + 2*j + k of the unit IJK vector.
ROT60_CCW = np.array([0, 5, 3, 1, 6, 4, 2, 7], dtype=np.int64)
ROT60_CW = np.array([0, 3, 6, 2, 5, 1, 4, 7], dtype=np.int64)

_FCX = FACE_CENTER_XYZ
_FAZ = FACE_AXIS_AZ
_FNORTH = FACE_NORTH
_FEAST = FACE_EAST


@njit(cache=True, nogil=True)
def pos_angle(rads: float) -> float:
    """Map an angle into [0, 2*pi) the way H3 does (one add or subtract)."""
    tmp = rads + TWO_PI if rads < 0.0 else rads
    if rads >= TWO_PI:
        tmp -= TWO_PI
    return tmp


@njit(cache=True, nogil=True)
def latlng_to_vec3(lat: float, lng: float) -> tuple[float, float, float]:
    """Unit vector of a point given in radians (no longitude normalisation needed)."""
    clat = math.cos(lat)
    return math.cos(lng) * clat, math.sin(lng) * clat, math.sin(lat)


@njit(cache=True, nogil=True)
def vec3_to_hex2d(px: float, py: float, pz: float, res: int) -> tuple[int, float, float]:
    """Nearest face and hex2d (x, y) of a unit vector at resolution ``res``.

    The H3 4.5 vector formulation: chord distance to the face centre gives the angle,
    the azimuth is measured in the face centre's tangent plane (north/east basis).
    """
    # Nearest face centre by squared chord length (same test and tie rule as H3).
    face = 0
    sqd = 5.0
    for f in range(20):
        dx = _FCX[f, 0] - px
        dy = _FCX[f, 1] - py
        dz = _FCX[f, 2] - pz
        d = dx * dx + dy * dy + dz * dz
        if d < sqd:
            face = f
            sqd = d
    r = math.acos(1.0 - sqd * 0.5)
    if r < EPSILON:
        return face, 0.0, 0.0
    # Azimuth: project the point onto the tangent plane at the face centre.
    cx = _FCX[face, 0]
    cy = _FCX[face, 1]
    cz = _FCX[face, 2]
    dot = px * cx + py * cy + pz * cz
    qx = px + -dot * cx
    qy = py + -dot * cy
    qz = pz + -dot * cz
    norm = math.sqrt(qx * qx + qy * qy + qz * qz)
    if norm != 0.0:
        inv = 1.0 / norm
        qx *= inv
        qy *= inv
        qz *= inv
    az = math.atan2(
        qx * _FEAST[face, 0] + qy * _FEAST[face, 1] + qz * _FEAST[face, 2],
        qx * _FNORTH[face, 0] + qy * _FNORTH[face, 1] + qz * _FNORTH[face, 2],
    )
    theta = pos_angle(_FAZ[face] - pos_angle(az))
    if res & 1:
        # Class III grids are rotated against the Class II face axes.
        theta = pos_angle(theta - AP7_ROT_RADS)
    # Gnomonic: great-circle distance -> planar distance, then to hex units of `res`.
    r = math.tan(r) * INV_RES0_U_GNOMONIC
    for _ in range(res):
        r *= SQRT7
    return face, r * math.cos(theta), r * math.sin(theta)


@njit(cache=True, nogil=True)
def geo_to_hex2d(lat: float, lng: float, res: int) -> tuple[int, float, float]:
    """Nearest face and hex2d (x, y) of a point (radians) at resolution ``res``."""
    px, py, pz = latlng_to_vec3(lat, lng)
    return vec3_to_hex2d(px, py, pz, res)


@njit(cache=True, nogil=True)
def ijk_normalize(i: int, j: int, k: int) -> tuple[int, int, int]:
    """Canonical IJK: all components >= 0 and at least one of them 0."""
    if i < 0:
        j -= i
        k -= i
        i = 0
    if j < 0:
        i -= j
        k -= j
        j = 0
    if k < 0:
        i -= k
        j -= k
        k = 0
    m = min(i, j, k)
    if m > 0:
        i -= m
        j -= m
        k -= m
    return i, j, k


@njit(cache=True, nogil=True)
def hex2d_to_ijk(x: float, y: float) -> tuple[int, int, int]:
    """IJK of the hexagon containing the hex2d point (x, y) (unit = cell centre spacing)."""
    a1 = abs(x)
    a2 = abs(y)
    # Shear into the (i, j) lattice frame, work in the first sextant, then fold back.
    x2 = a2 * RSIN60
    x1 = a1 + x2 / 2.0
    m1 = int(x1)
    m2 = int(x2)
    r1 = x1 - m1
    r2 = x2 - m2
    if r1 < 0.5:
        if r1 < 1.0 / 3.0:
            i = m1
            j = m2 if r2 < (1.0 + r1) / 2.0 else m2 + 1
        else:
            j = m2 if r2 < (1.0 - r1) else m2 + 1
            i = m1 + 1 if ((1.0 - r1) <= r2 and r2 < (2.0 * r1)) else m1
    elif r1 < 2.0 / 3.0:
        j = m2 if r2 < (1.0 - r1) else m2 + 1
        i = m1 if ((2.0 * r1 - 1.0) < r2 and r2 < (1.0 - r1)) else m1 + 1
    else:
        i = m1 + 1
        j = m2 if r2 < (r1 / 2.0) else m2 + 1
    if x < 0.0:
        # Reflect across the j axis.
        axis_i = (j + 1) // 2
        i = i - 2 * (i - axis_i) - (j & 1)
    if y < 0.0:
        i = i - (2 * j + 1) // 2
        j = -j
    return ijk_normalize(i, j, 0)


@njit(cache=True, nogil=True)
def _round7(n: int) -> int:
    # round(n / 7) half away from zero; n / 7 is never exactly half, so floor(n/7 + 1/2).
    return (2 * n + 7) // 14


@njit(cache=True, nogil=True)
def ijk_to_digits(i: int, j: int, k: int, res: int) -> tuple[int, int, int, np.uint64]:
    """Walk from ``res`` up to resolution 0 collecting aperture-7 digits.

    Returns the resolution-0 IJK on the face and the 45-bit H3 digit field (unused
    digits 7), digits still in the face's orientation (not the base cell's).
    """
    digits = DIGITS_UNUSED
    for r in range(res, 0, -1):
        li = i
        lj = j
        lk = k
        ii = i - k
        jj = j - k
        if r & 1:
            # Class III child: parent grid is the counter-clockwise aperture-7 one.
            i, j, k = ijk_normalize(_round7(3 * ii - jj), _round7(ii + 2 * jj), 0)
            ci, cj, ck = ijk_normalize(3 * i + j, 3 * j + k, i + 3 * k)
        else:
            i, j, k = ijk_normalize(_round7(2 * ii + jj), _round7(3 * jj - ii), 0)
            ci, cj, ck = ijk_normalize(3 * i + k, i + 3 * j, j + 3 * k)
        di, dj, dk = ijk_normalize(li - ci, lj - cj, lk - ck)
        d = 4 * di + 2 * dj + dk
        shift = np.uint64(3 * (15 - r))
        digits = (digits & ~(np.uint64(7) << shift)) | (np.uint64(d) << shift)
    return i, j, k, digits


@njit(cache=True, nogil=True)
def leading_digit(digits: np.uint64, res: int) -> int:
    """First non-zero digit (resolution 1..res), 0 if all are zero."""
    for r in range(1, res + 1):
        d = int((digits >> np.uint64(3 * (15 - r))) & np.uint64(7))
        if d != 0:
            return d
    return 0


@njit(cache=True, nogil=True)
def rotate_digits(digits: np.uint64, res: int, table: np.ndarray) -> np.uint64:
    """Apply a digit permutation (e.g. ROT60_CCW) to digits 1..res."""
    out = digits
    for r in range(1, res + 1):
        shift = np.uint64(3 * (15 - r))
        d = int((out >> shift) & np.uint64(7))
        out = (out & ~(np.uint64(7) << shift)) | (np.uint64(table[d]) << shift)
    return out


@njit(cache=True, nogil=True)
def rotate_pent_ccw(digits: np.uint64, res: int) -> np.uint64:
    """One 60-degree ccw rotation inside a pentagon base cell (skips the deleted K axis)."""
    out = digits
    found = False
    for r in range(1, res + 1):
        shift = np.uint64(3 * (15 - r))
        d = ROT60_CCW[int((out >> shift) & np.uint64(7))]
        out = (out & ~(np.uint64(7) << shift)) | (np.uint64(d) << shift)
        if not found and d != 0:
            found = True
            # A leading K digit does not exist in a pentagon: rotate once more.
            if leading_digit(out, res) == 1:
                out = rotate_digits(out, res, ROT60_CCW)
    return out


@njit(cache=True, nogil=True)
def encode_raw(lat: float, lng: float, res: int) -> tuple[int, int, int, int, np.uint64]:
    """(face, i0, j0, k0, face-oriented digits) for a point in radians."""
    face, x, y = geo_to_hex2d(lat, lng, res)
    i, j, k = hex2d_to_ijk(x, y)
    i0, j0, k0, digits = ijk_to_digits(i, j, k, res)
    return face, i0, j0, k0, digits
