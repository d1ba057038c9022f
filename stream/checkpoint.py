"""Checkpoints of a partition's sessionizer state, so a restarted or new owner resumes exactly.

A checkpoint holds the state after applying every message up to `offset` of one reads partition.
Written atomically (temp file + rename) into the data folder, which workers on one machine share;
on assignment a worker loads it and re-applies the messages after `offset` (idempotent: reads are a
set, rows carry versions), so the state is complete however offsets were committed.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # last applied input offset
    state: bytes  # Sessionizer.snapshot()
    alerted: frozenset[str]  # alert ids already emitted from this partition


class CheckpointStore:
    """One file per (topic, partition) under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, topic: str, partition: int) -> Path:
        return self.folder / f"{topic}-{partition}.ckpt"

    def save(self, topic: str, partition: int, ckpt: Checkpoint) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        meta = json.dumps({"offset": ckpt.offset, "alerted": sorted(ckpt.alerted)}).encode()
        np.savez(buf, meta=np.frombuffer(meta, np.uint8), state=np.frombuffer(ckpt.state, np.uint8))
        path = self._path(topic, partition)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        path = self._path(topic, partition)
        if not path.exists():
            return None
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes())
            state = z["state"].tobytes()
        return Checkpoint(int(meta["offset"]), state, frozenset(meta["alerted"]))
