"""The one interface both store transports implement (embedded chdb, clickhouse-driver).

Statements use ClickHouse's own parameter syntax, `{name:Type}`; each backend binds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

Params = Mapping[str, Any] | None


@runtime_checkable
class StoreBackend(Protocol):
    """A connection to one ClickHouse database.

    Every method raises a `store.exceptions.StoreError` subclass on failure:
    `StoreUnavailable` (retriable) when the engine cannot be reached, `StoreQueryError`
    when a statement is rejected.
    """

    #: "embedded" or "native"
    kind: str

    def execute(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows (empty for DDL and inserts)."""
        ...

    def query_columns(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        """Run a SELECT and return its result as numpy columns, in SELECT order."""
        ...

    def insert_columns(
        self, table: str, columns: Mapping[str, np.ndarray], dedup_token: str | None = None
    ) -> None:
        """Insert equal-length numpy columns in one batch.

        With `dedup_token`, repeating the same call (same token, same data) stores the
        batch once: that is what makes retries after a lost acknowledgement safe.
        """
        ...

    def server_version(self) -> tuple[int, int]:
        """(major, minor) of the ClickHouse engine."""
        ...

    def close(self) -> None:
        """Release the connection (and, embedded, the folder lock). Idempotent."""
        ...
