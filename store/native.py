"""Server backend: clickhouse-driver over the native protocol (DSN clickhouse://user:pass@host:9000/db).

Inserts are columnar numpy blocks. Parameters `{name:Type}` are bound client-side as typed
literals, which works on every server version (18.16 has no server-side parameters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from store.backend import Params
from store.exceptions import StoreAuthError, StoreError, StoreQueryError, StoreUnavailable

_PARAM_RE = re.compile(r"\{(\w+):([^{}]+)\}")
# ClickHouse error codes for a refused login (wrong password, unknown user, auth failed).
_AUTH_CODES = {192, 193, 516}
_DTYPES = {
    "UInt8": np.uint8, "UInt16": np.uint16, "UInt32": np.uint32, "UInt64": np.uint64,
    "Int8": np.int8, "Int16": np.int16, "Int32": np.int32, "Int64": np.int64,
    "Float32": np.float32, "Float64": np.float64,
}  # fmt: skip


def _literal(value: Any, typ: str) -> str:
    """Render `value` as a ClickHouse literal of type `typ` (escaping strings)."""
    typ = typ.strip()
    if typ.startswith("Array("):
        inner = typ[6:-1]
        return "[" + ", ".join(_literal(v, inner) for v in value) + "]"
    if typ.startswith(("UInt", "Int")):
        return str(int(value))
    if typ.startswith("Float"):
        return repr(float(value))
    if typ == "String":
        s = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{s}'"
    raise StoreError(f"unsupported parameter type {typ!r}")


def bind(sql: str, params: Params) -> str:
    """Replace `{name:Type}` placeholders with literals; a missing parameter is an error."""
    if not params:
        return sql

    def sub(m: re.Match[str]) -> str:
        name, typ = m.group(1), m.group(2)
        if name not in params:
            raise StoreError(f"query parameter {name!r} not given")
        return f"CAST({_literal(params[name], typ)} AS {typ})"

    return _PARAM_RE.sub(sub, sql)


class NativeBackend:
    """StoreBackend over one clickhouse-driver Client (reconnects by itself after a drop)."""

    kind = "native"

    def __init__(self, dsn: str, *, connect_timeout_s: float = 5.0) -> None:
        u = urlparse(dsn)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (9440 if u.scheme == "clickhouses" else 9000)
        self.database = (u.path or "/default").lstrip("/") or "default"
        self._where = f"{self.host}:{self.port}/{self.database}"
        self._client = Client(
            host=self.host,
            port=self.port,
            user=unquote(u.username or "default"),
            password=unquote(u.password or ""),
            database=self.database,
            secure=u.scheme == "clickhouses",
            connect_timeout=connect_timeout_s,
            settings={"use_numpy": True},
        )
        self._version: tuple[int, int] | None = None
        self.server_version()  # fail fast with a clear error on a bad DSN or password

    def _run(self, sql: str, data: Any = None, **kw: Any) -> Any:
        try:
            return self._client.execute(sql, data, **kw)
        except ch_errors.ServerException as e:
            if e.code in _AUTH_CODES:
                raise StoreAuthError(
                    f"ClickHouse at {self._where} refused the login: {e.message.splitlines()[0]}"
                ) from None
            first = e.message.strip().splitlines()[0] if e.message else str(e)
            raise StoreQueryError(f"{first} [sql: {sql.strip()[:300]}]", code=e.code) from None
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError) as e:
            self._client.disconnect()
            raise StoreUnavailable(f"ClickHouse at {self._where} unreachable: {e}") from None

    def execute(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        rows = self._run(bind(sql, params), settings={"use_numpy": False})
        return [tuple(r) for r in rows or []]

    def query_columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        cols, types = self._run(bind(sql, params), columnar=True, with_column_types=True)
        if not types:
            return {}
        out: dict[str, np.ndarray] = {}
        for i, (name, typ) in enumerate(types):
            dt = _DTYPES.get(typ, object)
            out[name] = np.asarray(cols[i], dtype=dt) if cols else np.empty(0, dt)
        return out

    def insert_columns(
        self, table: str, columns: Mapping[str, np.ndarray], dedup_token: str | None = None
    ) -> None:
        if not columns or len(next(iter(columns.values()))) == 0:
            return
        settings: dict[str, Any] = {"use_numpy": True}
        # Servers before 22.2 do not know the setting; on them a retried batch is collapsed
        # by the ReplacingMergeTree key instead (reads use FINAL).
        if dedup_token is not None and self.server_version() >= (22, 2):
            settings["insert_deduplication_token"] = dedup_token
        self._run(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES",
            [np.ascontiguousarray(c) for c in columns.values()],
            columnar=True,
            settings=settings,
        )

    def server_version(self) -> tuple[int, int]:
        if self._version is None:
            v = str(self._run("SELECT version()", settings={"use_numpy": False})[0][0])
            major, minor = v.split(".")[:2]
            self._version = (int(major), int(minor))
        return self._version

    def close(self) -> None:
        self._client.disconnect()
