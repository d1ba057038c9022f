"""Migrations: idempotent re-runs, half-applied detection, edited-file detection, cluster DDL."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.embedded import EmbeddedBackend
from store.exceptions import HalfAppliedMigration, MigrationError
from store.migrate import SCHEMA_MIGRATIONS_DDL, Migration, load_migrations, migrate, render
from store.store import Store
from tagtrail.config import Settings


def test_rerun_is_noop(store: Store) -> None:
    b = store.backend
    before = b.execute("SELECT count() FROM schema_migrations")[0][0]
    tables = b.execute("SELECT name FROM system.tables WHERE database = currentDatabase()")
    assert migrate(b, store.settings) == []
    assert b.execute("SELECT count() FROM schema_migrations")[0][0] == before
    names = {t for (t,) in tables}
    assert {"sightings", "sightings_by_cell", "cell_minute", "reader_minute", "alerts"} <= names
    ttl = b.execute("SELECT create_table_query FROM system.tables WHERE name = 'sightings'")[0][0]
    assert "toIntervalDay(180)" in ttl


def test_half_applied_is_reported_then_resumed(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "migs"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Log;\n")
    (folder / "0002_b.sql").write_text(
        "CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Log;\nCREATE TABLE broken (;\n"
    )
    b = EmbeddedBackend(settings.store_dir)
    try:
        with pytest.raises(MigrationError, match=r"0002_b: statement 2 of 2 failed"):
            migrate(b, settings, folder=folder)
        with pytest.raises(HalfAppliedMigration, match="0002_b was started but never finished"):
            migrate(b, settings, folder=folder)
        (folder / "0002_b.sql").write_text("CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Log;\n")
        assert migrate(b, settings, folder=folder, resume=True) == ["0002_b"]
        assert migrate(b, settings, folder=folder) == []
        (folder / "0001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (y UInt8) ENGINE = Log;\n")
        with pytest.raises(MigrationError, match="0001_a was applied but its file has changed"):
            migrate(b, settings, folder=folder)
    finally:
        b.close()


def test_ttl_follows_settings(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, sightings_ttl_days=30)
    stmts = render(load_migrations()[0], s)
    assert any("toIntervalDay(30)" in st for st in stmts)


def test_cluster_ddl_parses(store: Store, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, cluster="city")
    stmts = [
        st
        for m in [Migration(0, "schema_migrations", SCHEMA_MIGRATIONS_DDL), *load_migrations()]
        for st in render(m, s)
    ]
    for st in stmts:
        assert "ON CLUSTER 'city'" in st
        # ClickHouse's own parser: formatQuery raises on a syntax error.
        (formatted,) = store.backend.execute("SELECT formatQuery({q:String})", {"q": st})[0]
        assert "ON CLUSTER city" in formatted
    creates = [st for st in stmts if st.startswith("CREATE TABLE") and "_local ON" in st]
    assert all("ENGINE = Replicated" in st for st in creates)
    dists = [st for st in stmts if "ENGINE = Distributed('city'" in st]
    assert len(dists) == len(creates)
    mvs = [st for st in stmts if "MATERIALIZED VIEW" in st]
    assert mvs and all("TO " in st and "_local" in st.split("FROM", 1)[1] for st in mvs)
