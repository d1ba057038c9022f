"""A vectorised, deterministic city simulator of RFID reads with ground truth (Kunming by default).

Front door: `CityConfig`, `simulate(cfg) -> SimResult` (everything in memory, for tests and small
runs), `iter_chunks(cfg, chunk_s)` (bounded memory, chunks in arrival order, for full days) and
`run_simulation_to_parquet(...)` (what `tagtrail simulate` calls).
"""

from __future__ import annotations

from collections.abc import Iterator

from ingest.simulator.config import CityConfig
from ingest.simulator.engine import SimChunk, Simulation
from ingest.simulator.parquet import run_simulation_to_parquet
from ingest.simulator.result import SimResult, simulate


def iter_chunks(cfg: CityConfig, chunk_s: float = 60.0) -> Iterator[SimChunk]:
    """Yield the run as SimChunks covering consecutive arrival-time slices of `chunk_s` seconds.

    Concatenating the chunks gives exactly `simulate(cfg)` whatever `chunk_s` is. Memory holds
    one generation window plus reads not yet due (late flushes of offline gateways).
    """
    return Simulation(cfg).chunks(chunk_s)


__all__ = [
    "CityConfig",
    "SimChunk",
    "SimResult",
    "Simulation",
    "iter_chunks",
    "run_simulation_to_parquet",
    "simulate",
]
