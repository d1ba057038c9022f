"""Store fixtures: a fresh embedded store (chdb) per test in a temp folder, closed afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from store.open import open_store
from store.store import Store

# Sightings older than the TTL are dropped at insert, so test data lives in recent days.
TODAY_MS = (int(time.time()) // 86_400) * 86_400_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = open_store(settings)
    try:
        yield s
    finally:
        s.close()
