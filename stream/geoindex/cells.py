"""Vectorised H3 geo-index for the stream: exact latlng->cell in numba, parents, strings.

Front door over ``stream.geoindex._fast`` (vectorised block kernels) and
``stream.geoindex._kernels``
(the exact H3 4.5 formulation they fall back to). Every function takes and returns numpy
arrays and never raises in the middle of a batch: an element that cannot be indexed (NaN
or infinite coordinate, |lat| > 90) yields cell 0, so callers can count
``(cells == 0).sum()`` and route those reads to the dead-letter topic.

Results agree bit for bit with h3-py 4.5, including points lying exactly on a cell edge
or vertex (ties that only the same floating-point formulation breaks the same way): the
fast kernels hand every point too close to a boundary to the exact formulation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import h3
import numpy as np

from core.records.sightings import H3_RESOLUTIONS
from stream.geoindex._fast import (
    fast_cells_multi,
    fast_cells_multi_serial,
    fast_cells_parallel,
    fast_cells_serial,
)
from stream.geoindex._kernels import from_hex, parents, to_hex

MAX_RES = 15
# Below this many points thread start-up costs more than it saves.
_PARALLEL_MIN = 20_000


def _as_f64(a: Iterable[float] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).ravel())


def latlng_to_cell(
    lat: Iterable[float] | np.ndarray,
    lng: Iterable[float] | np.ndarray,
    res: int,
    *,
    parallel: bool = True,
) -> np.ndarray:
    """H3 cells (uint64) of points given in degrees, like ``h3.latlng_to_cell`` per element.

    ``lat`` and ``lng`` must have the same length; longitudes may be any finite value
    (normalised as H3 does). Elements with NaN/inf, |lat| > 90 give 0. ``res`` outside
    0..15 raises ``ValueError`` (a programming error, not bad data). ``parallel=False``
    forces the single-threaded kernel (the GIL is released either way).
    """
    if not 0 <= int(res) <= MAX_RES:
        raise ValueError(f"res must be in 0..{MAX_RES}, got {res}")
    la = _as_f64(lat)
    ln = _as_f64(lng)
    if la.size != ln.size:
        raise ValueError(f"lat and lng lengths differ: {la.size} != {ln.size}")
    out = np.empty(la.size, dtype=np.uint64)
    kernel = fast_cells_parallel if parallel and la.size >= _PARALLEL_MIN else fast_cells_serial
    kernel(la, ln, int(res), out)
    return out


def cell_to_parent(cells: Iterable[int] | np.ndarray, res: int) -> np.ndarray:
    """Parents at ``res`` (bit operations); 0 where a cell is 0 or coarser than ``res``."""
    if not 0 <= int(res) <= MAX_RES:
        raise ValueError(f"res must be in 0..{MAX_RES}, got {res}")
    c = np.ascontiguousarray(np.asarray(cells, dtype=np.uint64).ravel())
    out = np.empty(c.size, dtype=np.uint64)
    parents(c, int(res), out)
    return out


def latlng_to_cells_multi(
    lat: Iterable[float] | np.ndarray,
    lng: Iterable[float] | np.ndarray,
    resolutions: Sequence[int] = (7, 9, 12),
    *,
    mode: str = "parent",
    parallel: bool = True,
) -> dict[int, np.ndarray]:
    """Cells at several resolutions, as ``{res: uint64 array}``.

    ``mode="parent"`` (default, cheap) projects once at the finest resolution and takes
    the H3 parents of that cell for the coarser ones, so the resolutions nest exactly
    (roll-ups by parent cell add up). H3 children overhang their parent, so for points
    near a coarse cell's edge (~7% of random points at res 7 from res 12) the parent
    is the neighbour of the cell that geometrically contains the point.
    ``mode="direct"`` equals ``latlng_to_cell`` for each resolution; it computes each
    point's unit vector and face once and only the hexagon search per resolution.
    """
    if mode not in ("parent", "direct"):
        raise ValueError(f"mode must be 'parent' or 'direct', got {mode!r}")
    if not resolutions:
        return {}
    if mode == "direct":
        res_arr = np.array([int(r) for r in resolutions], dtype=np.int64)
        if res_arr.min() < 0 or res_arr.max() > MAX_RES:
            raise ValueError(f"resolutions must be in 0..{MAX_RES}, got {list(resolutions)}")
        la = _as_f64(lat)
        ln = _as_f64(lng)
        if la.size != ln.size:
            raise ValueError(f"lat and lng lengths differ: {la.size} != {ln.size}")
        out = np.empty((res_arr.size, la.size), dtype=np.uint64)
        if parallel and la.size >= _PARALLEL_MIN:
            fast_cells_multi(la, ln, res_arr, out)
        else:
            fast_cells_multi_serial(la, ln, res_arr, out)
        return {int(r): out[row] for row, r in enumerate(res_arr)}
    finest = max(resolutions)
    base = latlng_to_cell(lat, lng, finest, parallel=parallel)
    return {r: base if r == finest else cell_to_parent(base, r) for r in resolutions}


def cell_to_string(cells: Iterable[int] | np.ndarray) -> np.ndarray:
    """Lower-case hex strings (numpy ``<U16``) as h3-py writes them; cell 0 gives ``"0"``."""
    c = np.ascontiguousarray(np.asarray(cells, dtype=np.uint64).ravel())
    buf = np.zeros((c.size, 16), dtype=np.uint8)
    to_hex(c, buf)
    return buf.view("S16").ravel().astype("U16")


def string_to_cell(strings: Iterable[str] | np.ndarray) -> np.ndarray:
    """Parse hex strings to uint64; empty, over-long or non-hex strings give 0."""
    arr = np.asarray(list(strings) if not isinstance(strings, np.ndarray) else strings)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    # Width 17 so that a 17+ character string is seen (and rejected) as too long.
    raw = np.char.encode(arr.astype("U17").ravel(), "ascii", errors="replace").astype("S17")
    buf = np.ascontiguousarray(raw).view(np.uint8).reshape(raw.size, 17)
    out = np.empty(raw.size, dtype=np.uint64)
    from_hex(buf, out)
    return out


def grid_disk(cell: int, k: int) -> np.ndarray:
    """Sorted cells within grid distance ``k`` of ``cell`` (area search; calls h3-py)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return np.sort(np.array(h3.api.basic_int.grid_disk(int(cell), int(k)), dtype=np.uint64))


