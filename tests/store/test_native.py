"""The native-protocol backend against a real clickhouse-server (Debian's 18.16) child process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deploy.clickhouse.server import ClickHouseServer
from store.exceptions import StoreAuthError, StoreUnavailable
from store.native import NativeBackend

if not (shutil.which("clickhouse-server") or Path("/usr/sbin/clickhouse-server").exists()):
    pytest.skip(
        "clickhouse-server not installed (apt-get install clickhouse-server clickhouse-client)",
        allow_module_level=True,
    )

# Types 18.16 supports; the store's Int64-millisecond times fit it unchanged.
TABLE = (
    "CREATE TABLE IF NOT EXISTS s (tag_id UInt64, reader_id UInt32, first_ts Int64, "
    "max_rssi Int8, lat Float64, version UInt64) "
    "ENGINE = ReplacingMergeTree(version) ORDER BY (tag_id, first_ts, reader_id)"
)


def batch(i: int, n: int = 1000) -> dict[str, np.ndarray]:
    return {
        "tag_id": np.arange(i * n, (i + 1) * n, dtype=np.uint64),
        "reader_id": np.full(n, i, np.uint32),
        "first_ts": np.arange(n, dtype=np.int64) * 1000 + 1_700_000_000_000,
        "max_rssi": np.full(n, -40 - i, np.int8),
        "lat": np.linspace(25.0, 25.1, n),
        "version": np.ones(n, np.uint64),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    srv = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"), password="s3cret pw")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()  # also after a failed test: no server outlives the session


def test_connect_and_wrong_password(server: ClickHouseServer) -> None:
    b = NativeBackend(server.dsn.replace("s3cret pw", "s3cret%20pw"))
    assert b.server_version()[0] >= 18
    b.close()
    bad = server.dsn.replace("s3cret pw", "wrong")
    with pytest.raises(StoreAuthError, match="refused the login"):
        NativeBackend(bad)


def test_columnar_insert_read_back_and_restart(server: ClickHouseServer) -> None:
    b = NativeBackend(server.dsn.replace(" ", "%20"))
    b.execute("DROP TABLE IF EXISTS s")
    b.execute(TABLE)
    b.insert_columns("s", batch(0), dedup_token="b0")
    got = b.query_columns(
        "SELECT tag_id, reader_id, first_ts, max_rssi, lat FROM s FINAL "
        "WHERE reader_id = {r:UInt32} ORDER BY tag_id",
        {"r": 0},
    )
    for k, v in got.items():
        np.testing.assert_array_equal(v, batch(0)[k], err_msg=k)
        assert v.dtype == batch(0)[k].dtype

    server.stop()
    with pytest.raises(StoreUnavailable) as e:
        b.insert_columns("s", batch(1), dedup_token="b1")
    assert e.value.retriable
    server.start()
    # The same client reconnects by itself; the retried batch and a new one land once each.
    b.insert_columns("s", batch(1), dedup_token="b1")
    b.insert_columns("s", batch(2), dedup_token="b2")
    rows = b.execute("SELECT reader_id, count() FROM s GROUP BY reader_id ORDER BY reader_id")
    assert rows == [(0, 1000), (1, 1000), (2, 1000)]
    b.close()
