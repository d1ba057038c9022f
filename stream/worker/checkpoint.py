"""Checkpoints of a partition's sessionizer state, so a restarted or new owner resumes exactly.

A checkpoint holds the state after applying every message up to `offset` of one reads partition.
Written atomically (temp file + rename) into the data folder, which workers on one machine share;
on assignment a worker loads it and re-applies the messages after `offset` (idempotent: reads are a
set, rows carry versions), so the state is complete however offsets were committed. It also records
where the partition's output on the sightings topic stood (`output`): the new owner reads back the
rows published after the checkpoint and retracts those the replay does not make again
(stream.worker.output_history, `Sessionizer.expect`).

A running worker writes from a forked process (`write(..., fork=True)`): the fork is a
copy-on-write snapshot of the state, so its steps go on while the file is written. The other
partitions' state is kept out of the child (`unshared`): the fork then copies fewer page tables,
and the worker's writes to those partitions meanwhile cost no copy-on-write faults. While the
writer lives, every page the worker first writes is copied, which slows its steps: a writer can
be stopped (`PendingCheckpoint.stop`) and the checkpoint taken later.
"""

from __future__ import annotations

import ctypes
import gc
import json
import mmap
import os
import signal
import struct
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.runtime import pid_alive
from stream.exceptions import CheckpointStopped, StreamError

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
    # (sightings partition, offset) from which the upserts emitted after this state are read
    # back on a restart; None: not known (the partition's output is read from its start)
    output: tuple[int, int] | None = None


