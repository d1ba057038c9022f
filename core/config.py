"""The one settings object: every `TAGTRAIL_*` environment variable is read here, nowhere else."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError


class Settings(BaseSettings):
    """Process settings, frozen once built. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="TAGTRAIL_", frozen=True, extra="ignore")

    data_dir: Path = Path("./data")
    log_level: str = Field(default="WARNING", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # ClickHouse server DSN; empty means the embedded chdb store in data_dir/clickhouse.
    clickhouse: str = ""
    # Kafka bootstrap servers; empty means: start (or find) the local broker.
    kafka: str = ""
    kafka_port: int = Field(default=0, ge=0, le=65535)  # local broker; 0 picks a free port
    kafka_cache_dir: Path = Path.home() / ".cache" / "tagtrail" / "kafka"
    kafka_heap_mb: int = Field(default=512, ge=128, le=16384)
    kafka_start_timeout_s: float = Field(default=60.0, gt=0)
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)  # of the topics tagtrail creates

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_rate_per_s: float = Field(default=50.0, gt=0)  # per API key
    api_rate_burst: int = Field(default=200, ge=1)
    console_tile_url: str = ""  # optional map tiles for the police console; none: offline drawing
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Owner webhooks go to public https hosts only; these hosts, IPs or CIDRs (comma-separated)
    # may also be plain http or private, e.g. an integrator's notification gateway on the LAN.
    webhook_allow_hosts: str = ""

    topic_reads: str = "tag-reads"
    topic_readers: str = "readers"
    topic_dead_letter: str = "tag-reads-dlq"
    topic_late: str = "tag-reads-late"
    topic_sightings: str = "sightings"
    topic_hotlist: str = "hotlist"
    topic_alerts: str = "alerts"
    consumer_group: str = "tagtrail-worker"

    max_clock_skew_ms: int = Field(default=600_000, gt=0)  # reads further in the future are invalid
    gap_ms: int = Field(default=30_000, gt=0)
    max_lateness_ms: int = Field(default=48 * 3600 * 1000, gt=0)
    session_timeout_s: float = Field(default=10.0, ge=6, le=300)  # consumer group liveness
    # Each partition's state is checkpointed this often when the worker has idle moments between
    # steps, and at least every 3x this under constant load (stream.worker.worker). A checkpoint
    # writes
    # the partition's whole state (~300 MB late in a day replayed at 200 k reads/s, 4 partitions:
    # at 10 s the worker wrote 120 MB/s, and the writes slowed the steps they overlapped); a
    # restart re-applies the reads since the last one (up to 3x this: at 200 k reads/s, 90 s of
    # reads, ~30 s of work).
    checkpoint_interval_s: float = Field(default=30.0, gt=0)
    sink_batch_max_rows: int = Field(default=200_000, gt=0)
    sink_flush_interval_s: float = Field(default=0.5, gt=0)
    sightings_ttl_days: int = Field(default=180, ge=1)
    raw_reads_ttl_days: int = Field(default=7, ge=1)
    back_search_window_h: int = Field(default=72, ge=1)
    cluster: str = ""

    @field_validator("clickhouse")
    @classmethod
    def _check_dsn(cls, v: str) -> str:
        if v and urlparse(v).scheme not in ("clickhouse", "clickhouses"):
            raise ValueError("must look like clickhouse://user:pass@host:9000/db")
        return v

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
