"""Open the store named by the settings: a server DSN, or else the embedded folder."""

from __future__ import annotations

from core.config import Settings
from store.backend import StoreBackend
from store.embedded import EmbeddedBackend
from store.migrate import migrate
from store.native import NativeBackend
from store.store import Store


def open_backend(settings: Settings) -> StoreBackend:
    """`settings.clickhouse` DSN -> native protocol; empty -> chdb on `settings.store_dir`."""
    if settings.clickhouse:
        return NativeBackend(settings.clickhouse)
    return EmbeddedBackend(settings.store_dir)


def open_store(settings: Settings, *, apply_migrations: bool = True) -> Store:
    """Open the store and (by default) bring its schema up to date.

    Raises `StoreLockedError` if another process owns the embedded folder, `StoreAuthError`
    or `StoreUnavailable` for a server, `HalfAppliedMigration` if an earlier migration stopped
    midway (run `tagtrail store migrate --resume` after checking it).
    """
    backend = open_backend(settings)
    try:
        if apply_migrations:
            migrate(backend, settings)
    except BaseException:
        backend.close()
        raise
    return Store(backend, settings)
