"""Projection half of the fast latlng->cell path (see stream.geoindex._fast): SIMD-friendly.

Per point, without any libm call: the unit vector (sin/cos by polynomial after an exact
reduction of the degrees), the nearest icosahedron face in the canonical dodecahedron
frame, hex2d coordinates as two dot products over a third, and the nearest hexagon by
cube rounding. Each step also reports whether the point is far enough from a face or
hexagon boundary for the result to be trusted (bounds below); the caller sends the
others to the exact formulation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from stream.geoindex._consts import DEG_TO_RAD, FACE_CENTER_XYZ
from stream.geoindex._fastconsts import AXIS_X, AXIS_Y, FACE_OF, PHI, ROT, SCALE

# Only contraction into FMA: the guard bounds absorb it; no reassociation.
_FM = {"contract"}
_MAX_FAST_LNG = 1000.0
# Guard bounds, each well above the most our hex2d point can differ from H3's. With K
# hex units per gnomonic unit at the resolution and R the point's hex2d radius:
# - REL: both sides' trig and rounding, ~1e-15 relative;
# - ABS (times K): our unit vector vs H3's (polynomial sin/cos on exactly reduced degrees
#   vs libm on rounded radians), ~1e-16 per component while |lng| <= _MAX_FAST_LNG;
# - ACOS (times K^2 / R): H3's angle acos(1 - d^2/2) rounds its argument to 1.1e-16, an
#   angle error of 1.1e-16 / r that dominates near face centres;
# - FACE: H3 compares squared chords 2 - 2 (p . c) computed to ~1e-16.
_TOL_FACE = 1e-12
_TOL_REL = 1e-12
_TOL_ABS = 1e-14
_TOL_ACOS = 4e-16

_IP = 1.0 / PHI
_RSQRT3 = 1.0 / math.sqrt(3.0)
_TWO_RSQRT3 = 2.0 / math.sqrt(3.0)
_SQRT3_2 = math.sqrt(3.0) / 2.0
(_R00, _R01, _R02), (_R10, _R11, _R12), (_R20, _R21, _R22) = (tuple(row) for row in ROT)
_CX = np.ascontiguousarray(FACE_CENTER_XYZ[:, 0])
_CY = np.ascontiguousarray(FACE_CENTER_XYZ[:, 1])
_CZ = np.ascontiguousarray(FACE_CENTER_XYZ[:, 2])
_XX = np.ascontiguousarray(AXIS_X[:, 0])
_XY = np.ascontiguousarray(AXIS_X[:, 1])
_XZ = np.ascontiguousarray(AXIS_X[:, 2])
_YX = np.ascontiguousarray(AXIS_Y[:, 0])
_YY = np.ascontiguousarray(AXIS_Y[:, 1])
_YZ = np.ascontiguousarray(AXIS_Y[:, 2])

# Taylor coefficients; on |t| <= pi/4 the truncation error is below 1e-16.
_S3, _S5, _S7, _S9 = -1 / 6, 1 / 120, -1 / 5040, 1 / 362880
_S11, _S13, _S15, _S17 = -1 / 39916800, 1 / 6227020800, -1 / 1307674368000, 1 / 355687428096000
_C2, _C4, _C6, _C8 = -1 / 2, 1 / 24, -1 / 720, 1 / 40320
_C10, _C12, _C14, _C16 = -1 / 3628800, 1 / 479001600, -1 / 87178291200, 1 / 20922789888000


@njit(cache=True, nogil=True, inline="always", fastmath=_FM)
def _sincos_deg(deg: float) -> tuple[float, float]:
    # deg - 90 k is exact, so the reduction adds no error; then a quadrant swap.
    k = math.floor(deg * (1.0 / 90.0) + 0.5)
    t = (deg - 90.0 * k) * DEG_TO_RAD
    t2 = t * t
    s = t + t * t2 * (
        _S3
        + t2 * (_S5 + t2 * (_S7 + t2 * (_S9 + t2 * (_S11 + t2 * (_S13 + t2 * (_S15 + t2 * _S17))))))
    )
    c = 1.0 + t2 * (
        _C2
        + t2 * (_C4 + t2 * (_C6 + t2 * (_C8 + t2 * (_C10 + t2 * (_C12 + t2 * (_C14 + t2 * _C16))))))
    )
    q = np.int64(k) & 3
    sn = c if q & 1 else s
    cs = s if q & 1 else c
    sn = -sn if q >= 2 else sn
    cs = -cs if (q == 1) | (q == 2) else cs
    return sn, cs


@njit(cache=True, nogil=True, inline="always", fastmath=_FM, error_model="numpy")
def _unit_face(la: float, ln: float) -> tuple[bool, int, float, float, float]:
    """(trusted, face, unit vector) of a point in degrees; untrusted near face ties."""
    valid = (abs(la) <= 90.0) & (abs(ln) <= _MAX_FAST_LNG)
    la = la if valid else 0.0
    ln = ln if valid else 0.0
    s_la, c_la = _sincos_deg(la)
    s_ln, c_ln = _sincos_deg(ln)
    vx = c_ln * c_la
    vy = s_ln * c_la
    vz = s_la
    wx = _R00 * vx + _R01 * vy + _R02 * vz
    wy = _R10 * vx + _R11 * vy + _R12 * vz
    wz = _R20 * vx + _R21 * vy + _R22 * vz
    ax = abs(wx)
    ay = abs(wy)
    az = abs(wz)
    # Dot products (times sqrt 3) with the four candidate centres of the octant.
    s0 = ax + ay + az
    s1 = ay * _IP + az * PHI
    s2 = ax * _IP + ay * PHI
    s3 = ax * PHI + az * _IP
    # The best centre with one sign flipped is the only other possible runner-up;
    # p_k is half the drop in its dot product. (Pairwise selects keep this SIMD.)
    p0 = min(min(ax, ay), az)
    p1 = min(ay * _IP, az * PHI)
    p2 = min(ax * _IP, ay * PHI)
    p3 = min(ax * PHI, az * _IP)
    first01 = s0 >= s1
    k01 = 0 if first01 else 1
    p01 = p0 if first01 else p1
    m01 = max(s0, s1)
    n01 = min(s0, s1)
    first23 = s2 >= s3
    k23 = 2 if first23 else 3
    p23 = p2 if first23 else p3
    m23 = max(s2, s3)
    n23 = min(s2, s3)
    low = m01 >= m23
    kb = k01 if low else k23
    pb = p01 if low else p23
    best = max(m01, m23)
    second = max(min(m01, m23), max(n01, n23))
    face_margin = min(best - second, 2.0 * pb) * _RSQRT3
    bits = (wx < 0.0) + 2 * (wy < 0.0) + 4 * (wz < 0.0)
    f = FACE_OF[kb * 8 + bits]
    return valid & (face_margin > _TOL_FACE), f, vx, vy, vz


@njit(cache=True, nogil=True, inline="always", fastmath=_FM, error_model="numpy")
def _hex_axial(
    vx: float, vy: float, vz: float, f: int, res: int
) -> tuple[bool, float, float]:  # fmt: skip
    """(trusted, axial a, axial b) of the hexagon at ``res`` containing a unit vector."""
    scale = SCALE[res]
    off = (res & 1) * 20
    # Gnomonic projection straight into this resolution's hex2d frame.
    g = vx * _CX[f] + vy * _CY[f] + vz * _CZ[f]
    inv = scale / g
    x = (vx * _XX[off + f] + vy * _XY[off + f] + vz * _XZ[off + f]) * inv
    y = (vx * _YX[off + f] + vy * _YY[off + f] + vz * _YZ[off + f]) * inv
    # Nearest hexagon centre: cube rounding in the 60-degree (q, r) basis.
    bb = y * _TWO_RSQRT3
    qq = x + 0.5 * bb - bb
    ss = -qq - bb
    rq = math.floor(qq + 0.5)
    rr = math.floor(bb + 0.5)
    rs = math.floor(ss + 0.5)
    dq = abs(rq - qq)
    dr = abs(rr - bb)
    ds = abs(rs - ss)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = (not fix_q) & (dr > ds)
    rq = -rr - rs if fix_q else rq
    rr = -rq - rs if fix_r else rr
    ca = rq + rr
    # Distance from the point to its hexagon's edges (centre spacing 1 -> apothem 1/2),
    # against the bound on how far H3's arithmetic may put the point from ours.
    dx = x - (ca - 0.5 * rr)
    dy = y - rr * _SQRT3_2
    h = max(abs(dx), max(abs(0.5 * dx + _SQRT3_2 * dy), abs(_SQRT3_2 * dy - 0.5 * dx)))
    rad = math.sqrt(x * x + y * y)
    tol = (_TOL_REL * (abs(x) + abs(y)) + scale * _TOL_ABS) * rad + scale * scale * _TOL_ACOS
    return (0.5 - h) * rad > tol, ca, rr


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def project(
    lat: np.ndarray, lng: np.ndarray, start: int, n: int, res: int,
    face: np.ndarray, a: np.ndarray, b: np.ndarray,
) -> None:  # fmt: skip
    """Face (-1: use the exact path) and axial hex coordinates at ``res`` per point."""
    for q in range(n):
        ok, f, vx, vy, vz = _unit_face(lat[start + q], lng[start + q])
        hex_ok, ca, rr = _hex_axial(vx, vy, vz, f, res)
        ok = ok & hex_ok
        face[q] = f if ok else -1
        a[q] = ca if ok else 0.0
        b[q] = rr if ok else 0.0


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def unit_faces(
    lat: np.ndarray, lng: np.ndarray, start: int, n: int,
    face: np.ndarray, vec: np.ndarray,
) -> None:  # fmt: skip
    """First half of ``project`` for several resolutions: face (-1: exact path), vectors."""
    for q in range(n):
        ok, f, vx, vy, vz = _unit_face(lat[start + q], lng[start + q])
        face[q] = f if ok else -1
        vec[0, q] = vx
        vec[1, q] = vy
        vec[2, q] = vz


@njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def project_vectors(
    n: int, res: int, face0: np.ndarray, vec: np.ndarray,
    face: np.ndarray, a: np.ndarray, b: np.ndarray,
) -> None:  # fmt: skip
    """Second half of ``project``: from ``unit_faces`` output to ``res``'s hexagons."""
    for q in range(n):
        f = face0[q]
        hex_ok, ca, rr = _hex_axial(vec[0, q], vec[1, q], vec[2, q], max(f, 0), res)
        ok = (f >= 0) & hex_ok
        face[q] = f if ok else -1
        a[q] = ca if ok else 0.0
        b[q] = rr if ok else 0.0
