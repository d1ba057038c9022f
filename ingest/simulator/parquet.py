"""Write a simulation to Parquet, streaming: reads, reader registry, and ground-truth tables."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.simulator.config import CityConfig
from ingest.simulator.engine import Simulation
from ingest.simulator.result import outage_columns

READS_SCHEMA = pa.schema(
    [
        ("tag_id", pa.uint64()),
        ("reader_id", pa.uint32()),
        ("ts_ms", pa.int64()),
        ("rssi_dbm", pa.int8()),
        ("flags", pa.uint8()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("gateway_id", pa.uint32()),
        ("arrival_ms", pa.int64()),  # extra: when the gateway's batch reaches Kafka (true time)
        ("batch_seq", pa.int64()),  # extra: per-gateway batch number; (gateway_id, batch_seq)
    ]
)

ProgressCallback = Callable[[float, int], None]


class _Sink:
    """A ParquetWriter opened on the first non-empty table (schemas come from the data)."""

    def __init__(self, path: Path, schema: pa.Schema | None = None) -> None:
        self.path, self.schema, self.rows = path, schema, 0
        self.writer: pq.ParquetWriter | None = None

    def write(self, cols: dict[str, np.ndarray]) -> None:
        table = pa.table(cols, schema=self.schema) if self.schema else pa.table(cols)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_simulation_to_parquet(
    out_dir: str | Path,
    scale: float = 0.01,
    duration_s: float = 3600.0,
    seed: int = 0,
    theft_rate: float | None = None,
    progress_cb: ProgressCallback | None = None,
    *,
    chunk_s: float = 60.0,
    **overrides: Any,
) -> dict[str, Any]:
    """Simulate and write Parquet files into `out_dir` (created if missing); return a summary.

    Parameters:
        out_dir: folder for reads.parquet, readers.csv, readers.parquet, truth_passages.parquet,
            truth_thefts.parquet, truth_tracks.parquet, truth_outages.parquet, manifest.json.
        scale: city scale, 1.0 = full Kunming (~2 M bikes, ~3.2 k fixed readers, ~80 M reads/day).
        duration_s: simulated seconds from CityConfig.start_ms (default 2026-03-02 00:00 local).
        seed: same seed and parameters give byte-identical tables.
        theft_rate: stolen bikes per day (absolute, not scaled); None keeps the config default.
        progress_cb: called after each chunk with (fraction of simulated time done, reads so far).
        chunk_s: arrival-time slice per written row group; does not change the output rows.
        overrides: any other CityConfig field (e.g. offline_rate_per_day=0.5).

    reads.parquet is in send order (arrival_ms, gateway_id): publish each run of equal
    (gateway_id, batch_seq, arrival_ms) as one gateway batch. Raises ValueError for a bad
    parameter or unknown override (from CityConfig) and OSError if out_dir is not writable.
    """
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(CityConfig)})
    if unknown:
        raise ValueError(f"unknown CityConfig field(s): {', '.join(unknown)}")
    kw: dict[str, Any] = {"scale": scale, "duration_s": duration_s, "seed": seed, **overrides}
    if theft_rate is not None:
        kw["theft_rate_per_day"] = theft_rate
    cfg = CityConfig(**kw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(cfg)
    reg = sim.city.registry_columns()
    reg_table = pa.table({**reg, "kind": pa.array(reg["kind"].tolist(), pa.string())})
    pq.write_table(reg_table, out / "readers.parquet")
    pacsv.write_csv(reg_table.select(["reader_id", "lat", "lon", "kind"]), out / "readers.csv")

    reads = _Sink(out / "reads.parquet", READS_SCHEMA)
    sinks = {n: _Sink(out / f"truth_{n}.parquet") for n in ("passages", "tracks", "thefts")}
    total = cfg.end_ms - cfg.start_ms
    late = retries = 0
    try:
        for ch in sim.chunks(chunk_s):
            cols = ch.reads.columns()
            cols.update(gateway_id=ch.gateway_id, arrival_ms=ch.arrival_ms, batch_seq=ch.batch_seq)
            reads.write(cols)
            retries += int(ch.is_retry.sum())
            late += int(np.count_nonzero(ch.arrival_ms >= cfg.end_ms))
            sinks["passages"].write(ch.passages)
            sinks["tracks"].write(ch.tracks)
            if len(ch.thefts["tag_id"]):
                th = dict(ch.thefts)
                th["place"] = pa.array(th["place"].tolist(), pa.string())
                sinks["thefts"].write(th)
            if progress_cb is not None:
                done = min(1.0, max(0.0, (ch.arrival_to_ms - cfg.start_ms) / total))
                progress_cb(done, reads.rows)
    finally:
        for s in (reads, *sinks.values()):
            s.close()
    for name in ("tracks", "thefts"):
        if sinks[name].writer is None:  # no theft in the run: still write an empty file
            pq.write_table(
                pa.table({"tag_id": pa.array([], pa.uint64())}), out / f"truth_{name}.parquet"
            )
    pq.write_table(pa.table(outage_columns(sim)), out / "truth_outages.parquet")
    summary = {
        "reads": reads.rows,
        "retried_reads": retries,
        "reads_arriving_after_end": late,
        "readers": len(reg["reader_id"]),
        "thefts": sinks["thefts"].rows,
        "passages": sinks["passages"].rows,
        "out_dir": str(out),
        "config": dataclasses.asdict(cfg),
    }
    (out / "manifest.json").write_text(json.dumps(summary, indent=2))
    return summary
