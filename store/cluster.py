"""Render the single-node migrations for a ClickHouse cluster (shards x replicas with Keeper).

Each table `t` becomes `t_local` (Replicated* engine, ON CLUSTER) plus a Distributed `t` over
it, so the query library runs unchanged against `t`. Materialized views fire on each shard's
local insert and write the local target. Inserts should go through the Distributed tables with
`insert_distributed_sync = 1`, so an insert is acknowledged only when the shards have it.
"""

from __future__ import annotations

import re

from store.exceptions import MigrationError

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.S)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(?:\s*\(([^)]*)\))?")
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b", re.S)
_FROM = re.compile(r"\bFROM (\w+)")
_ALTER = re.compile(r"^ALTER TABLE (\w+)\b")
# Column changes must reach the Distributed table too, or it keeps serving the old columns;
# engine settings and TTL exist only on the local MergeTree.
_COLUMN_ALTER = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b")
_INSERT = re.compile(r"^INSERT INTO \w+\b")
_ORDER_BY = re.compile(r"ORDER BY \(?\s*(\w+)")

# Tables whose rows must land on the shard of their tag (the identity includes tag_id); the
# default is the hash of the first ORDER BY column, which keeps a ReplacingMergeTree key on one
# shard so FINAL stays exact.
_SHARD_KEYS = {
    "sightings": "cityHash64(tag_id)",
    "sightings_by_cell": "cityHash64(tag_id)",
    "sightings_by_time": "cityHash64(tag_id)",
    "tag_reader_latest": "cityHash64(tag_id)",
    "raw_reads": "cityHash64(tag_id)",
    "audit_log": "rand()",
    "schema_migrations": "rand()",
}


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_for_cluster(stmt: str, cluster: str) -> list[str]:
    """The cluster form of one single-node statement (one or two statements)."""
    c = _quote(cluster)
    if m := _CREATE_TABLE.match(stmt):
        name = m.group(1)
        local = f"{name}_local"
        e = _ENGINE.search(stmt)
        if not e:
            raise MigrationError(f"table {name}: no MergeTree engine to replicate")
        zk_path = _quote(f"/clickhouse/tables/{{shard}}/{{database}}/{local}")
        args = ", ".join(a for a in (zk_path, "'{replica}'", (e.group(2) or "").strip()) if a)
        engine = f"ENGINE = Replicated{e.group(1)}({args})"
        local_stmt = (
            f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {c} ("
            + stmt[m.end() :][: e.start() - m.end()]
            + engine
            + stmt[e.end() :]
        )
        order = _ORDER_BY.search(stmt)
        default_key = f"cityHash64({order.group(1)})" if order else "rand()"
        key = _SHARD_KEYS.get(name, default_key)
        dist_stmt = (
            f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {c} AS {local} "
            f"ENGINE = Distributed({c}, currentDatabase(), {local}, {key})"
        )
        return [local_stmt, dist_stmt]
    if m := _CREATE_MV.match(stmt):
        name, target = m.group(1), m.group(2)
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} ON CLUSTER {c} TO {target}_local AS"
        body = _FROM.sub(lambda f: f"FROM {f.group(1)}_local", stmt[m.end() :])
        return [head + body]
    if m := _ALTER.match(stmt):
        rest = stmt[m.end() :]
        out = [f"ALTER TABLE {m.group(1)}_local ON CLUSTER {c}" + rest]
        if _COLUMN_ALTER.match(rest):
            out.append(f"ALTER TABLE {m.group(1)} ON CLUSTER {c}" + rest)
        return out
    if _INSERT.match(stmt):
        # A backfill: through the Distributed tables, run once from the migrating node.
        return [stmt]
    raise MigrationError(f"cannot render for a cluster: {stmt[:80]!r}")