class ReaderCellTable:
    """Cells of the fixed readers, computed once per registry version.

    Fixed readers do not move, so their cells are looked up by ``reader_id`` instead of
    re-projecting every read. Build a new table when the registry changes.
    """

    def __init__(
        self,
        reader_id: Iterable[int] | np.ndarray,
        lat: Iterable[float] | np.ndarray,
        lon: Iterable[float] | np.ndarray,
        resolutions: Sequence[int] = (7, 9, 12),
    ) -> None:
        ids = np.asarray(reader_id, dtype=np.uint32).ravel()
        if np.unique(ids).size != ids.size:
            raise ValueError("reader_id values must be unique")
        order = np.argsort(ids, kind="stable")
        self.resolutions = tuple(int(r) for r in resolutions)
        self._ids = ids[order]
        cells = latlng_to_cells_multi(_as_f64(lat)[order], _as_f64(lon)[order], self.resolutions)
        # One row per resolution plus a trailing 0 column returned for unknown readers.
        self._cells = np.zeros((len(self.resolutions), ids.size + 1), dtype=np.uint64)
        for row, r in enumerate(self.resolutions):
            self._cells[row, : ids.size] = cells[r]

    def __len__(self) -> int:
        return int(self._ids.size)

    def lookup(self, reader_ids: Iterable[int] | np.ndarray) -> dict[int, np.ndarray]:
        """Cells per resolution for each reader id; 0 for readers not in the table."""
        q = np.asarray(reader_ids, dtype=np.uint32).ravel()
        pos = np.searchsorted(self._ids, q)
        hit = pos < self._ids.size
        hit[hit] = self._ids[pos[hit]] == q[hit]
        pos = np.where(hit, pos, self._ids.size)
        return {r: self._cells[row, pos] for row, r in enumerate(self.resolutions)}


def cells_for(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H3 cells (r7, r9, r12) as uint64 arrays, each projected at its own resolution; 0 where lat
    or lon is NaN. The one place sighting and reader cells are computed."""
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    r7, r9, r12 = (latlng_to_cell(lat, lon, r) for r in H3_RESOLUTIONS)
    return r7, r9, r12
