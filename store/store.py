"""The store's front door: one open backend plus the settings it was opened with."""

from __future__ import annotations

from types import TracebackType

from core.config import Settings
from store.backend import StoreBackend


class Store:
    """An open ClickHouse store. Use the functions of `store.queries` on it; close when done.

    Not safe for concurrent calls from several threads on the embedded backend: run store
    calls on one thread (see `store.runner.StoreRunner`).
    """

    def __init__(self, backend: StoreBackend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings

    @property
    def kind(self) -> str:
        return self.backend.kind

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
