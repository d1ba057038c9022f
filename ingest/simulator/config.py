"""The simulator's one configuration object: a frozen dataclass, units in the names, validated."""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, fields

# 2026-03-02 00:00 local time in Kunming (UTC+8), as UTC epoch ms.
DEFAULT_START_MS = 1_772_380_800_000
LOCAL_UTC_OFFSET_MS = 8 * 3600 * 1000
DAY_MS = 86_400_000


def day_start_ms(day: str, now_ms: int | None = None) -> int:
    """Midnight (city time, UTC+8) of `day` as UTC epoch ms: 'yesterday' or an ISO date
    (YYYY-MM-DD). Raises ValueError naming what it could not read."""
    local = dt.timezone(dt.timedelta(milliseconds=LOCAL_UTC_OFFSET_MS))
    if day == "yesterday":
        now = dt.datetime.fromtimestamp((now_ms or time.time() * 1000) / 1000, local)
        date = now.date() - dt.timedelta(days=1)
    else:
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"{day!r} is neither 'yesterday' nor a date YYYY-MM-DD") from None
    midnight = dt.datetime(date.year, date.month, date.day, tzinfo=local)
    return int(midnight.timestamp() * 1000)


# Full-scale grid: 250 m spacing over the Kunming box gives ~16 k intersections.
_FULL_ROWS = 133
_FULL_COLS = 121


@dataclass(frozen=True, kw_only=True, slots=True)
class CityConfig:
    """Everything that shapes a simulated city and its day; same config + seed = same output.

    `scale` shrinks bikes, readers, gateways and the covered area together (1.0 is the full
    Kunming scale of ~2 M bikes, ~3.2 k fixed readers, ~80 M reads/day); `theft_rate_per_day`
    is absolute and not scaled. Invalid values raise ValueError naming the field.
    """

    seed: int = 0
    scale: float = 1.0
    start_ms: int = DEFAULT_START_MS
    duration_s: float = 3600.0

    # City and roads.
    lat_min: float = 24.85
    lat_max: float = 25.15
    lon_min: float = 102.60
    lon_max: float = 102.90
    grid_spacing_m: float = 250.0
    grid_jitter_m: float = 40.0
    reader_fraction: float = 0.2  # share of intersections with a fixed reader
    mobile_readers_full: int = 40  # patrol vehicles at scale 1.0
    readers_per_gateway_block: int = 6  # a gateway serves a block of n x n intersections

    # Bikes and trips.
    bikes: int | None = None  # None: 2 M x scale
    ride_prob: float = 0.65  # share of bikes ridden on a given day
    commute_share: float = 0.7  # riders that commute home -> work -> home
    errand_prob: float = 0.35  # chance a rider also does a round-trip errand
    speed_min_mps: float = 3.5
    speed_max_mps: float = 7.0

    # RFID physics.
    beacon_interval_ms: int = 1000
    read_range_m: float = 30.0
    miss_rate: float = 0.1
    van_miss_rate: float = 0.5  # tags inside a metal van body are read less often
    dup_rate: float = 0.03  # share of reads duplicated by an overlapping antenna
    rssi_1m_dbm: float = -38.0
    path_loss_exponent: float = 1.6
    rssi_sigma_db: float = 3.0
    low_battery_share: float = 0.02

    # Gateways.
    batch_interval_ms: int = 1000
    retry_rate: float = 0.01  # share of batches sent twice
    offline_rate_per_day: float = 0.1  # outages per gateway per day
    offline_min_s: float = 300.0
    offline_max_s: float = 14_400.0
    clock_skew_sigma_s: float = 2.0

    # Patrols.
    patrol_speed_mps: float = 8.0
    patrol_parked_read_prob: float = 0.03  # a parked bike near the road is in range

    # Thefts.
    theft_rate_per_day: float = 60.0
    theft_night_share: float = 0.75  # stolen between 22:00 and 05:00 local time
    van_share: float = 0.2  # share of theft events where a van takes several bikes
    van_size_max: int = 6
    tamper_share: float = 0.25  # tag tampered so it goes dark on the way to the stash
    stash_sites: int = 12
    report_delay_median_s: float = 3600.0
    report_delay_sigma: float = 1.0  # log-normal sigma of the report delay

    # Generation: simulated-time windows with their own random streams (not the output chunks).
    gen_window_s: float = 300.0

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def end_ms(self) -> int:
        return self.start_ms + round(self.duration_s * 1000)

    @property
    def n_bikes(self) -> int:
        if self.bikes is not None:
            return self.bikes
        return max(10, round(2_000_000 * self.scale))

    @property
    def grid_shape(self) -> tuple[int, int]:
        f = math.sqrt(self.scale)
        return max(6, round(_FULL_ROWS * f)), max(6, round(_FULL_COLS * f))

    @property
    def n_mobile_readers(self) -> int:
        return max(1, round(self.mobile_readers_full * math.sqrt(self.scale)))

    @property
    def max_skew_ms(self) -> int:
        return round(3 * self.clock_skew_sigma_s * 1000)


