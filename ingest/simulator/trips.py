"""Bikes, their daily trips along the road grid, where they stand parked, and route expansion."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ingest.simulator import _rand
from ingest.simulator.city import City
from ingest.simulator.config import DAY_MS, LOCAL_UTC_OFFSET_MS, CityConfig

TAG_BASE = 1_000_000_000_000  # tag_id = TAG_BASE + bike index
KIND_RIDE = 0
KIND_THEFT_RIDDEN = 1
KIND_THEFT_VAN = 2
_H = 3_600_000


@dataclass(frozen=True, slots=True)
class Bikes:
    tag_id: np.ndarray  # uint64
    home: np.ndarray  # int32 node
    work: np.ndarray  # int32 node
    low_battery: np.ndarray  # bool: tag flags FLAG_LOW_BATTERY on every read


@dataclass(frozen=True, slots=True)
class Trips:
    """Columnar trips; every column has one entry per trip."""

    bike: np.ndarray  # int32
    origin: np.ndarray  # int32 node
    dest: np.ndarray  # int32 node
    start_ms: np.ndarray  # int64 true time
    end_ms: np.ndarray  # int64 true time
    speed_mps: np.ndarray  # float64
    row_first: np.ndarray  # bool: the L-shaped route runs along the row first
    kind: np.ndarray  # uint8 KIND_*

    def __len__(self) -> int:
        return len(self.bike)

    def take(self, idx: np.ndarray) -> Trips:
        return Trips(**{k: getattr(self, k)[idx] for k in self.__slots__})

    @staticmethod
    def concat(parts: list[Trips]) -> Trips:
        return Trips(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Trips.__slots__})


def local_day_start_ms(day: int) -> int:
    """UTC epoch ms of local (UTC+8) midnight of local day number `day`."""
    return day * DAY_MS - LOCAL_UTC_OFFSET_MS


def local_day_of(ms: int) -> int:
    return (ms + LOCAL_UTC_OFFSET_MS) // DAY_MS


def make_bikes(cfg: CityConfig, city: City) -> Bikes:
    g = _rand.rng(cfg.seed, _rand.P_CITY, 1)
    n = cfg.n_bikes
    hi = g.integers(0, city.rows, n)
    hj = g.integers(0, city.cols, n)
    wi = np.clip(hi + np.clip(np.round(g.normal(0, 10, n)), -25, 25), 0, city.rows - 1)
    wj = np.clip(hj + np.clip(np.round(g.normal(0, 10, n)), -25, 25), 0, city.cols - 1)
    return Bikes(
        tag_id=(TAG_BASE + np.arange(n)).astype(np.uint64),
        home=(hi * city.cols + hj).astype(np.int32),
        work=(wi * city.cols + wj).astype(np.int32),
        low_battery=g.random(n) < cfg.low_battery_share,
    )


def _near(g: np.random.Generator, city: City, node: np.ndarray, sd: float, lim: int) -> np.ndarray:
    i = node // city.cols + np.clip(np.round(g.normal(0, sd, len(node))), -lim, lim)
    j = node % city.cols + np.clip(np.round(g.normal(0, sd, len(node))), -lim, lim)
    return (np.clip(i, 0, city.rows - 1) * city.cols + np.clip(j, 0, city.cols - 1)).astype(
        np.int32
    )


def day_trips(cfg: CityConfig, city: City, bikes: Bikes, day: int) -> Trips:
    """The owners' trips of one local day; no bike has overlapping trips (times are clipped)."""
    g = _rand.rng(cfg.seed, _rand.P_SCHEDULE, day)
    n = len(bikes.home)
    t0 = local_day_start_ms(day)
    rider = g.random(n) < cfg.ride_prob
    commuter = rider & (g.random(n) < cfg.commute_share)
    errand = rider & (~commuter | (g.random(n) < cfg.errand_prob))
    cb = np.flatnonzero(commuter)
    eb = np.flatnonzero(errand)
    ecom = commuter[eb]  # commuters run their errand from work at lunch time
    e_from = np.where(ecom, bikes.work[eb], bikes.home[eb])
    e_dest = _near(g, city, e_from, 4.0, 12)
    nc, ne = len(cb), len(eb)
    morning = t0 + np.clip(g.normal(8 * _H, 0.75 * _H, nc), 5.5 * _H, 10.5 * _H)
    evening = t0 + np.clip(g.normal(18 * _H, 1.0 * _H, nc), 15.5 * _H, 22 * _H)
    e_start = t0 + np.where(ecom, g.uniform(12 * _H, 13.5 * _H, ne), g.uniform(8 * _H, 20 * _H, ne))
    stay = np.where(ecom, g.uniform(0.2 * _H, 1.0 * _H, ne), g.uniform(0.25 * _H, 2 * _H, ne))
    bike = np.concatenate([cb, cb, eb, eb]).astype(np.int32)
    origin = np.concatenate([bikes.home[cb], bikes.work[cb], e_from, e_dest]).astype(np.int32)
    dest = np.concatenate([bikes.work[cb], bikes.home[cb], e_dest, e_from]).astype(np.int32)
    speed = g.uniform(cfg.speed_min_mps, cfg.speed_max_mps, len(bike))
    row_first = g.random(len(bike)) < 0.5
    out_start = np.concatenate([morning, evening, e_start]).astype(np.int64)
    length = city.route_length_m(
        origin // city.cols, origin % city.cols, dest // city.cols, dest % city.cols, row_first
    )
    dur = np.round(length / speed * 1000).astype(np.int64)
    # The errand's return leaves after the stay, counted from the outbound arrival.
    back_start = out_start[2 * nc :] + dur[2 * nc : 2 * nc + ne] + stay.astype(np.int64)
    start = np.concatenate([out_start, back_start])
    return Trips(
        bike=bike,
        origin=origin,
        dest=dest,
        start_ms=start,
        end_ms=start + dur,
        speed_mps=speed,
        row_first=row_first,
        kind=np.zeros(len(bike), np.uint8),
    )


