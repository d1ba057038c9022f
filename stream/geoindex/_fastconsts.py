"""Derived constants for the fast latlng->cell path (stream.geoindex._fast), built at import.

Everything here is computed from the H3 defining constants in ``_h3consts`` with numpy,
so there is nothing to keep in sync by hand:

- a rotation taking H3's icosahedron into the canonical frame where the face centres are
  the dodecahedron vertices (+-1, +-1, +-1) and the cyclic (0, +-1/phi, +-phi), all over
  sqrt(3); there the nearest face follows from |x|, |y|, |z| and the signs;
- per face and grid class, the two tangent vectors whose dot products with a point,
  divided by its dot product with the face centre, give its hex2d coordinates;
- digit rotation tables working on three digits (nine bits) at a time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from stream.geoindex._consts import (
    AP7_ROT_RADS,
    FACE_AXIS_AZ,
    FACE_CENTER_XYZ,
    FACE_EAST,
    FACE_NORTH,
    INV_RES0_U_GNOMONIC,
    SQRT7,
)
from stream.geoindex._proj import ROT60_CCW, ROT60_CW
from stream.geoindex._tables import PENT, SLOT_BASE_CELL, SLOT_CW, SLOT_ROT60

PHI = (1.0 + math.sqrt(5.0)) / 2.0
# Canonical face centres in the positive octant: one cube vertex, three cyclic ones.
CANDIDATES = np.array(
    [(1.0, 1.0, 1.0), (0.0, 1 / PHI, PHI), (1 / PHI, PHI, 0.0), (PHI, 0.0, 1 / PHI)]
)


def _canonical_vertices() -> np.ndarray:
    out = [np.array(s, dtype=float) for s in itertools.product((1.0, -1.0), repeat=3)]
    for a, b in itertools.product((1.0, -1.0), repeat=2):
        out += [
            np.array(v)
            for v in ((0, a / PHI, b * PHI), (a / PHI, b * PHI, 0), (a * PHI, 0, b / PHI))
        ]
    return np.array(out) / math.sqrt(3.0)


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e2 = b - (b @ a) * a
    e2 /= np.linalg.norm(e2)
    return np.array([a, e2, np.cross(a, e2)])


def _canonical_rotation() -> np.ndarray:
    """Rotation R with R @ (H3 face centre) = a canonical dodecahedron vertex, for all 20."""
    verts = _canonical_vertices()
    c0 = FACE_CENTER_XYZ[0]
    c1 = FACE_CENTER_XYZ[int(np.argsort(-(FACE_CENTER_XYZ @ c0))[1])]
    for u1 in verts:
        if abs(u1 @ verts[0] - c0 @ c1) > 1e-9:
            continue
        rot = _frame(verts[0], u1).T @ _frame(c0, c1)
        err = max(np.min(np.linalg.norm(verts - rot @ c, axis=1)) for c in FACE_CENTER_XYZ)
        if err < 1e-12 and np.linalg.det(rot) > 0:
            return rot
    raise RuntimeError("no rotation maps the H3 icosahedron onto the canonical one")


ROT = _canonical_rotation()


def _face_of_candidate() -> np.ndarray:
    """FACE_OF[k * 8 + signs]: H3 face of candidate k with the octant's signs applied."""
    table = np.empty(32, dtype=np.int64)
    for k in range(4):
        for bits in range(8):
            signs = np.array([-1.0 if bits >> i & 1 else 1.0 for i in range(3)])
            v = ROT.T @ (CANDIDATES[k] * signs / math.sqrt(3.0))
            table[k * 8 + bits] = int(np.argmax(FACE_CENTER_XYZ @ v))
    return table


FACE_OF = _face_of_candidate()


def _hex2d_axes() -> tuple[np.ndarray, np.ndarray]:
    """AXIS_X/AXIS_Y[cls * 20 + face]: x = K * (p . AXIS_X) / (p . centre), same for y.

    H3 puts a point at hex2d angle theta = face azimuth - point azimuth (minus the
    Class III rotation), radius tan(angle); with the azimuth measured in the tangent
    plane's (north, east) basis that is a fixed linear map per face and class.
    """
    ax = np.empty((40, 3))
    ay = np.empty((40, 3))
    for cls in (0, 1):
        for f in range(20):
            alpha = FACE_AXIS_AZ[f] - (AP7_ROT_RADS if cls else 0.0)
            n, e = FACE_NORTH[f], FACE_EAST[f]
            ax[cls * 20 + f] = math.cos(alpha) * n + math.sin(alpha) * e
            ay[cls * 20 + f] = math.sin(alpha) * n - math.cos(alpha) * e
    return ax, ay


AXIS_X, AXIS_Y = _hex2d_axes()
# Hex2d units per gnomonic unit at each resolution (as H3 scales: times sqrt(7) per level).
SCALE = np.array([INV_RES0_U_GNOMONIC * SQRT7**r for r in range(16)])


def _rotation_9bit() -> np.ndarray:
    """ROT9[n * 512 + g]: three packed digits g rotated n times 60 degrees ccw (7 stays 7)."""
    rot = np.empty((6, 8), dtype=np.int64)
    rot[0] = np.arange(8)
    for n in range(1, 6):
        rot[n] = ROT60_CCW[rot[n - 1]]
    g = np.arange(512)
    return np.concatenate(
        [rot[n, g >> 6] << 6 | rot[n, g >> 3 & 7] << 3 | rot[n, g & 7] for n in range(6)]
    ).astype(np.uint64)


ROT9 = _rotation_9bit()


def _axial_slots() -> np.ndarray:
    """AXIAL_SLOT[(a + 2) * 5 + b + 2]: i * 9 + j * 3 + k of resolution-0 axial (a, b)."""
    out = np.full(25, -1, dtype=np.int64)
    for a in range(-2, 3):
        for b in range(-2, 3):
            ijk = np.array([a, b, 0])
            ijk -= ijk.min()
            if ijk.max() <= 2:
                out[(a + 2) * 5 + b + 2] = ijk[0] * 9 + ijk[1] * 3 + ijk[2]
    return out


AXIAL_SLOT = _axial_slots()


def _turns() -> np.ndarray:
    """TURNS[slot * 8 + lead]: ccw 60-degree turns taking face digits to base-cell digits.

    ``slot`` is face * 27 + i * 9 + j * 3 + k, ``lead`` the first non-zero face digit.
    For hexagon base cells this is the slot's rotation. A pentagon has no K (1) sub-
    sequence: a leading 1 is first turned out of it (cw or ccw, per slot), and each
    ccw turn that lands the leading digit on 1 is followed by one more.
    """
    out = np.zeros(SLOT_BASE_CELL.size * 8, dtype=np.int64)
    for s, bc in enumerate(SLOT_BASE_CELL):
        for lead in range(8):
            n = int(SLOT_ROT60[s])
            if bc >= 0 and PENT[bc] and lead:
                d = lead
                n = 0
                if d == 1:
                    n = 5 if SLOT_CW[s] else 1
                    d = int(ROT60_CW[d] if SLOT_CW[s] else ROT60_CCW[d])
                for _ in range(int(SLOT_ROT60[s])):
                    d = int(ROT60_CCW[d])
                    n += 1
                    if d == 1:
                        d = int(ROT60_CCW[d])
                        n += 1
            out[s * 8 + lead] = n % 6
    return out


TURNS = _turns()
