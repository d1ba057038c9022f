"""The synthetic city: a perturbed road grid over Kunming, fixed and mobile readers, gateways."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingest.simulator import _rand
from ingest.simulator.config import CityConfig

M_PER_DEG_LAT = 111_320.0
FIXED_READER_BASE = 10_000  # fixed reader ids are 10001.., mobile ones 90001..
MOBILE_READER_BASE = 90_000
KIND_FIXED = 0
KIND_MOBILE = 1
DISTRICTS = ("Wuhua", "Panlong", "Guandu", "Xishan", "Chenggong")


@dataclass(frozen=True, slots=True)
class City:
    """Road grid (row-major node index = i * cols + j) and the reader/gateway registry.

    Readers are indexed 0..n_readers-1 (fixed first, then mobile); `reader_id` maps an index to
    the wire id. Gateways are indexed 0..n_gateways-1 likewise.
    """

    rows: int
    cols: int
    node_x: np.ndarray  # metres east of the box's west edge
    node_y: np.ndarray  # metres north of the box's south edge
    node_lat: np.ndarray
    node_lon: np.ndarray
    cum_row: np.ndarray  # (rows, cols): road distance along row i from column 0
    cum_col: np.ndarray  # (cols, rows): road distance along column j from row 0
    reader_at_node: np.ndarray  # int32, -1 where the intersection has no reader
    reader_id: np.ndarray  # uint32
    reader_kind: np.ndarray  # uint8: KIND_FIXED | KIND_MOBILE
    reader_node: np.ndarray  # int32 node of a fixed reader; route base node of a mobile one
    reader_gateway: np.ndarray  # int32 gateway index
    reader_district: np.ndarray  # int8 index into DISTRICTS
    gateway_id: np.ndarray  # uint32
    gateway_skew_ms: np.ndarray  # int64: reader clock minus true time, per gateway
    lat0: float
    lon0: float
    m_per_deg_lon: float

    @property
    def n_nodes(self) -> int:
        return self.rows * self.cols

    @property
    def n_readers(self) -> int:
        return len(self.reader_id)

    @property
    def n_fixed(self) -> int:
        return int(np.count_nonzero(self.reader_kind == KIND_FIXED))

    def registry_columns(self) -> dict[str, np.ndarray]:
        """The reader registry as columns: reader_id, lat, lon, kind (str), gateway_id, district."""
        node = self.reader_node
        return {
            "reader_id": self.reader_id,
            "lat": self.node_lat[node],
            "lon": self.node_lon[node],
            "kind": np.where(self.reader_kind == KIND_MOBILE, "mobile", "fixed"),
            "gateway_id": self.gateway_id[self.reader_gateway],
            "district": np.asarray(DISTRICTS, dtype=object)[self.reader_district],
        }

    def route_length_m(
        self, oi: np.ndarray, oj: np.ndarray, di: np.ndarray, dj: np.ndarray, row_first: np.ndarray
    ) -> np.ndarray:
        """Road length of the L-shaped route (row first, or column first) between two nodes."""
        rf = np.abs(self.cum_row[oi, dj] - self.cum_row[oi, oj]) + np.abs(
            self.cum_col[dj, di] - self.cum_col[dj, oi]
        )
        cf = np.abs(self.cum_col[oj, di] - self.cum_col[oj, oi]) + np.abs(
            self.cum_row[di, dj] - self.cum_row[di, oj]
        )
        return np.where(row_first, rf, cf)


def build_city(cfg: CityConfig) -> City:
    """Lay out the grid centred in the configured box (shrunk by `scale`), place readers."""
    g = _rand.rng(cfg.seed, _rand.P_CITY)
    rows, cols = cfg.grid_shape
    lat_c = (cfg.lat_min + cfg.lat_max) / 2
    m_per_deg_lon = M_PER_DEG_LAT * math.cos(math.radians(lat_c))
    box_h = (cfg.lat_max - cfg.lat_min) * M_PER_DEG_LAT
    box_w = (cfg.lon_max - cfg.lon_min) * m_per_deg_lon
    # Spacing shrinks if the box is too small for the grid (never for the default box).
    sp = min(cfg.grid_spacing_m, box_h / rows, box_w / cols)
    jit = min(cfg.grid_jitter_m, sp / 4)
    y0 = box_h / 2 - sp * (rows - 1) / 2
    x0 = box_w / 2 - sp * (cols - 1) / 2
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    y = (y0 + ii * sp + g.uniform(-jit, jit, (rows, cols))).ravel()
    x = (x0 + jj * sp + g.uniform(-jit, jit, (rows, cols))).ravel()
    lat = cfg.lat_min + y / M_PER_DEG_LAT
    lon = cfg.lon_min + x / m_per_deg_lon

    xr, yr = x.reshape(rows, cols), y.reshape(rows, cols)
    seg_row = np.hypot(np.diff(xr, axis=1), np.diff(yr, axis=1))  # (rows, cols-1)
    seg_col = np.hypot(np.diff(xr, axis=0), np.diff(yr, axis=0))  # (rows-1, cols)
    cum_row = np.concatenate([np.zeros((rows, 1)), np.cumsum(seg_row, axis=1)], axis=1)
    cum_col = np.concatenate([np.zeros((cols, 1)), np.cumsum(seg_col.T, axis=1)], axis=1)

    n_nodes = rows * cols
    n_fixed = max(1, round(cfg.reader_fraction * n_nodes))
    fixed_nodes = np.sort(g.choice(n_nodes, size=n_fixed, replace=False)).astype(np.int32)
    reader_at_node = np.full(n_nodes, -1, np.int32)
    reader_at_node[fixed_nodes] = np.arange(n_fixed, dtype=np.int32)

    # Fixed readers report through the gateway of their n x n block of intersections.
    b = cfg.readers_per_gateway_block
    block = (fixed_nodes // cols // b) * (-(-cols // b)) + (fixed_nodes % cols) // b
    _, fixed_gw = np.unique(block, return_inverse=True)
    n_fixed_gw = int(fixed_gw.max()) + 1
    n_mobile = cfg.n_mobile_readers
    mobile_nodes = g.choice(n_nodes, size=n_mobile, replace=n_mobile > n_nodes).astype(np.int32)
    # Each patrol vehicle has its own cellular gateway.
    mobile_gw = n_fixed_gw + np.arange(n_mobile)
    n_gw = n_fixed_gw + n_mobile

    reader_node = np.concatenate([fixed_nodes, mobile_nodes])
    reader_id = np.concatenate(
        [
            FIXED_READER_BASE + 1 + np.arange(n_fixed),
            MOBILE_READER_BASE + 1 + np.arange(n_mobile),
        ]
    ).astype(np.uint32)
    kind = np.concatenate([np.zeros(n_fixed), np.ones(n_mobile)]).astype(np.uint8)
    skew = np.clip(
        np.round(g.normal(0.0, cfg.clock_skew_sigma_s * 1000, n_gw)),
        -cfg.max_skew_ms,
        cfg.max_skew_ms,
    ).astype(np.int64)
    return City(
        rows=rows,
        cols=cols,
        node_x=x,
        node_y=y,
        node_lat=lat,
        node_lon=lon,
        cum_row=cum_row,
        cum_col=cum_col,
        reader_at_node=reader_at_node,
        reader_id=reader_id,
        reader_kind=kind,
        reader_node=reader_node,
        reader_gateway=np.concatenate([fixed_gw, mobile_gw]).astype(np.int32),
        reader_district=_district(lat[reader_node], lon[reader_node]),
        gateway_id=(1 + np.arange(n_gw)).astype(np.uint32),
        gateway_skew_ms=skew,
        lat0=cfg.lat_min,
        lon0=cfg.lon_min,
        m_per_deg_lon=m_per_deg_lon,
    )


def _district(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A rough district map: Chenggong in the far south, the four old districts by quadrant."""
    north = lat >= 25.03
    east = lon >= 102.72
    d = np.where(north, np.where(east, 1, 0), np.where(east, 2, 3))
    return np.where(lat < 24.92, 4, d).astype(np.int8)
