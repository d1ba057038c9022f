"""RFID read physics: a passage (tag near reader) becomes beacon reads with RSSI, misses, dups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.records.reads import FLAG_LOW_BATTERY, FLAG_MOBILE, FLAG_TAMPER
from ingest.simulator import _rand
from ingest.simulator.city import KIND_MOBILE, M_PER_DEG_LAT, City
from ingest.simulator.config import CityConfig

RSSI_MIN_DBM = -90
RSSI_MAX_DBM = -40
ANTENNA_HEIGHT_M = 4.0
VAN_ATTENUATION_DB = 8.0
TAMPER_FLAG_WINDOW_MS = 20_000  # the tag reports its tamper switch for its last beacons


@dataclass(frozen=True, slots=True)
class Passages:
    """One row per tag passing within read range of a reader (moving bike or moving patrol)."""

    bike: np.ndarray  # int32
    reader: np.ndarray  # int32 reader index
    t_c_ms: np.ndarray  # float64 true time of closest approach
    speed_mps: np.ndarray  # float64 relative speed
    lateral_m: np.ndarray  # float64 closest distance on the ground
    in_van: np.ndarray  # bool
    node: np.ndarray  # int32 intersection of closest approach
    dir_x: np.ndarray  # float32 direction of the mobile reader's travel (east)
    dir_y: np.ndarray  # float32 (north)

    def __len__(self) -> int:
        return len(self.bike)

    @staticmethod
    def concat(parts: list[Passages]) -> Passages:
        return Passages(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in Passages.__slots__}
        )


@dataclass(frozen=True, slots=True)
class TagState:
    """Per-bike tag facts the physics needs."""

    tag_id: np.ndarray  # uint64
    low_battery: np.ndarray  # bool
    dark_at_ms: np.ndarray  # int64: the tag is silent from this true time on (tampered)


@dataclass(frozen=True, slots=True)
class RawReads:
    """Reads before the gateway: tag, reader index, true time."""

    tag_id: np.ndarray  # uint64
    reader: np.ndarray
    t_ms: np.ndarray  # int64 true time
    rssi_dbm: np.ndarray  # int8
    flags: np.ndarray  # uint8
    lat: np.ndarray
    lon: np.ndarray


def passage_bounds(cfg: CityConfig, p: Passages) -> tuple[np.ndarray, np.ndarray]:
    """True [t_enter, t_exit) in ms: the chord of the read-range circle at the lateral offset."""
    half = np.sqrt(np.maximum(cfg.read_range_m**2 - p.lateral_m**2, 0.0)) / p.speed_mps * 1000.0
    return np.floor(p.t_c_ms - half).astype(np.int64), np.ceil(p.t_c_ms + half).astype(np.int64)


def generate_reads(
    cfg: CityConfig, city: City, tags: TagState, p: Passages, g: np.random.Generator
) -> RawReads:
    """Beacons inside each passage, thinned by misses, duplicated by overlapping antennas.

    Per-tag and per-reader facts are looked up once per passage and then spread to the reads
    with sequential gathers (src is sorted), which keeps the per-read work cache-friendly.
    """
    t_in, t_out = passage_bounds(cfg, p)
    iv = cfg.beacon_interval_ms
    tag = tags.tag_id[p.bike]
    # Each tag beacons on its own fixed phase (its clock started at a random moment).
    phase = (_rand.mix64(tag, cfg.seed) % np.uint64(iv)).astype(np.int64)
    first = -((phase - t_in) // iv)  # ceil((t_in - phase) / iv)
    last = -((phase - t_out) // iv) - 1
    cnt = np.maximum(last - first + 1, 0)
    src = np.repeat(np.arange(len(p), dtype=np.int64), cnt)
    k = np.arange(len(src), dtype=np.int64) + np.repeat(first - (np.cumsum(cnt) - cnt), cnt)
    t = np.repeat(phase, cnt) + k * iv

    dark_p = tags.dark_at_ms[p.bike]
    miss_p = np.where(p.in_van, cfg.van_miss_rate, cfg.miss_rate)
    keep = (g.random(len(src)) >= np.repeat(miss_p, cnt)) & (t < np.repeat(dark_p, cnt))
    src, t = src[keep], t[keep]

    along = (t - p.t_c_ms[src]) * (p.speed_mps[src] / 1000.0)
    d2 = along * along + (p.lateral_m**2 + ANTENNA_HEIGHT_M**2)[src]
    base_p = cfg.rssi_1m_dbm - np.where(p.in_van, VAN_ATTENUATION_DB, 0.0)
    # 10 n log10(d) = 5 n log10(d^2): skips a square root per read.
    rssi = base_p[src] - (5.0 * cfg.path_loss_exponent) * np.log10(d2)
    rssi += g.normal(0.0, cfg.rssi_sigma_db, len(src))
    mobile_p = city.reader_kind[p.reader] == KIND_MOBILE
    flags_p = np.where(tags.low_battery[p.bike], FLAG_LOW_BATTERY, 0) | np.where(
        mobile_p, FLAG_MOBILE, 0
    )
    flags = flags_p.astype(np.uint8)[src]
    tampered = t >= dark_p[src] - TAMPER_FLAG_WINDOW_MS
    flags[tampered] |= FLAG_TAMPER
    # A mobile reader's position at the read: its node plus how far it has driven past it.
    lat = np.full(len(src), np.nan)
    lon = np.full(len(src), np.nan)
    mob = np.flatnonzero(mobile_p[src])
    ms, node = src[mob], p.node[src[mob]]
    lat[mob] = city.node_lat[node] + along[mob] * p.dir_y[ms] / M_PER_DEG_LAT
    lon[mob] = city.node_lon[node] + along[mob] * p.dir_x[ms] / city.m_per_deg_lon

    # Overlapping antennas report the same beacon twice (same tag, reader, ts; own RSSI).
    # The copies are appended; the gateway stage puts everything into send order anyway.
    dup = np.flatnonzero(g.random(len(src)) < cfg.dup_rate)
    rssi = np.concatenate([rssi, rssi[dup] + g.normal(0.0, 2.0, len(dup))])
    rssi8 = np.clip(np.round(rssi), RSSI_MIN_DBM, RSSI_MAX_DBM).astype(np.int8)
    return RawReads(
        tag_id=with_copies(tag[src], dup),
        reader=with_copies(p.reader[src], dup),
        t_ms=with_copies(t, dup),
        rssi_dbm=rssi8,
        flags=with_copies(flags, dup),
        lat=with_copies(lat, dup),
        lon=with_copies(lon, dup),
    )


def with_copies(a: np.ndarray, dup: np.ndarray) -> np.ndarray:
    return np.concatenate([a, a[dup]])
