"""The e2e benchmark's read spool: every published read on disk, bucketed by tag, for the checks.

A simulated day is ~80 M reads (3 GB as columns, several times that inside the pandas reference
sessionizer), so the generator does not hold them: reads are appended to one Parquet file per
bucket (tag_id mod buckets), and the reference sightings are computed one bucket at a time.
Sightings are per (tag, reader), so a bucket's sightings depend on that bucket's reads only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.records.reads import READ_DTYPES, Reads

# Rows a bucket buffers before writing a row group: bounds memory at ~buckets x 40 B x this.
ROWS_PER_WRITE = 262_144
SCHEMA = pa.schema([(k, pa.from_numpy_dtype(dt)) for k, dt in READ_DTYPES.items()])


class ReadSpool:
    """Append-only bucketed Parquet store of reads; `buckets()` reads them back one at a time."""

    def __init__(self, folder: Path, n_buckets: int = 1, keep_head: int = 0) -> None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1 (got {n_buckets})")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.n_buckets = n_buckets
        self.n_reads = 0
        self._keep_head = keep_head
        self._head: list[Reads] = []
        self._buf: list[list[Reads]] = [[] for _ in range(n_buckets)]
        self._buffered = [0] * n_buckets
        self._writers: list[pq.ParquetWriter | None] = [None] * n_buckets

    def path(self, bucket: int) -> Path:
        return self.folder / f"reads-{bucket:03d}.parquet"

    def add(self, reads: Reads) -> None:
        n = len(reads)
        if not n:
            return
        self.n_reads += n
        kept = sum(len(r) for r in self._head)
        if kept < self._keep_head:
            self._head.append(reads.take(np.arange(min(n, self._keep_head - kept))))
        if self.n_buckets == 1:
            self._append(0, reads)
            return
        b = (reads.tag_id % np.uint64(self.n_buckets)).astype(np.intp)
        order = np.argsort(b, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(b, minlength=self.n_buckets))))
        for k in range(self.n_buckets):
            if bounds[k + 1] > bounds[k]:
                self._append(k, reads.take(order[bounds[k] : bounds[k + 1]]))

    def _append(self, bucket: int, reads: Reads) -> None:
        self._buf[bucket].append(reads)
        self._buffered[bucket] += len(reads)
        if self._buffered[bucket] >= ROWS_PER_WRITE:
            self._write(bucket)

    def _write(self, bucket: int) -> None:
        if not self._buf[bucket]:
            return
        table = Reads.concat(self._buf[bucket]).to_arrow().cast(SCHEMA)
        w = self._writers[bucket]
        if w is None:
            w = self._writers[bucket] = pq.ParquetWriter(self.path(bucket), SCHEMA)
        w.write_table(table)
        self._buf[bucket], self._buffered[bucket] = [], 0

    def close(self) -> None:
        """Write what is buffered; `buckets()` may be called afterwards."""
        for k in range(self.n_buckets):
            self._write(k)
            w = self._writers[k]
            if w is not None:
                w.close()
                self._writers[k] = None

    def head(self) -> Reads:
        """The first `keep_head` reads added (for the peer, which needs a sample only)."""
        return Reads.concat(self._head)

    def buckets(self) -> Iterator[tuple[int, Reads]]:
        """(bucket, its reads) for every bucket, read back from disk one at a time."""
        self.close()
        for k in range(self.n_buckets):
            p = self.path(k)
            yield k, Reads.from_arrow(pq.read_table(p)) if p.exists() else Reads.empty()

    def bucket_of(self, tag_id: np.ndarray) -> np.ndarray:
        return (np.asarray(tag_id, np.uint64) % np.uint64(self.n_buckets)).astype(np.intp)