def _validate(c: CityConfig) -> None:
    def bad(name: str, msg: str) -> ValueError:
        return ValueError(f"CityConfig.{name}: {msg} (got {getattr(c, name)!r})")

    for f in fields(c):
        v = getattr(c, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f.name, "must be finite")
    positive = [
        "scale",
        "duration_s",
        "grid_spacing_m",
        "read_range_m",
        "speed_min_mps",
        "patrol_speed_mps",
        "offline_min_s",
        "report_delay_median_s",
        "gen_window_s",
        "beacon_interval_ms",
        "batch_interval_ms",
        "readers_per_gateway_block",
        "van_size_max",
        "stash_sites",
    ]
    for name in positive:
        if getattr(c, name) <= 0:
            raise bad(name, "must be > 0")
    shares = [
        "reader_fraction",
        "ride_prob",
        "commute_share",
        "errand_prob",
        "miss_rate",
        "van_miss_rate",
        "dup_rate",
        "low_battery_share",
        "retry_rate",
        "patrol_parked_read_prob",
        "theft_night_share",
        "van_share",
        "tamper_share",
    ]
    for name in shares:
        if not 0.0 <= getattr(c, name) <= 1.0:
            raise bad(name, "must be between 0 and 1")
    for name in ("grid_jitter_m", "offline_rate_per_day", "clock_skew_sigma_s"):
        if getattr(c, name) < 0:
            raise bad(name, "must be >= 0")
    for name in ("theft_rate_per_day", "report_delay_sigma", "rssi_sigma_db"):
        if getattr(c, name) < 0:
            raise bad(name, "must be >= 0")
    if c.scale > 4:
        raise bad("scale", "must be <= 4")
    if c.duration_s > 30 * 86400:
        raise bad("duration_s", "must be at most 30 days")
    if c.miss_rate >= 1.0:
        raise bad("miss_rate", "must be < 1")
    if c.grid_jitter_m >= c.grid_spacing_m / 3:
        raise bad("grid_jitter_m", "must be < grid_spacing_m / 3 so roads keep their order")
    if c.speed_max_mps < c.speed_min_mps:
        raise bad("speed_max_mps", "must be >= speed_min_mps")
    if c.offline_max_s < c.offline_min_s:
        raise bad("offline_max_s", "must be >= offline_min_s")
    if c.van_size_max < 2:
        raise bad("van_size_max", "must be >= 2")
    if c.bikes is not None and c.bikes < 1:
        raise bad("bikes", "must be >= 1 or None")
    if not (-90 <= c.lat_min < c.lat_max <= 90 and -180 <= c.lon_min < c.lon_max <= 180):
        raise bad("lat_min", "the lat/lon box must be non-empty and on Earth")
    if c.beacon_interval_ms < 10:
        raise bad("beacon_interval_ms", "must be >= 10")
    if c.scale * c.reader_fraction > 1.5:
        # Gateway ids must stay below 2^16 (they are packed into the send-order key).
        raise bad("reader_fraction", "too many readers for this scale")
    if c.batch_interval_ms < 250:
        # A late flush is sent in the first 201 ms after an outage, before the next live batch.
        raise bad("batch_interval_ms", "must be >= 250")
    if c.gen_window_s * 1000 < c.batch_interval_ms:
        raise bad("gen_window_s", "must be at least one batch interval")
