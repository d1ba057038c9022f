"""Patrol vehicles with mobile readers: loop routes, shifts, and the parked bikes they pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.simulator import _rand
from ingest.simulator.city import KIND_MOBILE, City
from ingest.simulator.config import DAY_MS, CityConfig
from ingest.simulator.rfid import Passages
from ingest.simulator.trips import Parking, local_day_start_ms

SHIFT_MS = 10 * 3_600_000
SHIFT_STARTS_H = (6, 14, 22)  # vehicles rotate through day, evening and night shifts


@dataclass(frozen=True, slots=True)
class PatrolVisits:
    """A patrol vehicle at an intersection: reader index, node, true time, travel direction."""

    reader: np.ndarray  # int32
    node: np.ndarray  # int32
    t_ms: np.ndarray  # float64, sorted
    dir_x: np.ndarray  # float32
    dir_y: np.ndarray  # float32

    def window(self, s: slice) -> PatrolVisits:
        return PatrolVisits(*(getattr(self, k)[s] for k in PatrolVisits.__slots__))


def _loop(city: City, base: int, g: np.random.Generator) -> np.ndarray:
    """Nodes of a rectangular loop with `base` as its south-west corner (clipped to the grid)."""
    i0, j0 = divmod(base, city.cols)
    i0, j0 = min(i0, city.rows - 2), min(j0, city.cols - 2)
    i1 = min(city.rows - 1, i0 + int(g.integers(2, 10)))
    j1 = min(city.cols - 1, j0 + int(g.integers(2, 10)))
    east = [(i0, j) for j in range(j0, j1)]
    north = [(i, j1) for i in range(i0, i1)]
    west = [(i1, j) for j in range(j1, j0, -1)]
    south = [(i, j0) for i in range(i1, i0, -1)]
    return np.array([i * city.cols + j for i, j in east + north + west + south], np.int32)


def day_visits(cfg: CityConfig, city: City, day: int) -> PatrolVisits:
    """All patrol intersection visits of one local day (a small table: tens of vehicles)."""
    g = _rand.rng(cfg.seed, _rand.P_PATROL)  # routes are the same every day
    t0 = local_day_start_ms(day)
    parts: list[tuple[np.ndarray, ...]] = []
    mobile = np.flatnonzero(city.reader_kind == KIND_MOBILE)
    for n, r in enumerate(mobile):  # one iteration per vehicle, not per visit
        loop = _loop(city, int(city.reader_node[r]), g)
        nxt = np.roll(loop, -1)
        dx = city.node_x[nxt] - city.node_x[loop]
        dy = city.node_y[nxt] - city.node_y[loop]
        seg = np.hypot(dx, dy)
        lap_m = float(seg.sum())
        laps = int(SHIFT_MS / 1000 * cfg.patrol_speed_mps / lap_m) + 1
        cum = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
        dist = (np.arange(laps)[:, None] * lap_m + cum[None, :]).ravel()
        idx_all = np.tile(np.arange(len(loop)), laps)
        # Yesterday's night shift runs on past midnight into today.
        for d0 in (t0 - DAY_MS, t0):
            shift0 = d0 + SHIFT_STARTS_H[n % len(SHIFT_STARTS_H)] * 3_600_000
            t = shift0 + dist / cfg.patrol_speed_mps * 1000.0
            keep = (t < shift0 + SHIFT_MS) & (t >= t0) & (t < t0 + DAY_MS)
            idx = idx_all[keep]
            parts.append(
                (
                    np.full(int(keep.sum()), r, np.int32),
                    loop[idx],
                    t[keep],
                    (dx / seg)[idx].astype(np.float32),
                    (dy / seg)[idx].astype(np.float32),
                )
            )
    cols = [np.concatenate([p[k] for p in parts]) for k in range(5)]
    o = np.argsort(cols[2], kind="stable")
    return PatrolVisits(*(c[o] for c in cols))


def parked_passages(
    cfg: CityConfig, visits: PatrolVisits, park: Parking, g: np.random.Generator
) -> Passages:
    """Passages of patrol vehicles past bikes parked at the intersections they drive through."""
    by_node, ptr = park.by_node, park.node_ptr
    lo, hi = ptr[visits.node], ptr[visits.node + 1]
    cnt = hi - lo
    v = np.repeat(np.arange(len(visits.node)), cnt)
    j = by_node[lo[v] + np.arange(len(v)) - (np.cumsum(cnt) - cnt)[v]]
    t = visits.t_ms[v]
    here = (park.start_ms[j] <= t) & (t < park.end_ms[j])
    here &= g.random(len(v)) < cfg.patrol_parked_read_prob
    v, j = v[here], j[here]
    n = len(v)
    return Passages(
        bike=park.bike[j],
        reader=visits.reader[v],
        t_c_ms=visits.t_ms[v],
        speed_mps=np.full(n, cfg.patrol_speed_mps),
        lateral_m=g.uniform(3.0, 0.8 * cfg.read_range_m, n),
        in_van=np.zeros(n, bool),
        node=visits.node[v],
        dir_x=visits.dir_x[v],
        dir_y=visits.dir_y[v],
    )
