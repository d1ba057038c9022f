"""Thefts: mostly at night, a parked bike ridden (or several carried in a van) to a stash."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.simulator import _rand
from ingest.simulator.city import City
from ingest.simulator.config import CityConfig
from ingest.simulator.trips import (
    KIND_THEFT_RIDDEN,
    KIND_THEFT_VAN,
    Bikes,
    Parking,
    Trips,
    local_day_start_ms,
    with_durations,
)

_H = 3_600_000
PLACES = ("home", "work", "errand")
NEVER = np.iinfo(np.int64).max


@dataclass
class TheftState:
    """What carries over from day to day: who is stolen, where they rest, when tags went dark."""

    stolen: np.ndarray  # bool per bike
    rest_node: np.ndarray  # int32 per bike: home, or the stash once stolen
    dark_at_ms: np.ndarray  # int64 per bike
    stash_nodes: np.ndarray  # int32: the city's stash sites


def initial_state(cfg: CityConfig, city: City, bikes: Bikes) -> TheftState:
    g = _rand.rng(cfg.seed, _rand.P_THEFT)
    return TheftState(
        stolen=np.zeros(len(bikes.home), bool),
        rest_node=bikes.home.copy(),
        dark_at_ms=np.full(len(bikes.home), NEVER, np.int64),
        stash_nodes=g.choice(city.n_nodes, cfg.stash_sites).astype(np.int32),
    )


def _night_or_day(g: np.random.Generator, night: np.ndarray) -> np.ndarray:
    """Time of day in ms: night is 22:00-05:00 (7 h), day the 17 h between."""
    u_night = g.uniform(0, 7 * _H, len(night))
    u_night = np.where(u_night < 5 * _H, u_night, u_night + 17 * _H)
    return np.where(night, u_night, g.uniform(5 * _H, 22 * _H, len(night))).astype(np.int64)


def day_thefts(
    cfg: CityConfig,
    city: City,
    bikes: Bikes,
    state: TheftState,
    park: Parking,
    day: int,
) -> tuple[dict[str, np.ndarray], Trips]:
    """Choose the day's thefts inside the run window; return the truth rows and the theft trips.

    One loop iteration per theft event (hundreds a day at most), never per bike or read.
    Updates `state` (stolen, rest_node, dark_at_ms) in place.
    """
    g = _rand.rng(cfg.seed, _rand.P_THEFT, day)
    t0 = local_day_start_ms(day)
    mean_size = 1 + cfg.van_share * (cfg.van_size_max / 2)  # van sizes 2..max, mean (2+max)/2
    n_ev = int(g.poisson(cfg.theft_rate_per_day / mean_size))
    when = t0 + _night_or_day(g, g.random(n_ev) < cfg.theft_night_share)
    when = np.sort(when[(when >= cfg.start_ms) & (when < cfg.end_ms)])

    pkey = park.bike.astype(np.int64) * (1 << 28) + (park.start_ms - t0)
    rows: dict[str, list] = {k: [] for k in _COLUMNS}
    trips: list[Trips] = []
    for e, t in enumerate(when.tolist()):
        cand = g.integers(0, len(bikes.home), 64)
        i = np.searchsorted(pkey, cand.astype(np.int64) * (1 << 28) + (t - t0), "right") - 1
        ok = (i >= 0) & (park.bike[i] == cand) & (t < park.end_ms[i]) & ~state.stolen[cand]
        if not ok.any():
            continue
        first = int(np.argmax(ok))
        node = int(park.node[i[first]])
        group = [int(cand[first])]
        van = g.random() < cfg.van_share
        if van:
            here = park.at(node, t)
            others = np.setdiff1d(park.bike[here], [group[0]])
            others = others[~state.stolen[others]]
            want = int(g.integers(2, cfg.van_size_max + 1)) - 1
            group += g.permutation(others)[:want].tolist()
        gb = np.array(group, np.int32)
        n = len(gb)
        stolen_at = t + np.arange(n, dtype=np.int64) * g.integers(20_000, 90_000)
        depart = int(stolen_at[-1]) + int(g.integers(30_000, 180_000))
        stash = int(state.stash_nodes[g.integers(0, len(state.stash_nodes))])
        speed = g.uniform(8.0, 12.0) if van else g.uniform(4.0, 7.0)
        trip = with_durations(
            city,
            Trips(
                bike=gb,
                origin=np.full(n, node, np.int32),
                dest=np.full(n, stash, np.int32),
                start_ms=np.full(n, depart, np.int64),
                end_ms=np.zeros(n, np.int64),
                speed_mps=np.full(n, speed),
                row_first=np.full(n, g.random() < 0.5),
                kind=np.full(n, KIND_THEFT_VAN if van else KIND_THEFT_RIDDEN, np.uint8),
            ),
        )
        tampered = g.random(n) < cfg.tamper_share
        dur = trip.end_ms - trip.start_ms
        dark = np.where(tampered, depart + (g.uniform(0.1, 0.9, n) * dur).astype(np.int64), NEVER)
        delay = np.exp(
            np.log(cfg.report_delay_median_s) + cfg.report_delay_sigma * g.normal(size=n)
        )
        place = np.where(node == bikes.home[gb], 0, np.where(node == bikes.work[gb], 1, 2))
        state.stolen[gb] = True
        state.rest_node[gb] = stash
        state.dark_at_ms[gb] = dark
        trips.append(trip)
        for k, v in (
            ("bike", gb),
            ("stolen_at_ms", stolen_at),
            ("reported_at_ms", stolen_at + np.round(delay * 1000).astype(np.int64)),
            ("theft_node", np.full(n, node)),
            ("place", place),
            ("stash_node", np.full(n, stash)),
            ("van_group", np.full(n, day * 10_000 + e if van else -1)),
            ("tampered", tampered),
            ("dark_at_ms", dark),
            ("depart_ms", trip.start_ms),
            ("arrive_ms", trip.end_ms),
        ):
            rows[k].append(v)
    out = {
        k: np.concatenate(v).astype(_COLUMNS[k]) if v else np.empty(0, _COLUMNS[k])
        for k, v in rows.items()
    }
    empty = Trips(**{k: np.empty(0, a.dtype) for k, a in _EMPTY_TRIP.items()})
    return out, (Trips.concat(trips) if trips else empty)


_COLUMNS: dict[str, type] = {
    "bike": np.int32,
    "stolen_at_ms": np.int64,
    "reported_at_ms": np.int64,
    "theft_node": np.int32,
    "place": np.int8,
    "stash_node": np.int32,
    "van_group": np.int64,
    "tampered": np.bool_,
    "dark_at_ms": np.int64,
    "depart_ms": np.int64,
    "arrive_ms": np.int64,
}
_EMPTY_TRIP = {
    "bike": np.empty(0, np.int32),
    "origin": np.empty(0, np.int32),
    "dest": np.empty(0, np.int32),
    "start_ms": np.empty(0, np.int64),
    "end_ms": np.empty(0, np.int64),
    "speed_mps": np.empty(0, np.float64),
    "row_first": np.empty(0, bool),
    "kind": np.empty(0, np.uint8),
}


def without_stolen(trips: Trips, thefts: dict[str, np.ndarray], stolen_before: np.ndarray) -> Trips:
    """Drop owners' trips of bikes stolen earlier, or starting after today's theft of the bike."""
    cut = np.full(len(stolen_before), np.iinfo(np.int64).max, np.int64)
    cut[stolen_before] = np.iinfo(np.int64).min
    cut[thefts["bike"]] = thefts["stolen_at_ms"]
    return trips.take(np.flatnonzero(trips.start_ms < cut[trips.bike]))