def with_durations(city: City, trips: Trips) -> Trips:
    """Recompute end_ms from the route length and speed (for trips built elsewhere)."""
    o, d = trips.origin, trips.dest
    length = city.route_length_m(
        o // city.cols, o % city.cols, d // city.cols, d % city.cols, trips.row_first
    )
    return replace(
        trips, end_ms=trips.start_ms + np.round(length / trips.speed_mps * 1000).astype(np.int64)
    )


@dataclass(frozen=True, slots=True)
class Parking:
    """Where each bike stands between trips: intervals [start_ms, end_ms) at a node.

    Rows are sorted by (bike, start_ms); `by_node[node_ptr[n]:node_ptr[n + 1]]` lists the rows at
    node n (a CSR index for "who is parked here").
    """

    bike: np.ndarray  # int32
    node: np.ndarray  # int32
    start_ms: np.ndarray  # int64
    end_ms: np.ndarray  # int64
    by_node: np.ndarray  # int64 row numbers grouped by node
    node_ptr: np.ndarray  # int64, n_nodes + 1 offsets into by_node

    def at(self, node: int, t_ms: int) -> np.ndarray:
        """Row numbers of the bikes parked at `node` at true time `t_ms`."""
        rows = self.by_node[self.node_ptr[node] : self.node_ptr[node + 1]]
        return rows[(self.start_ms[rows] <= t_ms) & (t_ms < self.end_ms[rows])]


def sort_by_bike(trips: Trips, t0: int) -> Trips:
    """Trips ordered by (bike, start_ms) with one composite-key sort (starts within 74 h of t0)."""
    key = trips.bike.astype(np.int64) << np.int64(28) | (trips.start_ms - t0)
    return trips.take(np.argsort(key, kind="stable"))


