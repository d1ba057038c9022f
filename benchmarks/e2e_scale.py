"""What `--scale hour|day|N` means for the e2e benchmark: a simulator configuration.

- `hour`: the full city (scale 1.0, ~2 M bikes) in the morning rush hour 08:00-09:00, ~11.5 M reads.
- `day`: the full city for a whole day from local midnight, ~80 M reads.
- `night`: the full city from midnight to 06:00, the start of `day`: few reads and, paced by read
  count, the day's densest alert bursts (stolen bikes move at night), in a run of minutes.
- `N` <= 1 (e.g. `0.1`): the rush hour of a city shrunk by N (bikes, readers, area), ~N x 11.5 M
  reads.
- `N` > 1 (e.g. `2000000`): about N reads: the rush hour of a city of scale N / 11.5 M, or for
  N beyond one full-scale hour, the full city over N / 11.5 M hours from 08:00.

Simulated time is placed on a recent past day, so reads pass the pipeline's timestamp checks
and the store's retention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ingest.simulator import CityConfig
from ingest.simulator.config import DAY_MS, DEFAULT_START_MS

HOUR_S = 3600.0
FULL_HOUR_READS = 11_500_000  # measured by bench_simulator: full scale, 08:00-09:00
RUSH_START_H = 8
NIGHT_H = 6
NIGHT_READS = 5_000_000  # estimate; the report gives the measured count


@dataclass(frozen=True, slots=True)
class Scale:
    """A parsed --scale: the city scale factor, simulated duration and start offset in the day."""

    label: str
    city_scale: float
    duration_s: float
    start_h: float
    expected_reads: int

    def config(
        self,
        *,
        seed: int,
        theft_rate_per_day: float,
        report_delay_median_s: float,
        now_ms: int | None = None,
    ) -> CityConfig:
        return CityConfig(
            report_delay_median_s=report_delay_median_s,
            seed=seed,
            scale=self.city_scale,
            start_ms=recent_day_ms(now_ms) + round(self.start_h * 3_600_000),
            duration_s=self.duration_s,
            theft_rate_per_day=theft_rate_per_day,
        )


def recent_day_ms(now_ms: int | None = None) -> int:
    """Local midnight starting the day before yesterday: a whole simulated day is in the past."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    days = (now - DEFAULT_START_MS) // DAY_MS - 2
    return DEFAULT_START_MS + days * DAY_MS


def parse_scale(text: str) -> Scale:
    """Parse hour|day|N (see the module docstring); ValueError for anything else."""
    t = text.strip().lower()
    if t == "hour":
        return Scale("hour", 1.0, HOUR_S, RUSH_START_H, FULL_HOUR_READS)
    if t == "day":
        return Scale("day", 1.0, 24 * HOUR_S, 0.0, 80_000_000)
    if t == "night":
        return Scale("night", 1.0, NIGHT_H * HOUR_S, 0.0, NIGHT_READS)
    try:
        n = float(t)
    except ValueError:
        raise ValueError(f"--scale must be hour, day or a number (got {text!r})") from None
    if not n > 0:
        raise ValueError(f"--scale must be > 0 (got {text!r})")
    if n <= 1:
        return Scale(f"hour x {n:g}", n, HOUR_S, RUSH_START_H, round(n * FULL_HOUR_READS))
    if n <= FULL_HOUR_READS:
        return Scale(f"{n:,.0f} reads", n / FULL_HOUR_READS, HOUR_S, RUSH_START_H, round(n))
    hours = n / FULL_HOUR_READS
    if hours > 24 - RUSH_START_H:
        raise ValueError(f"--scale {text}: more reads than a day from 08:00; use --scale day")
    return Scale(f"{n:,.0f} reads", 1.0, hours * HOUR_S, RUSH_START_H, round(n))