@dataclass(slots=True)
class PendingCheckpoint:
    """A written checkpoint not yet durable nor current."""

    tmp: Path
    path: Path
    writer: int = 0  # pid of the forked process writing `tmp` (0: written already)
    # The writer's pidfd: signals reach that process even once its pid is reaped and reused.
    pidfd: int = -1
    stopped: bool = False  # stop() signalled the writer (a writer that had finished still commits)
    _fd_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop(self) -> bool:
        """Stop the writer if it is still writing; `commit()` then raises CheckpointStopped.
        False if there is nothing to stop (no writer, or it is reaped). Safe from any thread."""
        with self._fd_lock:  # commit() closes the pidfd: its number may be reused after that
            if self.pidfd < 0 or self.stopped:
                return False
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:  # reaped: its file stands
                return False
            self.stopped = True
            return True

    def commit(self) -> None:
        """Wait for the writer, flush the file to disk, then replace the partition's checkpoint
        with it. StreamError if the writer failed, CheckpointStopped if it was stopped (either
        way the current checkpoint stays)."""
        if self.writer:
            try:
                _, status = os.waitpid(self.writer, 0)
            finally:
                with self._fd_lock:
                    if self.pidfd >= 0:
                        os.close(self.pidfd)
                        self.pidfd = -1
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                if self.tmp.is_file():
                    self.tmp.unlink()
                if self.stopped and code == -signal.SIGKILL:
                    raise CheckpointStopped(f"writing checkpoint {self.path.name} was stopped")
                raise StreamError(f"writing checkpoint {self.path.name} failed (exit {code})")
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

    def write(
        self,
        topic: str,
        partition: int,
        ckpt: Checkpoint,
        fork: bool = False,
        unshared: Sequence[np.ndarray] = (),
    ) -> PendingCheckpoint:
        """Write the checkpoint's temp file; `commit()` on the result makes it durable and
        current. One pending checkpoint per partition at a time (they share the temp file).

        Without `fork`, the state is read before this returns; with it, a forked child writes
        from its copy-on-write view of the state, and the caller may change the state as soon as
        this returns (the fork only copies the page tables). A partition's state grows to
        hundreds of MB over a day: written in place, it would hold the worker's steps for the
        whole write.
        `unshared`: arrays the checkpoint does not read (other partitions' state), left out of
        the child; the child must not touch them, and they must not change until this returns.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        saved_ms = int(time.time() * 1000)
        meta = {
            "offset": ckpt.offset,
            "alerted": sorted(ckpt.alerted),
            "saved_ms": saved_ms,
            "output": list(ckpt.output) if ckpt.output is not None else None,
        }
        meta_bytes = json.dumps(meta).encode()
        parts = [memoryview(ckpt.state)] if isinstance(ckpt.state, bytes | memoryview) else [
            memoryview(p) for p in ckpt.state
        ]  # fmt: skip
        n_state = sum(p.nbytes for p in parts)
        path = self._path(topic, partition)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        head = _MAGIC + _U64.pack(len(meta_bytes)) + meta_bytes + _U64.pack(n_state)
        if not fork:
            _write_file(tmp, head, parts)
            return PendingCheckpoint(tmp, path)
        with warnings.catch_warnings(), _kept_from_fork(unshared):
            # Python 3.12+ warns of forking a threaded process: the child only writes bytes
            # already in memory and leaves with os._exit, taking none of the other threads' locks.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
            if pid == 0:
                _child_write(tmp, head, parts)  # never returns, nor leaves this block
        # Opened before anything reaps the child, so it names that process for its whole life.
        return PendingCheckpoint(tmp, path, writer=pid, pidfd=os.pidfd_open(pid))

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        path = self._path(topic, partition)
        self._sweep(path)
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
        out = meta.get("output")
        output = (int(out[0]), int(out[1])) if out else None
        return Checkpoint(
            int(meta["offset"]), state, alerted, int(meta.get("saved_ms", 0)), output=output
        )

    @staticmethod
    def _sweep(path: Path) -> None:
        """Remove temp files of this checkpoint left by writers whose worker died (SIGKILL)."""
        for tmp in path.parent.glob(path.stem + ".tmp*"):
            pid = tmp.suffix.removeprefix(".tmp")
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


@contextmanager
def _kept_from_fork(arrays: Sequence[np.ndarray]) -> Iterator[None]:
    """While inside, a fork does not map the pages that each array holds alone (MADV_DONTFORK on
    the whole pages within its buffer: the pages it shares with neighbouring allocations stay).
    Restored on exit, before the memory can be freed or reused."""
    page = mmap.PAGESIZE
    kept: list[tuple[int, int]] = []
    try:
        for a in arrays:
            lo = -(-a.ctypes.data // page) * page
            hi = (a.ctypes.data + a.nbytes) // page * page
            # A range madvise refuses simply stays shared with the child: correct, only slower.
            if hi > lo and _LIBC.madvise(lo, hi - lo, mmap.MADV_DONTFORK) == 0:
                kept.append((lo, hi - lo))
        yield
    finally:
        for lo, n in kept:
            if _LIBC.madvise(lo, n, mmap.MADV_DOFORK) != 0:
                # Left out of later children, this memory may come to hold what they need.
                err = ctypes.get_errno()
                raise OSError(err, f"madvise(MADV_DOFORK) failed: {os.strerror(err)}")


def _child_write(tmp: Path, head: bytes, parts: list[memoryview]) -> None:
    """In the forked child: write, then leave without running any of the parent's cleanup."""
    code = 1
    try:
        # A crash ends the child at once: an embedded ClickHouse's handlers would wait for its
        # signal-listener thread, which the child does not have.
        for sig in (signal.SIGSEGV, signal.SIGBUS):
            signal.signal(sig, signal.SIG_DFL)
        gc.disable()  # a collection would touch (and copy) the whole heap
        # Background work: the worker's steps (and the rest of the machine) go first.
        os.nice(10)
        _write_file(tmp, head, parts)
        code = 0
    except BaseException as e:  # reported on stderr: the parent raises on the exit code
        os.write(2, f"tagtrail: writing checkpoint {tmp} failed: {e!r}\n".encode())
    finally:
        os._exit(code)


def _write_file(tmp: Path, head: bytes, parts: list[memoryview]) -> None:
    with open(tmp, "wb") as f:
        f.write(head)
        f.writelines(parts)  # any buffer: written as its nbytes raw bytes


def _load_npz(path: Path) -> Checkpoint:
    """A checkpoint written before the streamed format."""
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes())
        state = z["state"].tobytes()
    return Checkpoint(int(meta["offset"]), state, frozenset(meta["alerted"]))
