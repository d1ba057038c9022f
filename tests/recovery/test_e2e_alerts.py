"""End to end on the real broker with the whole pipeline: an owner reports a theft, the bike
passes a reader, the workers' alert arrives on the SSE stream (latency printed), a client that
reconnects with Last-Event-ID misses nothing, and the recovered case stops further alerts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx

from core.config import Settings
from core.records.reads import Reads
from ingest.publisher import GatewayPublisher
from tagtrail.up import Pipeline
from tests.recovery.harness import SSEClient

TAG = 4242
READERS = {501: (25.040, 102.710), 502: (25.050, 102.720), 503: (25.060, 102.730)}


def passing(reader: int, t0: int) -> Reads:
    """The tag passing `reader`: three reads a second apart."""
    return Reads.from_columns(
        tag_id=[TAG] * 3, reader_id=[reader] * 3, ts_ms=[t0, t0 + 1000, t0 + 2000],
        rssi_dbm=[-50] * 3, flags=[0] * 3,
    )  # fmt: skip


async def wait_for(pred: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


async def _run(settings: Settings) -> None:
    async with Pipeline(settings) as p, httpx.AsyncClient(base_url=p.api_url) as http:
        admin = {"Authorization": f"Bearer {p.admin_key}"}
        body = {
            "readers": [
                {"reader_id": r, "lat": la, "lon": lo, "kind": "fixed"}
                for r, (la, lo) in READERS.items()
            ]
        }
        assert (await http.post("/v1/readers", json=body, headers=admin)).status_code == 200
        keys = {}
        for role in ("owner", "police"):
            r = await http.post("/v1/keys", json={"role": role, "name": role}, headers=admin)
            keys[role] = {"Authorization": f"Bearer {r.json()['key']}"}
        r = await http.post(
            "/v1/bikes", json={"tag_id": TAG, "plate": "E2E 1"}, headers=keys["owner"]
        )
        assert r.status_code == 201, r.text
        now = int(time.time() * 1000)
        r = await http.post(
            "/v1/thefts", json={"tag_id": TAG, "stolen_at": now - 60_000}, headers=keys["owner"]
        )
        assert r.status_code == 201, r.text
        case_id = r.json()["case"]["case_id"]
        await wait_for(lambda: _v(len(p.registry.registry.reader_id) == 3), 20, "registry")
        await wait_for(lambda: _v(TAG in set(p.hotlist.hotlist.tags.tolist())), 10, "hotlist")

        sse_url = f"{p.api_url}/v1/alerts/stream"
        live = await asyncio.to_thread(SSEClient, sse_url, keys["police"], {"reason": "e2e"})
        async with GatewayPublisher(p.bootstrap, settings.topic_reads) as pub:
            t_pub = time.monotonic()
            await pub.publish(passing(501, now), gateway_id=1)
            [ev] = await asyncio.to_thread(live.events, 1)
            latency_ms = 1000 * (time.monotonic() - t_pub)
            print(
                f"theft alert on the SSE stream {latency_ms:.0f} ms after the reads were published"
            )
            first = json.loads(ev["data"])
            assert first["case_id"] == case_id and first["reader_id"] == 501
            seen = {first["alert_id"]}
            await asyncio.to_thread(live.close)

            # Away from the stream while the bike passes the next reader: nothing is missed.
            await pub.publish(passing(502, now + 120_000), gateway_id=1)
            back = await asyncio.to_thread(
                SSEClient, sse_url, {**keys["police"], "Last-Event-ID": ev["id"]}, {"reason": "e2e"}
            )
            nxt = None
            while nxt is None or nxt["alert_id"] in seen:  # redeliveries keep their alert_id
                [e2] = await asyncio.to_thread(back.events, 1)
                assert int(e2["id"]) > int(ev["id"])
                nxt = json.loads(e2["data"])
            assert nxt["reader_id"] == 502 and nxt["case_id"] == case_id
            await asyncio.to_thread(back.close)

            # Recovered: a tombstone on the hotlist; the next pass is stored but raises no alert.
            r = await http.patch(
                f"/v1/thefts/{case_id}", json={"status": "recovered"}, headers=keys["owner"]
            )
            assert r.status_code == 200, r.text
            await wait_for(lambda: _v(TAG not in set(p.hotlist.hotlist.tags.tolist())), 10, "stop")
            await pub.publish(passing(503, now + 240_000), gateway_id=1)

        async def stored_503() -> bool:
            r = await http.get(
                f"/v1/bikes/{TAG}/last-seen", params={"reason": "e2e"}, headers=keys["police"]
            )
            return r.status_code == 200 and r.json()["reader_id"] == 503

        await wait_for(stored_503, 30, "third pass stored")
        await asyncio.sleep(1.0)  # the worker emits alerts before the sink stores sightings
        r = await http.get(
            "/v1/alerts", params={"case": case_id, "reason": "e2e"}, headers=keys["police"]
        )
        readers = {a["reader_id"] for a in r.json()["alerts"]}
        assert readers == {501, 502}, readers
        case = (await http.get(f"/v1/thefts/{case_id}", headers=keys["owner"])).json()
        assert [h["status"] for h in case["history"]] == ["open", "spotted", "recovered"]


async def _v(x: bool) -> bool:
    return x


def test_theft_to_alert_to_recovery(settings_factory: Callable[..., Settings]) -> None:
    asyncio.run(_run(settings_factory()))
