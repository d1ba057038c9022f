"""The simulation loop: days -> generation windows -> reads, emitted in chunks by arrival time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.records.reads import Reads
from ingest.simulator import _rand
from ingest.simulator.city import City, build_city
from ingest.simulator.config import CityConfig
from ingest.simulator.gateways import Outages, make_outages, send
from ingest.simulator.patrol import day_visits, parked_passages
from ingest.simulator.rfid import (
    Passages,
    TagState,
    generate_reads,
    passage_bounds,
    with_copies,
)
from ingest.simulator.thefts import day_thefts, initial_state, without_stolen
from ingest.simulator.trips import (
    KIND_RIDE,
    KIND_THEFT_VAN,
    Bikes,
    Trips,
    day_trips,
    expand_routes,
    local_day_of,
    local_day_start_ms,
    make_bikes,
    parking,
)

Columns = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class SimChunk:
    """Reads that arrive in [arrival_from_ms, arrival_to_ms), in send order, plus new truth.

    `reads` rows are ordered by (arrival_ms, gateway_id, retry copies last); `gateway_id`,
    `arrival_ms`, `batch_seq` and `is_retry` run parallel to them. Truth tables hold rows
    generated since the previous chunk (passages and tracks by generation window, thefts by day).
    """

    arrival_from_ms: int
    arrival_to_ms: int
    reads: Reads
    gateway_id: np.ndarray  # uint32
    arrival_ms: np.ndarray  # int64
    batch_seq: np.ndarray  # int64
    is_retry: np.ndarray  # bool
    passages: Columns  # tag_id, reader_id, t_enter_ms, t_exit_ms (true time)
    tracks: Columns  # tag_id, t_ms, lat, lon: stolen bikes from theft to stash
    thefts: Columns


class _Pending:
    """Reads generated but not yet due; kept in generation order so output is split-invariant."""

    def __init__(self, base_ms: int) -> None:
        self.parts: list[Columns] = []
        self.base_ms = base_ms

    def add(self, cols: Columns) -> None:
        if len(cols["arrival_ms"]):
            self.parts.append(cols)

    def pop_before(self, horizon_ms: int) -> Columns | None:
        """Remove and return the reads arriving before `horizon_ms`, in send order."""
        due_parts, keep = [], []
        for p in self.parts:
            due = p["arrival_ms"] < horizon_ms
            if due.any():
                due_parts.append({k: v[due] for k, v in p.items()})
            if not due.all():
                keep.append({k: v[~due] for k, v in p.items()} if due.any() else p)
        self.parts = keep
        if not due_parts:
            return None
        out = {k: np.concatenate([p[k] for p in due_parts]) for k in due_parts[0]}
        # Send order: (arrival, gateway, retry copy), ties in generation order, which does not
        # depend on how the output is chunked. Packing the row number into the key makes it
        # unique, so the faster unstable sort gives exactly the stable order.
        arrival, n = out["arrival_ms"], len(out["arrival_ms"])
        rel = arrival - arrival.min()
        gw = out["gateway_id"].astype(np.int64)
        retry = out["is_retry"].astype(np.int64)
        if rel.max() < (1 << 20) and n < (1 << 27):
            key = rel << np.int64(44) | gw << np.int64(28) | retry << np.int64(27)
            o = np.argsort(key | np.arange(n, dtype=np.int64))
        else:  # a long drain chunk: arrival needs more bits
            key = (arrival - self.base_ms) << np.int64(17) | gw << np.int64(1) | retry
            o = np.argsort(key, kind="stable")
        return {k: v[o] for k, v in out.items()}


def _empty_truth() -> tuple[list[Columns], list[Columns], list[Columns]]:
    return [], [], []


def _cat(parts: list[Columns], like: dict[str, np.dtype]) -> Columns:
    if not parts:
        return {k: np.empty(0, dt) for k, dt in like.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in like}


PASSAGE_DTYPES = {
    "tag_id": np.dtype(np.uint64),
    "reader_id": np.dtype(np.uint32),
    "t_enter_ms": np.dtype(np.int64),
    "t_exit_ms": np.dtype(np.int64),
}
TRACK_DTYPES = {
    "tag_id": np.dtype(np.uint64),
    "t_ms": np.dtype(np.int64),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
}
THEFT_DTYPES = {
    "tag_id": np.dtype(np.uint64),
    "stolen_at_ms": np.dtype(np.int64),
    "reported_at_ms": np.dtype(np.int64),
    "place": np.dtype(object),
    "theft_lat": np.dtype(np.float64),
    "theft_lon": np.dtype(np.float64),
    "stash_lat": np.dtype(np.float64),
    "stash_lon": np.dtype(np.float64),
    "van_group": np.dtype(np.int64),
    "tampered": np.dtype(np.bool_),
    "dark_at_ms": np.dtype(np.int64),
    "depart_ms": np.dtype(np.int64),
    "arrive_ms": np.dtype(np.int64),
}


class Simulation:
    """A configured run; `chunks()` yields SimChunks, memory bounded by the pending reads."""

    def __init__(self, cfg: CityConfig) -> None:
        self.cfg = cfg
        self.city: City = build_city(cfg)
        self.bikes: Bikes = make_bikes(cfg, self.city)
        self.outages: Outages = make_outages(cfg, self.city)
        # Seconds spent on per-day preparation (trips, parking, thefts, patrols) in chunks().
        self.day_setup_s = 0.0

    def chunks(self, chunk_s: float = 60.0) -> Iterator[SimChunk]:
        """SimChunks for consecutive arrival-time slices of `chunk_s` (ValueError if <= 0)."""
        if not chunk_s > 0:
            raise ValueError(f"chunk_s must be > 0 (got {chunk_s!r})")
        return self._chunks(chunk_s)

    def _chunks(self, chunk_s: float) -> Iterator[SimChunk]:
        cfg, city, bikes = self.cfg, self.city, self.bikes
        chunk_ms = max(1, round(chunk_s * 1000))
        state = initial_state(cfg, city, bikes)
        tags = TagState(bikes.tag_id, bikes.low_battery, state.dark_at_ms)
        pending = _Pending(cfg.start_ms)
        passages, tracks, thefts = _empty_truth()
        emit_from = cfg.start_ms  # arrival is true time: nothing arrives before the run starts
        emit_to = emit_from + chunk_ms
        win_ms = round(cfg.gen_window_s * 1000)
        slowest = min(cfg.speed_min_mps, cfg.patrol_speed_mps, 4.0)  # 4 m/s: slowest thief
        lead_ms = int(np.ceil(cfg.read_range_m / slowest * 1000)) + 1
        for day in range(local_day_of(cfg.start_ms), local_day_of(cfg.end_ms - 1) + 1):
            t0, t1 = local_day_start_ms(day), local_day_start_ms(day + 1)
            clock = time.perf_counter()
            stolen_before = state.stolen.copy()
            trips = day_trips(cfg, city, bikes, day)
            trips = trips.take(np.flatnonzero(~stolen_before[trips.bike]))
            park = parking(len(bikes.home), city.n_nodes, state.rest_node, trips, t0, t1)
            theft_rows, theft_trips = day_thefts(cfg, city, bikes, state, park, day)
            del park  # rebuilt below with the theft trips; free it first (full scale: ~200 MB)
            trips = Trips.concat([without_stolen(trips, theft_rows, stolen_before), theft_trips])
            rest = np.where(stolen_before, state.rest_node, bikes.home)
            park = parking(len(bikes.home), city.n_nodes, rest, trips, t0, t1)
            thefts.append(self._theft_truth(theft_rows))
            trips = trips.take(np.argsort(trips.start_ms, kind="stable"))
            visits = day_visits(cfg, city, day)
            self.day_setup_s += time.perf_counter() - clock
            lo_day, hi_day = max(t0, cfg.start_ms), min(t1, cfg.end_ms)
            for w0 in range(lo_day - (lo_day - t0) % win_ms, hi_day, win_ms):
                w1 = min(w0 + win_ms, t1)
                a, b = max(w0, cfg.start_ms), min(w1, cfg.end_ms)
                g = _rand.rng(cfg.seed, _rand.P_WINDOW, day, (w0 - t0) // win_ms)
                sel = slice(*np.searchsorted(trips.start_ms, [a, b]))
                vsel = slice(*np.searchsorted(visits.t_ms, [a, b]))
                wt = trips.take(np.arange(len(trips))[sel])
                p_trip, track = self._trip_passages(wt, g)
                p_park = parked_passages(cfg, visits.window(vsel), park, g)
                p = Passages.concat([p_trip, p_park])
                self._add_reads(p, tags, g, pending)
                passages.append(self._passage_truth(p))
                tracks.append(track)
                # Later windows only add passages centred at >= b, whose reads start at most
                # one half-chord (range / slowest speed) earlier.
                horizon = b - lead_ms
                while emit_to <= horizon:
                    yield self._chunk(
                        pending.pop_before(emit_to), emit_from, emit_to, passages, tracks, thefts
                    )
                    passages, tracks, thefts = _empty_truth()
                    emit_from, emit_to = emit_to, emit_to + chunk_ms
        # Drain: late flushes and retries can arrive after the run's end.
        while pending.parts or passages or tracks or thefts:
            far = int(max(p["arrival_ms"].max() for p in pending.parts)) + 1 if pending.parts else 0
            emit_to = max(emit_to, far)
            yield self._chunk(
                pending.pop_before(emit_to), emit_from, emit_to, passages, tracks, thefts
            )
            passages, tracks, thefts = _empty_truth()
            emit_from, emit_to = emit_to, emit_to + chunk_ms

    # ---- steps ---------------------------------------------------------------------------
    def _trip_passages(self, wt: Trips, g: np.random.Generator) -> tuple[Passages, Columns]:
        city, cfg = self.city, self.cfg
        nv = expand_routes(city, wt)
        stolen_trip = wt.kind[nv.trip] != KIND_RIDE
        sv = np.flatnonzero(stolen_trip)
        track = {
            "tag_id": self.bikes.tag_id[wt.bike[nv.trip[sv]]],
            "t_ms": np.round(nv.t_ms[sv]).astype(np.int64),
            "lat": city.node_lat[nv.node[sv]],
            "lon": city.node_lon[nv.node[sv]],
        }
        track = {k: v[nv.t_ms[sv] < cfg.end_ms] for k, v in track.items()}
        r = city.reader_at_node[nv.node]
        hit = np.flatnonzero(r >= 0)
        tr = nv.trip[hit]
        return (
            Passages(
                bike=wt.bike[tr],
                reader=r[hit],
                t_c_ms=nv.t_ms[hit],
                speed_mps=wt.speed_mps[tr],
                lateral_m=g.uniform(0.0, 0.7 * cfg.read_range_m, len(hit)),
                in_van=wt.kind[tr] == KIND_THEFT_VAN,
                node=nv.node[hit],
                dir_x=nv.dir_x[hit],
                dir_y=nv.dir_y[hit],
            ),
            track,
        )

    def _add_reads(
        self, p: Passages, tags: TagState, g: np.random.Generator, pending: _Pending
    ) -> None:
        cfg, city = self.cfg, self.city
        raw = generate_reads(cfg, city, tags, p, g)
        inside = (raw.t_ms >= cfg.start_ms) & (raw.t_ms < cfg.end_ms)
        cols = {
            "tag_id": raw.tag_id,
            "reader": raw.reader,
            "t_ms": raw.t_ms,
            "rssi_dbm": raw.rssi_dbm,
            "flags": raw.flags,
            "lat": raw.lat,
            "lon": raw.lon,
        }
        if not inside.all():
            cols = {k: v[inside] for k, v in cols.items()}
        s = send(cfg, city, self.outages, cols["reader"], cols["t_ms"])
        r = s.retry_src  # whole retried batches are appended as second copies
        pending.add(
            {
                "tag_id": with_copies(cols["tag_id"], r),
                "reader_id": with_copies(city.reader_id[cols["reader"]], r),
                "ts_ms": s.ts_ms,
                "rssi_dbm": with_copies(cols["rssi_dbm"], r),
                "flags": with_copies(cols["flags"], r),
                "lat": with_copies(cols["lat"], r),
                "lon": with_copies(cols["lon"], r),
                "gateway_id": city.gateway_id[s.gateway],
                "arrival_ms": s.arrival_ms,
                "batch_seq": s.batch_seq,
                "is_retry": s.is_retry,
            }
        )

    def _passage_truth(self, p: Passages) -> Columns:
        t_in, t_out = passage_bounds(self.cfg, p)
        keep = (t_in < self.cfg.end_ms) & (t_out > self.cfg.start_ms)
        return {
            "tag_id": self.bikes.tag_id[p.bike[keep]],
            "reader_id": self.city.reader_id[p.reader[keep]],
            "t_enter_ms": t_in[keep],
            "t_exit_ms": t_out[keep],
        }

    def _theft_truth(self, rows: Columns) -> Columns:
        city = self.city
        tn, sn = rows["theft_node"], rows["stash_node"]
        return {
            "tag_id": self.bikes.tag_id[rows["bike"]],
            "stolen_at_ms": rows["stolen_at_ms"],
            "reported_at_ms": rows["reported_at_ms"],
            "place": np.asarray(("home", "work", "errand"), dtype=object)[rows["place"]],
            "theft_lat": city.node_lat[tn],
            "theft_lon": city.node_lon[tn],
            "stash_lat": city.node_lat[sn],
            "stash_lon": city.node_lon[sn],
            "van_group": rows["van_group"],
            "tampered": rows["tampered"],
            "dark_at_ms": rows["dark_at_ms"],
            "depart_ms": rows["depart_ms"],
            "arrive_ms": rows["arrive_ms"],
        }

    def _chunk(
        self,
        cols: Columns | None,
        t_from: int,
        t_to: int,
        passages: list[Columns],
        tracks: list[Columns],
        thefts: list[Columns],
    ) -> SimChunk:
        if cols is None:
            reads = Reads.empty()
            extra = {
                "gateway_id": np.empty(0, np.uint32),
                "arrival_ms": np.empty(0, np.int64),
                "batch_seq": np.empty(0, np.int64),
                "is_retry": np.empty(0, bool),
            }
        else:
            reads = Reads(**{k: cols[k] for k in Reads.__slots__})
            extra = {k: cols[k] for k in ("gateway_id", "arrival_ms", "batch_seq", "is_retry")}
        return SimChunk(
            arrival_from_ms=t_from,
            arrival_to_ms=t_to,
            reads=reads,
            passages=_cat(passages, PASSAGE_DTYPES),
            tracks=_cat(tracks, TRACK_DTYPES),
            thefts=_cat(thefts, THEFT_DTYPES),
            **extra,
        )
