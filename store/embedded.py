"""Embedded backend: the ClickHouse engine inside this process (chdb) on a folder it locks.

chdb runs one engine per process, bound to one folder; the folder is also locked against other
processes. Opening the same folder twice in a process shares the engine (reference counted).
"""

from __future__ import annotations

import fcntl
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from chdb import session as chdb_session

from core.priority import renice_threads
from store.backend import Params
from store.exceptions import StoreError, StoreLockedError, StoreQueryError

_CODE_RE = re.compile(r"Code: (\d+)")
# Settings that make the blocks of an INSERT ... SELECT FROM Python(...) deterministic: one
# thread, one block per insert. Insert deduplication hashes blocks, so a retry of the same batch
# must be cut into the same blocks to be recognised; parallel reading cuts them differently.
_INSERT_SETTINGS = (
    "max_threads=1, max_insert_threads=1, max_block_size=1048576, "
    "min_insert_block_size_rows=1048576, min_insert_block_size_bytes=0"
)

# The engine's native pools (merges; `ThreadPool`: the inserts' blocks and their materialized
# views) are bulk work that would otherwise compete with alert bursts: at nice 10 they take the
# CPU that the stream and the API leave, and still ~10% of a busy core (CFS weights), so inserts
# and merges keep up. Native threads only (see core.priority). ClickHouse's own
# os_threads_nice_value_* settings need CAP_SYS_NICE; raising one's own does not.
ENGINE_THREAD_NICE = 10
ENGINE_THREAD_NAMES = ("MergeMutate", "ThreadPool")
# The engine starts pool threads lazily (and ends idle ones): looked for again after inserts,
# at most this often (a walk over /proc/self/task).
_RENICE_EVERY_S = 1.0

_lock = threading.Lock()
_engine: dict[str, Any] = {"path": None, "session": None, "refs": 0}


def _open_session(folder: Path) -> chdb_session.Session:
    path = str(folder.resolve())
    with _lock:
        if _engine["session"] is not None:
            if _engine["path"] != path:
                raise StoreLockedError(
                    f"this process already runs the embedded store on {_engine['path']}; "
                    f"chdb allows one folder per process, so {path} cannot be opened too "
                    "(close the other store first)",
                    folder=path,
                )
            _engine["refs"] += 1
            return _engine["session"]
        folder.mkdir(parents=True, exist_ok=True)
        if _held_elsewhere(folder / "status"):
            raise StoreLockedError(
                f"the store folder {path} is in use by another process "
                "(only one process may own an embedded store; stop it or use a server DSN)",
                folder=path,
            )
        try:
            sess = chdb_session.Session(path)
        except RuntimeError as e:
            raise StoreError(f"cannot open the embedded store in {path}: {e}") from e
        _engine.update(path=path, session=sess, refs=1)
        return sess


def _held_elsewhere(status: Path) -> bool:
    """True if another process holds the engine's lock on `status` (ClickHouse flocks it).

    chdb reports that case only as "Error initializing EmbeddedServer", so we probe first.
    """
    if not status.exists():
        return False
    with status.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def _release_session() -> None:
    with _lock:
        _engine["refs"] -= 1
        if _engine["refs"] <= 0 and _engine["session"] is not None:
            _engine["session"].close()
            _engine.update(path=None, session=None, refs=0)


class EmbeddedBackend:
    """StoreBackend over chdb on `folder` (default database)."""

    kind = "embedded"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._session = _open_session(self.folder)
        self._closed = False
        # chdb's session is not safe for concurrent queries from several threads.
        self._qlock = threading.Lock()
        self._reniced_at = 0.0

    def _query(self, sql: str, fmt: str, params: Params) -> Any:
        if self._closed:
            raise StoreError(f"the embedded store on {self.folder} is closed")
        try:
            with self._qlock:
                if params:
                    bound = {k: _escape(v) if isinstance(v, str) else v for k, v in params.items()}
                    return self._session.query(sql, fmt, params=bound)
                return self._session.query(sql, fmt)
        except RuntimeError as e:
            msg = str(e)
            m = _CODE_RE.search(msg)
            raise StoreQueryError(
                f"{msg.strip()} [sql: {sql.strip()[:300]}]", code=int(m.group(1)) if m else None
            ) from None

    def execute(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        table = self._query(sql, "ArrowTable", params)
        if not isinstance(table, pa.Table) or table.num_columns == 0:
            return []
        return list(zip(*(c.to_pylist() for c in table.columns), strict=True))

    def query_columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        table = self._query(sql, "ArrowTable", params)
        if not isinstance(table, pa.Table):
            return {}
        return {
            name: _to_numpy(col)
            for name, col in zip(table.column_names, table.columns, strict=True)
        }

    def insert_columns(
        self, table: str, columns: Mapping[str, np.ndarray], dedup_token: str | None = None
    ) -> None:
        if not columns:
            return
        # One contiguous chunk per column, so a retried batch is read back into identical blocks.
        batch = pa.table({k: pa.array(np.ascontiguousarray(v)) for k, v in columns.items()})
        if batch.num_rows == 0:
            return
        names = ", ".join(columns)
        settings = _INSERT_SETTINGS
        if dedup_token is not None:
            settings += ", insert_deduplication_token=" + _quote(dedup_token)
        # chdb's Python() table function finds the object by its variable name in this frame.
        tagtrail_batch_ = batch  # noqa: F841
        self._query(
            f"INSERT INTO {table} ({names}) SETTINGS {settings} "
            f"SELECT {names} FROM Python(tagtrail_batch_)",
            "CSV",
            None,
        )
        if time.monotonic() - self._reniced_at >= _RENICE_EVERY_S:
            self._reniced_at = time.monotonic()
            renice_threads(ENGINE_THREAD_NICE, ENGINE_THREAD_NAMES)

    def server_version(self) -> tuple[int, int]:
        v = str(self.execute("SELECT version()")[0][0]).split(".")
        return int(v[0]), int(v[1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_session()


def _escape(s: str) -> str:
    # chdb parses string parameters in TSV-escaped form: a raw newline or backslash breaks them.
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)
