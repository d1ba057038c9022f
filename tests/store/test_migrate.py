"""Migrations: idempotent re-runs, half-applied detection, edited-file detection, cluster DDL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.config import Settings
from store.embedded import EmbeddedBackend
from store.exceptions import HalfAppliedMigration, MigrationError
from store.migrate import SCHEMA_MIGRATIONS_DDL, Migration, load_migrations, migrate, render
from store.store import Store
from store.ttl import TTL_COLUMNS, current_ttl_days, sync_ttls


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


def test_changed_ttl_setting_is_applied_to_existing_tables(tmp_path: Path) -> None:
    b = EmbeddedBackend(tmp_path / "store")
    try:
        migrate(b, Settings(data_dir=tmp_path))
        assert current_ttl_days(b, "sightings") == 180
        assert current_ttl_days(b, "raw_reads") == 7
        shorter = Settings(data_dir=tmp_path, sightings_ttl_days=30, raw_reads_ttl_days=2)
        assert migrate(b, shorter) == []  # no new migration, yet the TTLs follow the settings
        for table in TTL_COLUMNS:
            want = 2 if table == "raw_reads" else 30
            assert current_ttl_days(b, table) == want, table
        assert sync_ttls(b, shorter) == []  # idempotent
        # Rows past the new retention are dropped by the TTL (materialized on MODIFY TTL).
        old = int(time.time() * 1000) - 40 * 86_400_000
        b.execute(
            "INSERT INTO sightings (tag_id, reader_id, first_ts, last_ts, version) "
            "VALUES (1, 1, {t:Int64}, {t:Int64}, 1)",
            {"t": old},
        )
        assert b.execute("SELECT count() FROM sightings")[0][0] == 0
    finally:
        b.close()


def test_cluster_ddl_parses(store: Store, tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, cluster="city")
    stmts = [
        st
        for m in [Migration(0, "schema_migrations", SCHEMA_MIGRATIONS_DDL), *load_migrations()]
        for st in render(m, s)
    ]
    for st in stmts:
        # ClickHouse's own parser: formatQuery raises on a syntax error.
        (formatted,) = store.backend.execute("SELECT formatQuery({q:String})", {"q": st})[0]
        if st.startswith("INSERT"):  # backfills run once, through the Distributed tables
            assert "_local" not in st
            continue
        assert "ON CLUSTER 'city'" in st
        assert "ON CLUSTER city" in formatted
    creates = [st for st in stmts if st.startswith("CREATE TABLE") and "_local ON" in st]
    assert all("ENGINE = Replicated" in st for st in creates)
    dists = [st for st in stmts if "ENGINE = Distributed('city'" in st]
    assert len(dists) == len(creates)
    mvs = [st for st in stmts if "MATERIALIZED VIEW" in st]
    assert mvs and all("TO " in st and "_local" in st.split("FROM", 1)[1] for st in mvs)
    # A new column reaches both the replicated local table and the Distributed one over it;
    # an engine setting only the local one.
    adds = [st for st in stmts if "ADD COLUMN IF NOT EXISTS webhook_url" in st]
    assert sorted(st.split(" ON CLUSTER")[0] for st in adds) == [
        "ALTER TABLE bikes", "ALTER TABLE bikes_local",
    ]  # fmt: skip
    settings_alters = [st for st in stmts if "MODIFY SETTING" in st]
    assert settings_alters and all("_local ON CLUSTER" in st for st in settings_alters)
