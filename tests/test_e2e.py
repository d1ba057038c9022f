"""End to end through real components: gateway publisher -> Kafka -> Faust worker -> sink -> chdb
-> recovery API, compared with the reference sessionizer."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import httpx
import numpy as np
import pyarrow.parquet as pq

from core.config import Settings
from core.records.readers import ReaderRegistry
from core.records.reads import FLAG_MOBILE, Reads
from ingest.publisher import GatewayPublisher
from stream.sessionize.reference import reference_sightings
from tagtrail.up import Pipeline

T0 = 1_790_000_000_000  # 2026-09-21, well inside the valid timestamp range


def sample_reads() -> tuple[Reads, dict[int, tuple[float, float]]]:
    """Three fixed readers and one mobile one, five tags, duplicates, gaps and disorder."""
    readers = {101: (25.0400, 102.7100), 102: (25.0450, 102.7200), 103: (25.0500, 102.7300)}
    rng = np.random.default_rng(3)
    rows = []
    for tag in range(1, 6):
        t = T0 + tag * 1000
        for reader in (101, 102, 103):
            for k in range(int(rng.integers(2, 6))):
                rows.append(
                    (tag, reader, t + k * 1000, int(rng.integers(-90, -40)), 0, np.nan, np.nan)
                )
            t += 45_000 if tag % 2 else 20_000  # even tags stay within GAP of the next reader
        rows.append((tag, 101, T0 + tag * 1000, -41, 0, np.nan, np.nan))  # exact duplicate id
    for k in range(4):  # mobile reader 900 passes tag 3
        rows.append(
            (3, 900, T0 + 600_000 + k * 1000, -60 + k, FLAG_MOBILE, 25.06 + k * 1e-4, 102.74)
        )
    rng.shuffle(rows)
    cols = list(zip(*rows, strict=True))
    reads = Reads.from_columns(
        tag_id=cols[0],
        reader_id=cols[1],
        ts_ms=cols[2],
        rssi_dbm=cols[3],
        flags=cols[4],
        lat=cols[5],
        lon=cols[6],
    )
    return reads, readers


async def _wait_for(pred: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[misc]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def _run(settings: Settings) -> None:
    reads, readers = sample_reads()
    registry = ReaderRegistry.from_columns(
        list(readers), [v[0] for v in readers.values()], [v[1] for v in readers.values()]
    )
    expected = reference_sightings(reads, settings.gap_ms, registry)
    async with Pipeline(settings) as p, httpx.AsyncClient(base_url=p.api_url) as http:
        admin = {"Authorization": f"Bearer {p.admin_key}"}
        body = {
            "readers": [
                {"reader_id": r, "lat": la, "lon": lo, "kind": "fixed"}
                for r, (la, lo) in readers.items()
            ]
            + [{"reader_id": 900, "lat": 0.0, "lon": 0.0, "kind": "mobile"}]
        }
        r = await http.post("/v1/readers", json=body, headers=admin)
        assert r.status_code == 200, r.text
        r = await http.post("/v1/keys", json={"role": "police", "name": "desk 1"}, headers=admin)
        assert r.status_code == 201, r.text
        police = {"Authorization": f"Bearer {r.json()['key']}"}
        await _wait_for(lambda: _true(len(p.registry.registry.reader_id) == 4), 20)

        async with GatewayPublisher(p.bootstrap, settings.topic_reads) as pub:
            half = len(reads) // 2
            await pub.publish(reads.take(np.arange(half)), gateway_id=7)
            await pub.publish(reads.take(np.arange(half, len(reads))), gateway_id=8)

        n_expected = len(expected["tag_id"])

        async def stored() -> bool:
            got = await http.get("/v1/export/sightings", headers=admin)
            return (
                got.status_code == 200
                and pq.read_table(io.BytesIO(got.content)).num_rows == n_expected
            )

        await _wait_for(stored, 60)
        got = pq.read_table(
            io.BytesIO((await http.get("/v1/export/sightings", headers=admin)).content)
        )
        for col, want in expected.items():
            np.testing.assert_array_equal(got.column(col).to_numpy(), want, err_msg=col)

        # last-seen: the latest sighting of tag 3 is the mobile reader's pass.
        r = await http.get("/v1/bikes/3/last-seen", params={"reason": "e2e test"}, headers=police)
        assert r.status_code == 200, r.text
        last = r.json()
        assert last["reader_id"] == 900
        i = np.flatnonzero(expected["tag_id"] == 3)[-1]
        assert last["last_ts"] == int(expected["last_ts"][i])
        # Police without a reason are refused; anonymous callers too.
        assert (await http.get("/v1/bikes/3/last-seen", headers=police)).status_code == 400
        assert (await http.get("/v1/bikes/3/last-seen")).status_code == 401


async def _true(v: bool) -> bool:
    return v


def test_reads_to_last_seen(settings_factory: Callable[..., Settings]) -> None:
    asyncio.run(_run(settings_factory()))
