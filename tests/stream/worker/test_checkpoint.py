"""Checkpoints: written from zero-copy state views, read back exactly; old and broken files."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.records.readers import ReaderRegistry
from core.records.reads import Reads
from stream.exceptions import CheckpointStopped, StreamError
from stream.sessionize.sessionizer import Sessionizer
from stream.worker.checkpoint import Checkpoint, CheckpointStore, _kept_from_fork


def _sessionizer() -> Sessionizer:
    reg = ReaderRegistry.from_columns(
        reader_id=np.array([1, 2], np.uint32), lat=np.array([25.0, 25.1]),
        lon=np.array([102.7, 102.8]),
    )  # fmt: skip
    s = Sessionizer(gap_ms=30_000, max_lateness_ms=3_600_000, registry=reg)
    n = 5_000
    rng = np.random.default_rng(3)
    reads = Reads.from_columns(
        tag_id=rng.integers(1, 300, n), reader_id=rng.integers(1, 3, n),
        ts_ms=1_700_000_000_000 + rng.integers(0, 600_000, n), rssi_dbm=rng.integers(-80, -30, n),
        flags=np.zeros(n), lat=np.full(n, np.nan), lon=np.full(n, np.nan),
    )  # fmt: skip
    s.process(reads, version=1)
    return s


def test_parts_round_trip_to_the_same_state(tmp_path: Path) -> None:
    s = _sessionizer()
    store = CheckpointStore(tmp_path)
    store.save("reads", 3, Checkpoint(41, s.snapshot_parts(), frozenset({"a", "b"})))
    got = store.load("reads", 3)
    assert got is not None and got.offset == 41 and got.alerted == {"a", "b"}
    assert bytes(got.state) == s.snapshot()
    back = _sessionizer()
    back.restore(got.state)
    assert back.snapshot() == s.snapshot()
    assert got.output is None  # where the output stood was not known


def test_where_the_output_stood_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("reads", 2, Checkpoint(7, _sessionizer().snapshot(), frozenset(), output=(2, 1234)))
    got = store.load("reads", 2)
    assert got is not None and got.output == (2, 1234)
    assert store.load("reads", 4) is None


def test_previous_npz_format_is_read(tmp_path: Path) -> None:
    s = _sessionizer()
    meta = json.dumps({"offset": 7, "alerted": ["x"]}).encode()
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(meta, np.uint8), state=np.frombuffer(s.snapshot(), np.uint8))
    (tmp_path / "reads-0.ckpt").write_bytes(buf.getvalue())
    got = CheckpointStore(tmp_path).load("reads", 0)
    assert got is not None and got.offset == 7 and bytes(got.state) == s.snapshot()


def test_truncated_file_is_an_error_not_a_smaller_state(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("reads", 0, Checkpoint(1, _sessionizer().snapshot(), frozenset()))
    path = tmp_path / "reads-0.ckpt"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StreamError, match="truncated"):
        store.load("reads", 0)


def test_a_written_checkpoint_replaces_the_old_one_only_when_committed(tmp_path: Path) -> None:
    s = _sessionizer()
    store = CheckpointStore(tmp_path)
    store.save("reads", 0, Checkpoint(7, s.snapshot(), frozenset()))
    pending = store.write("reads", 0, Checkpoint(9, s.snapshot_parts(), frozenset({"x"})))
    # The state may change once written: the file no longer reads it.
    s.process(
        Reads.from_columns(tag_id=[1], reader_id=[1], ts_ms=[1_700_000_900_000], rssi_dbm=[-40],
                           flags=[0]),
        version=2,
    )  # fmt: skip
    before = store.load("reads", 0)
    assert before is not None and before.offset == 7
    pending.commit()
    after = store.load("reads", 0)
    assert after is not None and after.offset == 9 and after.alerted == {"x"}
    assert not pending.tmp.exists()
    restored = Sessionizer(gap_ms=30_000, max_lateness_ms=3_600_000, registry=s.registry)
    restored.restore(after.state)
    assert restored.n_state_reads == s.n_state_reads - 1


def _more_reads(s: Sessionizer, version: int) -> None:
    """Reads on the keys already held: their segments change in place."""
    s.process(
        Reads.from_columns(tag_id=np.arange(1, 300), reader_id=np.ones(299),
                           ts_ms=np.full(299, 1_700_000_300_001), rssi_dbm=np.full(299, -20),
                           flags=np.zeros(299)),
        version=version,
    )  # fmt: skip


def test_a_forked_write_holds_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    s = _sessionizer()
    at_fork = s.snapshot()
    store = CheckpointStore(tmp_path)
    pending = store.write("reads", 2, Checkpoint(5, s.snapshot_parts(), frozenset()), fork=True)
    assert pending.writer > 0
    _more_reads(s, version=2)  # while the child may still be writing
    assert s.snapshot() != at_fork
    pending.commit()
    got = store.load("reads", 2)
    assert got is not None and got.offset == 5 and bytes(got.state) == at_fork
    assert not pending.tmp.exists()


def test_a_failed_forked_write_keeps_the_current_checkpoint(tmp_path: Path) -> None:
    s = _sessionizer()
    store = CheckpointStore(tmp_path)
    store.save("reads", 0, Checkpoint(7, s.snapshot(), frozenset()))
    pending = store.write("reads", 0, Checkpoint(9, s.snapshot_parts(), frozenset()))
    pending.tmp.unlink()
    pending.tmp.mkdir()  # the writer cannot open its temp file
    failed = store.write("reads", 0, Checkpoint(9, s.snapshot_parts(), frozenset()), fork=True)
    with pytest.raises(StreamError, match=r"writing checkpoint reads-0\.ckpt failed"):
        failed.commit()
    got = store.load("reads", 0)
    assert got is not None and got.offset == 7


def _blocked_temp_file(folder: Path, topic: str, partition: int) -> Path:
    """Make the temp file a writer of this process will open a FIFO: its open() blocks until
    someone reads, so the writer is deterministically still writing."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / f"{topic}-{partition}.tmp{os.getpid()}"
    os.mkfifo(fifo)
    return fifo


