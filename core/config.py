"""The one settings object: every `TAGTRAIL_*` environment variable is read here, nowhere else."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError


class Settings(BaseSettings):
    """Process settings, frozen once built. Units are in the names.

    Every field has a one-line `description`: `tagtrail settings` prints them as the README's
    settings table (tests/test_settings_table.py keeps the two in step).
    """

    model_config = SettingsConfigDict(env_prefix="TAGTRAIL_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=Path("./data"),
        description="where the embedded store, local broker, worker checkpoints and run files live",
    )
    log_level: str = Field(
        default="WARNING",
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="level of tagtrail's own logs; DEBUG logs every worker step with its timings",
    )
    clickhouse: str = Field(
        default="",
        description="ClickHouse server DSN (clickhouse://user:pass@host:9000/db); empty: the "
        "embedded chdb store in data_dir/clickhouse",
    )
    kafka: str = Field(
        default="",
        description="Kafka bootstrap servers; empty: start (or find) the local broker",
    )
    kafka_port: int = Field(
        default=0, ge=0, le=65535, description="port of the local broker; 0 picks a free one"
    )
    kafka_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "tagtrail" / "kafka",
        description="where the local broker's jars are fetched once from Maven Central",
    )
    kafka_heap_mb: int = Field(
        default=512, ge=128, le=16384, description="JVM heap of the local broker"
    )
    kafka_start_timeout_s: float = Field(
        default=60.0, gt=0, description="how long the local broker may take to answer"
    )
    partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="partitions of the topics tagtrail creates: the most workers one group uses",
    )
    replication_factor: int = Field(
        default=1, ge=1, le=16, description="replicas of the topics tagtrail creates"
    )

    api_host: str = Field(
        default="127.0.0.1", description="address the API (and a worker's metrics port) binds"
    )
    api_port: int = Field(default=8080, ge=0, le=65535, description="port of the recovery API")
    api_rate_per_s: float = Field(
        default=50.0, gt=0, description="requests per second allowed to one API key"
    )
    api_rate_burst: int = Field(
        default=200, ge=1, description="requests one API key may make at once above its rate"
    )
    # Limits per client address come before the key: guessing keys must cost the service nothing.
    api_address_rate_per_s: float = Field(
        default=500.0,
        gt=0,
        description="requests per second allowed from one client address (an IPv6 /64) to keyed "
        "routes, whatever their keys (raise it for a gateway speaking for many clients)",
    )
    api_address_rate_burst: int = Field(
        default=1000,
        ge=1,
        description="requests one client address may make at once above its rate",
    )
    api_bad_key_rate_per_s: float = Field(
        default=1.0,
        gt=0,
        description="unknown or revoked keys per second one client address may present; beyond "
        "it (and the burst) its keyed requests get 429 without a key lookup",
    )
    api_bad_key_burst: int = Field(
        default=20,
        ge=1,
        description="unknown or revoked keys one client address may present at once above its rate",
    )
    api_docs: Literal["off", "key", "open"] = Field(
        default="key",
        description="the API's /docs, /redoc and /openapi.json: off, for any valid key (key), or "
        "for anyone (open)",
    )
    console_tile_url: str = Field(
        default="",
        description="map tile URL template for the police console; empty: no tiles, offline "
        "drawing",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus /metrics port, without a key, of `tagtrail worker`, `sink` and "
        "`api` (bind it where only Prometheus reaches it); 0: none",
    )
    metrics_open: bool = Field(
        default=False,
        description="serve the API's own /metrics (on api_port) without a key; off: for ops and "
        "admin keys only",
    )
    # A webhook URL comes from the owner, so by default only public https hosts are called.
    webhook_allow_hosts: str = Field(
        default="",
        description="comma-separated hosts, IPs or CIDRs owner webhooks may also reach over http "
        "or on a private network (e.g. a notification gateway on the LAN)",
    )

    # Behind a reverse proxy the socket's peer is the proxy: only a proxy named here is believed
    # about the client (its X-Forwarded-For), for the audit log's client_ip and per-address limits.
    trusted_proxies: str = Field(
        default="",
        description="comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For names "
        "the API's client; empty: the client is the socket's peer, the header is ignored",
    )

    topic_reads: str = Field(default="tag-reads", description="topic of the gateways' read batches")
    topic_readers: str = Field(default="readers", description="topic of the reader registry")
    topic_dead_letter: str = Field(
        default="tag-reads-dlq", description="topic of rejected reads, each with its reason"
    )
    topic_late: str = Field(
        default="tag-reads-late", description="topic of reads later than max_lateness_ms"
    )
    topic_sightings: str = Field(
        default="sightings", description="topic of sighting upserts, worker -> sink"
    )
    topic_hotlist: str = Field(default="hotlist", description="topic of open theft cases")
    topic_alerts: str = Field(default="alerts", description="topic of theft alerts")
    consumer_group: str = Field(
        default="tagtrail-worker",
        description="consumer group of the workers; the sinks use it with -sink, -raw, -backfill",
    )

    max_clock_skew_ms: int = Field(
        default=600_000, gt=0, description="reads further than this in the future are invalid"
    )
    gap_ms: int = Field(
        default=30_000,
        gt=0,
        description="reads of one tag at one reader at most this far apart are one sighting",
    )
    max_lateness_ms: int = Field(
        default=48 * 3600 * 1000,
        gt=0,
        description="reads later than this go to the late-reads topic for `tagtrail backfill`",
    )
    session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="consumer group liveness: a silent member loses its partitions after this",
    )
    # Each checkpoint writes a partition's whole state and slows the steps it overlaps, while a
    # longer interval lengthens a restart's catch-up: docs/operations.md (Sizing) has the trade.
    checkpoint_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="a worker checkpoints each partition's state this often (at the latest 3x "
        "this under constant load); a restart re-applies the reads since",
    )
    sink_batch_max_rows: int = Field(
        default=200_000,
        gt=0,
        description="rows per store insert the sinks aim at (counted as 100 a Kafka message)",
    )
    sink_flush_interval_s: float = Field(
        default=0.5, gt=0, description="the sinks insert at least this often"
    )
    sightings_ttl_days: int = Field(
        default=180,
        ge=1,
        description="retention of sightings and their aggregates, in days",
    )
    raw_reads_ttl_days: int = Field(
        default=7, ge=1, description="retention of raw reads (what late reads are merged with)"
    )
    back_search_window_h: int = Field(
        default=72,
        ge=1,
        description="a theft report answers with the bike's sightings of at most this many hours",
    )
    cluster: str = Field(
        default="", description="ClickHouse cluster name for ON CLUSTER DDL; empty: one server"
    )

    @field_validator("clickhouse")
    @classmethod
    def _check_dsn(cls, v: str) -> str:
        if v and urlparse(v).scheme not in ("clickhouse", "clickhouses"):
            raise ValueError("must look like clickhouse://user:pass@host:9000/db")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: str) -> str:
        items = [x.strip() for x in v.split(",") if x.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from None
        return ",".join(items)

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a bad value raises ConfigError naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        first = e.errors()[0]
        name = "TAGTRAIL_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{name}: {first['msg']}") from None
