"""Numeric constants that define the H3 grid: icosahedron orientation and scale factors.

These are the published defining values of the H3 discrete global grid (H3 reference
library, Apache-2.0; see ../shared/h3-conformance/LICENSE-H3.txt). They are data, not
code: the projection must use the very same doubles as H3 to agree bit for bit on
points that lie exactly on cell edges. ``tools/gen_h3_tables.py --check`` verifies them
against h3-py.
"""

from __future__ import annotations

import math

import numpy as np

# Degrees -> radians exactly as H3 does it (pi/180 rounded once to a double).
DEG_TO_RAD = 0.0174532925199432957692369076848861271111
TWO_PI = 6.28318530717958647692528676655900576839433
# A point this close (radians) to a face centre is the face centre.
EPSILON = 0.0000000000000001
SQRT7 = 2.6457513110645905905016157536392604257102
# Class II -> Class III axis rotation, asin(sqrt(3/28)).
AP7_ROT_RADS = 0.333473172251832115336090755351601070065900389
# Resolution-0 hex2d unit length in gnomonic units, and its inverse as H3 4.x writes it.
RES0_U_GNOMONIC = 0.38196601125010500003
INV_RES0_U_GNOMONIC = 2.61803398874989588842
# 1 / sin(60 deg)
RSIN60 = 1.1547005383792515290182975610039149112953

# Icosahedron face centres, lat/lng radians (Dymaxion orientation).
FACE_CENTER_GEO = np.array(
    [
        (0.803582649718989942, 1.248397419617396099),
        (1.307747883455638156, 2.536945009877921159),
        (1.054751253523952054, -1.347517358900396623),
        (0.600191595538186799, -0.450603909469755746),
        (0.491715428198773866, 0.401988202911306943),
        (0.172745327415618701, 1.678146885280433686),
        (0.605929321571350690, 2.953923329812411617),
        (0.427370518328979641, -1.888876200336285401),
        (-0.079066118549212831, -0.733429513380867741),
        (-0.230961644455383637, 0.506495587332349035),
        (0.079066118549212831, 2.408163140208925497),
        (0.230961644455383637, -2.635097066257444203),
        (-0.172745327415618701, -1.463445768309359553),
        (-0.605929321571350690, -0.187669323777381622),
        (-0.427370518328979641, 1.252716453253507838),
        (-0.600191595538186799, 2.690988744120037492),
        (-0.491715428198773866, -2.739604450678486295),
        (-0.803582649718989942, -1.893195233972397139),
        (-1.307747883455638156, -0.604647643711872080),
        (-1.054751253523952054, 1.794075294689396615),
    ],
    dtype=np.float64,
)

# The same centres as unit vectors (the published values, which are NOT bit-identical
# to recomputing them from FACE_CENTER_GEO; the nearest-face test uses these).
FACE_CENTER_XYZ = np.array(
    [
        (0.2199307791404606, 0.6583691780274996, 0.7198475378926182),
        (-0.2139234834501421, 0.1478171829550703, 0.9656017935214205),
        (0.1092625278784797, -0.4811951572873210, 0.8697775121287253),
        (0.7428567301586791, -0.3593941678278028, 0.5648005936517033),
        (0.8112534709140969, 0.3448953237639384, 0.4721387736413930),
        (-0.1055498149613921, 0.9794457296411413, 0.1718874610009365),
        (-0.8075407579970092, 0.1533552485898818, 0.5695261994882688),
        (-0.2846148069787907, -0.8644080972654206, 0.4144792552473539),
        (0.7405621473854482, -0.6673299564565524, -0.0789837646326737),
        (0.8512303986474293, 0.4722343788582681, -0.2289137388687808),
        (-0.7405621473854481, 0.6673299564565524, 0.0789837646326737),
        (-0.8512303986474292, -0.4722343788582682, 0.2289137388687808),
        (0.1055498149613919, -0.9794457296411413, -0.1718874610009365),
        (0.8075407579970092, -0.1533552485898819, -0.5695261994882688),
        (0.2846148069787908, 0.8644080972654204, -0.4144792552473539),
        (-0.7428567301586791, 0.3593941678278027, -0.5648005936517033),
        (-0.8112534709140971, -0.3448953237639382, -0.4721387736413930),
        (-0.2199307791404607, -0.6583691780274996, -0.7198475378926182),
        (0.2139234834501420, -0.1478171829550704, -0.9656017935214205),
        (-0.1092625278784796, 0.4811951572873210, -0.8697775121287253),
    ],
    dtype=np.float64,
)

# Azimuth (radians) from each face centre to its Class II i-axis (vertex 0).
FACE_AXIS_AZ = np.array(
    [
        5.619958268523939882,
        5.760339081714187279,
        0.780213654393430055,
        0.430469363979999913,
        6.130269123335111400,
        2.692877706530642877,
        2.982963003477243874,
        3.532912002790141181,
        3.494305004259568154,
        3.003214169499538391,
        5.930472956509811562,
        0.138378484090254847,
        0.448714947059150361,
        0.158629650112549365,
        5.891865957979238535,
        2.711123289609793325,
        3.294508837434268316,
        3.804819692245439833,
        3.664438879055192436,
        2.361378999196363184,
    ],
    dtype=np.float64,
)


def _tangent_basis(c: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """North and east unit vectors of the tangent plane at face centre ``c``.

    Computed with the same double operations, in the same order, as H3 4.5 does at run
    time (north = normalise(pole - (pole . c) c), east = north x c), so the per-point
    azimuths agree to the last bit.
    """
    cx, cy, cz = (float(v) for v in c)
    pole_dot = 0.0 * cx + 0.0 * cy + 1.0 * cz
    nx = 1.0 * 0.0 + -pole_dot * cx
    ny = 1.0 * 0.0 + -pole_dot * cy
    nz = 1.0 * 1.0 + -pole_dot * cz
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    inv = 1.0 / norm
    nx, ny, nz = nx * inv, ny * inv, nz * inv
    east = (ny * cz - nz * cy, nz * cx - nx * cz, nx * cy - ny * cx)
    return (nx, ny, nz), east


_BASES = [_tangent_basis(c) for c in FACE_CENTER_XYZ]
FACE_NORTH = np.array([b[0] for b in _BASES], dtype=np.float64)
FACE_EAST = np.array([b[1] for b in _BASES], dtype=np.float64)