def test_a_stopped_writer_keeps_the_current_checkpoint(tmp_path: Path) -> None:
    s = _sessionizer()
    store = CheckpointStore(tmp_path)
    store.save("reads", 0, Checkpoint(7, s.snapshot(), frozenset()))
    fifo = _blocked_temp_file(tmp_path, "reads", 0)
    pending = store.write("reads", 0, Checkpoint(9, s.snapshot_parts(), frozenset()), fork=True)
    assert pending.stop() and not pending.stop()  # stopped once
    with pytest.raises(CheckpointStopped, match=r"reads-0\.ckpt was stopped"):
        pending.commit()
    got = store.load("reads", 0)
    assert got is not None and got.offset == 7
    assert pending.pidfd == -1  # closed with the writer reaped
    fifo.unlink()


def test_a_writer_that_has_finished_is_not_stopped(tmp_path: Path) -> None:
    s = _sessionizer()
    store = CheckpointStore(tmp_path)
    pending = store.write("reads", 1, Checkpoint(9, s.snapshot_parts(), frozenset()), fork=True)
    # Exited but not reaped: a signal to it changes nothing, its file is committed.
    os.waitid(os.P_PID, pending.writer, os.WEXITED | os.WNOWAIT)
    pending.stop()
    pending.commit()
    got = store.load("reads", 1)
    assert got is not None and got.offset == 9
    assert not pending.stop()  # reaped: nothing to stop


def test_temp_files_of_dead_workers_are_swept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"reads-1.tmp{int(gone.stdout)}"
    mine = tmp_path / f"reads-1.tmp{os.getpid()}"
    other = tmp_path / f"reads-11.tmp{int(gone.stdout)}"
    for f in (stale, mine, other):
        f.write_bytes(b"partial")
    assert CheckpointStore(tmp_path).load("reads", 1) is None
    assert not stale.exists() and mine.exists() and other.exists()


def _child_exit(check: object) -> int:
    """Fork a child that exits 0 if check() is true (1 if not); its exit code or -signal."""
    pid = os.fork()
    if pid == 0:
        # A crash ends it at once (chdb's handlers, loaded by other tests, wait for a thread
        # the child does not have), without a core dump of the whole test process.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os._exit(0 if check() else 1)  # type: ignore[operator]
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_memory_kept_from_a_fork_is_not_in_the_child_and_is_shared_again_after() -> None:
    a = np.arange(1 << 20, dtype=np.int64)  # 8 MB: whole pages of its own
    with _kept_from_fork([a]):
        assert _child_exit(lambda: a[len(a) // 2] == len(a) // 2) == -signal.SIGSEGV
    assert _child_exit(lambda: a[len(a) // 2] == len(a) // 2) == 0


def test_a_forked_write_leaves_out_other_partitions_state(tmp_path: Path) -> None:
    s, other = _sessionizer(), _sessionizer()
    _more_reads(other, version=2)
    at_fork, other_state = s.snapshot(), other.snapshot()
    store = CheckpointStore(tmp_path)
    ckpt = Checkpoint(5, s.snapshot_parts(), frozenset())
    store.write("reads", 2, ckpt, fork=True, unshared=other.arrays()).commit()
    got = store.load("reads", 2)
    assert got is not None and bytes(got.state) == at_fork
    assert _child_exit(lambda: other.snapshot() == other_state) == 0
