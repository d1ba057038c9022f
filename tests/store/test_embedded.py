"""The embedded backend owns its folder: another process gets a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.priority import thread_nice
from store.embedded import ENGINE_THREAD_NICE, EmbeddedBackend
from store.exceptions import StoreLockedError, StoreQueryError
from store.store import Store

CHILD = """
import sys
from store.embedded import ENGINE_THREAD_NICE, EmbeddedBackend
from store.exceptions import StoreLockedError
try:
    EmbeddedBackend(sys.argv[1])
except StoreLockedError as e:
    print("LOCKED", e.folder, "|", e)
"""


def test_folder_held_by_another_process(store: Store) -> None:
    folder = str(store.settings.store_dir.resolve())
    r = subprocess.run(
        [sys.executable, "-c", CHILD, folder],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert r.stdout.startswith(f"LOCKED {folder} |"), r.stdout + r.stderr
    assert "in use by another process" in r.stdout


def test_second_folder_in_one_process(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreLockedError, match="one folder per process"):
        EmbeddedBackend(tmp_path / "other")
    # the same folder again shares the engine
    again = EmbeddedBackend(store.settings.store_dir)
    again.close()
    assert store.backend.execute("SELECT 1") == [(1,)]


def test_bad_sql_and_string_params(store: Store) -> None:
    with pytest.raises(StoreQueryError) as e:
        store.backend.execute("SELECT * FROM no_such_table")
    assert e.value.code == 60 and not e.value.retriable
    s = "multi\nline\t'quoted' \\ text"
    assert store.backend.execute("SELECT {s:String}", {"s": s}) == [(s,)]


def test_large_retry_is_deduplicated(store: Store) -> None:
    # Parallel block splitting once made a retried multi-million-row batch partly doubled.
    b = store.backend
    b.execute(
        "CREATE TABLE d (k UInt64, v UInt32) ENGINE = MergeTree ORDER BY k "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    cols = {"k": np.arange(2_500_000, dtype=np.uint64), "v": np.ones(2_500_000, np.uint32)}
    for _ in range(3):
        b.insert_columns("d", cols, dedup_token="same")
    assert b.execute("SELECT count() FROM d") == [(2_500_000,)]


def test_string_columns_insert(store: Store) -> None:
    cols = {
        "case_id": np.array(["c1", "c'2"], dtype=object),
        "at_ms": np.array([1, 2], dtype=np.int64),
        "status": np.array(["reported", "found"], dtype=object),
        "actor": np.array(["owner", "police\nunit"], dtype=object),
        "note": np.array(["", "ok"], dtype=object),
    }
    store.backend.insert_columns("case_status_history", cols, dedup_token="h")
    got = store.backend.query_columns("SELECT * FROM case_status_history ORDER BY at_ms")
    assert got["case_id"].tolist() == ["c1", "c'2"] and got["actor"][1] == "police\nunit"


def test_engine_threads_give_way_to_the_stream(store: Store) -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("thread priorities are set through Linux's /proc, absent here")
    b = EmbeddedBackend(store.settings.store_dir)  # the same engine, with its own renice clock
    try:
        b.execute("CREATE TABLE IF NOT EXISTS nice_probe (x UInt64) ENGINE = MergeTree ORDER BY x")
        b.insert_columns("nice_probe", {"x": np.arange(10, dtype=np.uint64)})
        for name in ("MergeMutate", "ThreadPool"):
            nices = thread_nice(name)
            assert nices and min(nices) >= ENGINE_THREAD_NICE, name
        # The rest of the process (the event loop, the API) keeps its priority.
        assert os.getpriority(os.PRIO_PROCESS, 0) < ENGINE_THREAD_NICE
    finally:
        b.close()
