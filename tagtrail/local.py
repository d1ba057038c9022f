"""How CLI commands reach the pipeline: through a running `tagtrail up`, or on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.config import Settings
from core.errors import ConfigError, TagtrailError
from core.runtime import RunningPipeline, find_running


def running_or_fail(settings: Settings, what: str) -> RunningPipeline:
    up = find_running(settings)
    if up is None:
        raise ConfigError(
            f"{what} needs a running `tagtrail up` on {settings.data_dir} "
            "(start it, or set TAGTRAIL_DATA_DIR to its data folder)"
        )
    return up


def bootstrap_for(settings: Settings, what: str) -> str:
    if settings.kafka:
        return settings.kafka
    return running_or_fail(settings, what).kafka


def api_call(up: RunningPipeline, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {up.admin_key}"}
    try:
        r = httpx.request(method, up.api_url + path, headers=headers, timeout=120, **kw)
    except httpx.HTTPError as e:
        raise TagtrailError(f"cannot reach tagtrail up at {up.api_url}: {e}") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("error", r.text)
        except ValueError:
            detail = r.text
        raise TagtrailError(f"{method} {path} failed ({r.status_code}): {detail}")
    return r


def read_readers_file(path: Path) -> list[dict[str, Any]]:
    """Rows of a reader file (CSV or Parquet: reader_id, lat, lon, kind)."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    try:
        table: pa.Table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise TagtrailError(f"{path}: cannot read ({e})") from None
    missing = {"reader_id", "lat", "lon", "kind"} - set(table.column_names)
    if missing:
        raise TagtrailError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return table.select(["reader_id", "lat", "lon", "kind"]).to_pylist()