def parking(
    n_bikes: int, n_nodes: int, rest_node: np.ndarray, trips: Trips, t0: int, t1: int
) -> Parking:
    """Parking intervals over [t0, t1) given each bike's node at t0 and its trips (no overlaps).

    Each bike has one interval before its first trip (or all day) and one after each trip;
    rows are placed straight into (bike, start) order by counting, without a second sort.
    """
    tr = sort_by_bike(trips, t0)
    tb = tr.bike
    per_bike = np.bincount(tb, minlength=n_bikes)
    first_trip = np.cumsum(per_bike) - per_bike  # index of each bike's first trip in tr
    offs = first_trip + np.arange(n_bikes)  # row of each bike's first interval
    has_next = np.zeros(len(tb), bool)
    has_next[:-1] = tb[1:] == tb[:-1]
    nxt = np.full(len(tb), t1, np.int64)
    nxt[has_next] = tr.start_ms[1:][has_next[:-1]]
    first_start = np.full(n_bikes, t1, np.int64)
    rode = per_bike > 0
    first_start[rode] = tr.start_ms[first_trip[rode]]
    n = n_bikes + len(tb)
    bike, node = np.empty(n, np.int32), np.empty(n, np.int32)
    start, end = np.empty(n, np.int64), np.empty(n, np.int64)
    pos = offs[tb] + 1 + (np.arange(len(tb)) - first_trip[tb])
    bike[offs], node[offs], start[offs], end[offs] = np.arange(n_bikes), rest_node, t0, first_start
    bike[pos], node[pos], start[pos], end[pos] = tb, tr.dest, tr.end_ms, nxt
    # Empty intervals (a trip leaving the moment another ends) stay: they never match a time.
    # Node ids fit 16 bits at any allowed scale, where numpy's stable sort is a radix sort.
    nkey = node.astype(np.uint16) if n_nodes <= 65_536 else node
    by_node = np.argsort(nkey, kind="stable")
    ptr = np.searchsorted(node[by_node], np.arange(n_nodes + 1))
    return Parking(bike, node, start, end, by_node, ptr)


@dataclass(frozen=True, slots=True)
class NodeVisits:
    trip: np.ndarray  # int64 index into the expanded Trips
    node: np.ndarray  # int32
    t_ms: np.ndarray  # float64 true time at the intersection
    dir_x: np.ndarray  # float32 unit direction of travel (east)
    dir_y: np.ndarray  # float32 (north)


def expand_routes(city: City, trips: Trips) -> NodeVisits:
    """Every intersection each trip crosses, with the true time it is crossed (no per-trip loop)."""
    cols = city.cols
    oi, oj = trips.origin // cols, trips.origin % cols
    di, dj = trips.dest // cols, trips.dest % cols
    rf = trips.row_first
    si, sj = np.sign(di - oi), np.sign(dj - oj)
    n1 = np.where(rf, np.abs(dj - oj), np.abs(di - oi))
    n2 = np.where(rf, np.abs(di - oi), np.abs(dj - oj))
    cnt = (n1 + n2 + 1).astype(np.int64)
    trip = np.repeat(np.arange(len(trips), dtype=np.int64), cnt)
    starts = np.cumsum(cnt) - cnt
    k = np.arange(int(cnt.sum()), dtype=np.int64) - starts[trip]
    leg1 = k <= n1[trip]
    k2 = k - n1[trip]
    Oi, Oj, Di, Dj, Si, Sj, RF = (a[trip] for a in (oi, oj, di, dj, si, sj, rf))
    # Row first: along row Oi to column Dj, then along column Dj to row Di (column first mirrors).
    i = np.where(RF, np.where(leg1, Oi, Oi + Si * k2), np.where(leg1, Oi + Si * k, Di))
    j = np.where(RF, np.where(leg1, Oj + Sj * k, Dj), np.where(leg1, Oj, Oj + Sj * k2))
    cr, cc = city.cum_row, city.cum_col
    len1 = np.where(RF, np.abs(cr[Oi, Dj] - cr[Oi, Oj]), np.abs(cc[Oj, Di] - cc[Oj, Oi]))
    d_rf = np.where(leg1, np.abs(cr[Oi, j] - cr[Oi, Oj]), len1 + np.abs(cc[Dj, i] - cc[Dj, Oi]))
    d_cf = np.where(leg1, np.abs(cc[Oj, i] - cc[Oj, Oi]), len1 + np.abs(cr[Di, j] - cr[Di, Oj]))
    dist = np.where(RF, d_rf, d_cf)
    along_row = leg1 == RF  # moving east/west on this leg
    dir_x = np.where(along_row, Sj, 0).astype(np.float32)
    dir_y = np.where(along_row, 0, Si).astype(np.float32)
    t = trips.start_ms[trip] + dist / trips.speed_mps[trip] * 1000.0
    return NodeVisits(
        trip=trip, node=(i * cols + j).astype(np.int32), t_ms=t, dir_x=dir_x, dir_y=dir_y
    )
