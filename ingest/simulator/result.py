"""The whole run in memory: reads in send order, the reader registry and the ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.records.reads import Reads
from ingest.simulator.city import City
from ingest.simulator.config import CityConfig
from ingest.simulator.engine import SimChunk, Simulation

Columns = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class SimResult:
    """Output of `simulate`.

    reads (+ gateway_id, arrival_ms, batch_seq, is_retry per read) are in send order: sorted by
    arrival_ms, then gateway. A replayer publishes groups of equal (gateway_id, batch_seq,
    arrival_ms) as one gateway batch. Truth: `passages` (tag_id, reader_id, t_enter_ms,
    t_exit_ms in true time), `thefts` (one row per stolen bike), `tracks` (tag_id, t_ms, lat, lon
    of each stolen bike from the theft to its stash), `outages` (gateway_id, start_ms, end_ms).
    """

    config: CityConfig
    city: City
    reads: Reads
    gateway_id: np.ndarray
    arrival_ms: np.ndarray
    batch_seq: np.ndarray
    is_retry: np.ndarray
    readers: Columns
    passages: Columns
    thefts: Columns
    tracks: Columns
    outages: Columns


def _cat(chunks: list[SimChunk], attr: str) -> Columns:
    parts = [getattr(c, attr) for c in chunks]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def outage_columns(sim: Simulation) -> Columns:
    o = sim.outages
    return {
        "gateway_id": sim.city.gateway_id[o.gateway],
        "start_ms": o.start_ms,
        "end_ms": o.end_ms,
    }


def simulate(cfg: CityConfig) -> SimResult:
    """Run the whole simulation in memory (for small scales and tests; see iter_chunks)."""
    sim = Simulation(cfg)
    chunks = list(sim.chunks(chunk_s=max(cfg.duration_s, 1.0)))
    return SimResult(
        config=cfg,
        city=sim.city,
        reads=Reads.concat([c.reads for c in chunks]),
        gateway_id=np.concatenate([c.gateway_id for c in chunks]),
        arrival_ms=np.concatenate([c.arrival_ms for c in chunks]),
        batch_seq=np.concatenate([c.batch_seq for c in chunks]),
        is_retry=np.concatenate([c.is_retry for c in chunks]),
        readers=sim.city.registry_columns(),
        passages=_cat(chunks, "passages"),
        thefts=_cat(chunks, "thefts"),
        tracks=_cat(chunks, "tracks"),
        outages=outage_columns(sim),
    )
