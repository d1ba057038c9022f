"""Checkpoints of a partition's sessionizer state, so a restarted or new owner resumes exactly.

A checkpoint holds the state after applying every message up to `offset` of one reads partition.
Written atomically (temp file + rename) into the data folder, which workers on one machine share;
on assignment a worker loads it and re-applies the messages after `offset` (idempotent: reads are a
set, rows carry versions), so the state is complete however offsets were committed.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.exceptions import StreamError

# File: magic, u64 meta length, meta JSON, u64 state length, state bytes. The state is written
# from zero-copy views of the live arrays, so a checkpoint of a day's state (hundreds of MB)
# costs no extra copy in memory. Files of the previous format (npz) are still read.
_MAGIC = b"TTCKPT2\0"
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # last applied input offset
    # Sessionizer.snapshot() or its zero-copy snapshot_parts() (valid until the state changes)
    state: bytes | memoryview | Sequence[memoryview]
    alerted: frozenset[str]  # alert ids already emitted from this partition
    saved_ms: int = 0  # wall clock when saved (0: unknown, e.g. a checkpoint of the old format)


@dataclass(frozen=True, slots=True)
class PendingCheckpoint:
    """A written checkpoint not yet durable nor current."""

    tmp: Path
    path: Path

    def commit(self) -> None:
        """Flush the file to disk, then replace the partition's checkpoint with it."""
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # a file's data, whichever descriptor asks
        finally:
            os.close(fd)
        self.tmp.replace(self.path)


class CheckpointStore:
    """One file per (topic, partition) under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, topic: str, partition: int) -> Path:
        return self.folder / f"{topic}-{partition}.ckpt"

    def save(self, topic: str, partition: int, ckpt: Checkpoint) -> None:
        """Write atomically; with snapshot_parts() the caller must hold the state still."""
        self.write(topic, partition, ckpt).commit()

    def write(self, topic: str, partition: int, ckpt: Checkpoint) -> PendingCheckpoint:
        """Write the checkpoint's temp file; `commit()` on the result makes it durable and
        current. Only the write reads the state: the caller may change it again meanwhile,
        while the flush to disk (about as long as the write) runs elsewhere. One pending
        checkpoint per partition at a time (they share the temp file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        saved_ms = int(time.time() * 1000)
        meta = {"offset": ckpt.offset, "alerted": sorted(ckpt.alerted), "saved_ms": saved_ms}
        meta_bytes = json.dumps(meta).encode()
        parts = [memoryview(ckpt.state)] if isinstance(ckpt.state, bytes | memoryview) else [
            memoryview(p) for p in ckpt.state
        ]  # fmt: skip
        n_state = sum(p.nbytes for p in parts)
        path = self._path(topic, partition)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(_MAGIC + _U64.pack(len(meta_bytes)) + meta_bytes + _U64.pack(n_state))
            f.writelines(parts)  # any buffer: written as its nbytes raw bytes
        return PendingCheckpoint(tmp, path)

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        path = self._path(topic, partition)
        if not path.exists():
            return None
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            return _load_npz(path)
        try:
            (n_meta,) = _U64.unpack_from(data, len(_MAGIC))
            at = len(_MAGIC) + _U64.size
            meta = json.loads(data[at : at + n_meta])
            (n_state,) = _U64.unpack_from(data, at + n_meta)
            start = at + n_meta + _U64.size
        except (struct.error, ValueError) as e:
            raise StreamError(f"checkpoint {path} is corrupt ({e})") from None
        if len(data) - start != n_state:
            raise StreamError(
                f"checkpoint {path} is truncated: {len(data) - start} of {n_state} state bytes"
            )
        state = memoryview(data)[start:]
        alerted = frozenset(meta["alerted"])
        return Checkpoint(int(meta["offset"]), state, alerted, int(meta.get("saved_ms", 0)))


def _load_npz(path: Path) -> Checkpoint:
    """A checkpoint written before the streamed format."""
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes())
        state = z["state"].tobytes()
    return Checkpoint(int(meta["offset"]), state, frozenset(meta["alerted"]))
