"""Errors raised by the store; retry logic reads `retriable`, never the message text."""

from __future__ import annotations

from core.errors import TagtrailError


class StoreError(TagtrailError):
    """Any failure of the ClickHouse store (embedded or server)."""


class StoreLockedError(StoreError):
    """The embedded store folder is held by another process (or another folder is open here)."""

    def __init__(self, message: str, *, folder: str) -> None:
        super().__init__(message, retriable=False)
        self.folder = folder


class StoreUnavailable(StoreError):
    """The server could not be reached or dropped the connection; the same call may succeed later.

    A retried insert is safe: inserts carry a deduplication token, so a batch that did reach
    the server before the failure is stored once.
    """

    retriable = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message, retriable=True)
        self.retry_after_s = retry_after_s


class StoreAuthError(StoreError):
    """The server refused the user name or password given in the DSN."""


class StoreQueryError(StoreError):
    """ClickHouse rejected a statement; `code` is ClickHouse's numeric error code when known."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message, retriable=False)
        self.code = code


class MigrationError(StoreError):
    """The schema could not be brought to the latest version."""


class HalfAppliedMigration(MigrationError):
    """A migration started earlier never finished; the schema may be partly changed."""

    def __init__(self, message: str, *, version: int, name: str) -> None:
        super().__init__(message)
        self.version = version
        self.name = name
