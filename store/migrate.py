"""Versioned schema migrations: apply idempotently, record each in `schema_migrations`.

A migration writes a `started` row before its first statement and an `applied` row after its
last; a `started` without `applied` is a half-applied migration, reported instead of guessed at.
Statements use IF NOT EXISTS, so `migrate(resume=True)` may safely re-run a half-applied one.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from store.backend import StoreBackend
from store.cluster import render_for_cluster
from store.exceptions import HalfAppliedMigration, MigrationError, StoreError
from store.ttl import sync_ttls

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_VAR_RE = re.compile(r"\{\{(\w+)\}\}")
# Raw reads are for replay and read-rate dashboards: days, not months.

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     UInt32,
    name        String,
    checksum    String,
    state       String,
    statements  UInt32,
    at_ms       Int64
) ENGINE = MergeTree
ORDER BY (version, at_ms)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        # Of the template, so changing a TTL setting is not mistaken for an edited migration.
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations in `folder`, by version; two files with one version number is an error."""
    out: dict[int, Migration] = {}
    for p in sorted(folder.glob("*.sql")):
        m = _FILE_RE.match(p.name)
        if not m:
            raise MigrationError(f"{p}: migration files are named NNNN_name.sql")
        v = int(m.group(1))
        if v in out:
            raise MigrationError(f"{p}: version {v} also used by {out[v].name}")
        out[v] = Migration(v, p.stem, p.read_text())
    return [out[v] for v in sorted(out)]


def template_vars(settings: Settings) -> dict[str, str]:
    return {
        "sightings_ttl_days": str(settings.sightings_ttl_days),
        "raw_reads_ttl_days": str(settings.raw_reads_ttl_days),
    }


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements at `;` ending a line (SQL comments dropped)."""
    body = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def render(migration: Migration, settings: Settings) -> list[str]:
    """The statements of `migration` with settings filled in, for a cluster if one is set."""
    values = template_vars(settings)

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise MigrationError(f"{migration.name}: unknown placeholder {{{{{m.group(1)}}}}}")
        return values[m.group(1)]

    stmts = [_VAR_RE.sub(sub, st) for st in split_statements(migration.text)]
    if settings.cluster:
        return [s for st in stmts for s in render_for_cluster(st, settings.cluster)]
    return stmts


def _state(backend: StoreBackend) -> dict[int, tuple[str, str, str]]:
    """version -> (name, checksum, 'applied' | 'started')."""
    rows = backend.execute(
        "SELECT version, any(name), argMax(checksum, at_ms), "
        "if(countIf(state = 'applied') > 0, 'applied', 'started') "
        "FROM schema_migrations GROUP BY version"
    )
    return {int(v): (n, c, s) for v, n, c, s in rows}


def _record(backend: StoreBackend, m: Migration, state: str, n: int) -> None:
    backend.execute(
        "INSERT INTO schema_migrations (version, name, checksum, state, statements, at_ms) "
        "VALUES ({v:UInt32}, {n:String}, {c:String}, {s:String}, {k:UInt32}, {t:Int64})",
        {"v": m.version, "n": m.name, "c": m.checksum, "s": state, "k": n,
         "t": time.time_ns() // 1_000_000},
    )  # fmt: skip


def migrate(
    backend: StoreBackend,
    settings: Settings,
    *,
    resume: bool = False,
    folder: Path = MIGRATIONS_DIR,
) -> list[str]:
    """Bring the schema to the latest version; return the names of the migrations applied now.

    Afterwards each table's TTL is brought to the configured retention (`store.ttl`).
    Raises `HalfAppliedMigration` if an earlier run stopped inside a migration (pass
    `resume=True` to re-run it: its statements are idempotent), and `MigrationError` if an
    applied migration's file has changed since, or a statement fails (naming file and statement).
    """
    migrations = load_migrations(folder)
    bootstrap = Migration(0, "schema_migrations", SCHEMA_MIGRATIONS_DDL)
    for stmt in render(bootstrap, settings):
        backend.execute(stmt)
    state = _state(backend)
    applied: list[str] = []
    for m in migrations:
        if m.version in state:
            name, checksum, st = state[m.version]
            if st == "applied":
                if checksum != m.checksum:
                    raise MigrationError(
                        f"migration {m.name} was applied but its file has changed since; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            if not resume:
                raise HalfAppliedMigration(
                    f"migration {name} was started but never finished (the schema may be "
                    "partly changed); inspect it, then run `tagtrail store migrate --resume`",
                    version=m.version,
                    name=name,
                )
        stmts = render(m, settings)
        _record(backend, m, "started", len(stmts))
        for i, stmt in enumerate(stmts, 1):
            try:
                backend.execute(stmt)
            except StoreError as e:
                raise MigrationError(
                    f"migration {m.name}: statement {i} of {len(stmts)} failed: {e}"
                ) from e
        _record(backend, m, "applied", len(stmts))
        applied.append(m.name)
    # Tables created by an earlier run keep the TTL they were rendered with: follow the settings.
    sync_ttls(backend, settings)
    return applied


def pending(backend: StoreBackend, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Names of migrations not yet applied (half-applied ones included)."""
    state = _state(backend)
    return [
        m.name
        for m in load_migrations(folder)
        if state.get(m.version, ("", "", ""))[2] != "applied"
    ]
