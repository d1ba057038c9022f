"""The demo's story through the recovery API, as its users would see it: history replayed,
an owner registering a bike and reporting its theft, the police console's live alert stream
while the live part comes in, then police last-seen and track (stating a reason)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
from rich.console import Console

from core.errors import TagtrailError
from ingest.replay import replay
from stream.kafka.progress import wait_drained
from tagtrail.demo_city import Bike, City, clock, publish_paced
from tagtrail.up import Pipeline

LIVE_SPEED = 60.0  # the live part: simulated seconds per wall second
SHOWN_ALERTS = 5
SHOWN_TRACK = 6
WAIT_S = 60.0


def shown(path: Path) -> str:
    """A path as the user can type it: relative to the current folder when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


class Out:
    """Plain lines, none over 80 columns: a label column, then what happened."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def line(self, text: str = "") -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def step(self, label: str, text: str) -> None:
        self.line(f"{label:<9} {text}")

    def more(self, text: str) -> None:
        self.line(" " * 10 + text)


@dataclass
class Story:
    """What the run measured, for the summary."""

    messages: int = 0
    history_reads: int = 0
    history_s: float = 0.0
    live_reads: int = 0
    sightings: int = 0
    bikes_seen: int = 0
    case_id: str = ""
    report_ms: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    matches: bool = False
    track: int = 0


class AlertWatch:
    """The police console's live alert stream (Server-Sent Events), read as the console does."""

    def __init__(self, http: httpx.AsyncClient, key: str, reason: str, out: Out) -> None:
        self.http, self.key, self.reason, self.out = http, key, reason, out
        self.alerts: list[dict[str, Any]] = []
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        resp = await self._stack.enter_async_context(
            self.http.stream(
                "GET",
                "/v1/alerts/stream",
                params={"reason": self.reason},
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=httpx.Timeout(10.0, read=None),
            )
        )
        if resp.status_code != 200:
            await resp.aread()
            raise TagtrailError(f"the alert stream refused: {resp.status_code} {resp.text}")
        # From here the stream's start is fixed: every alert published later is delivered.
        self._task = asyncio.create_task(self._read(resp))

    async def _read(self, resp: httpx.Response) -> None:
        event = data = ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif not line:
                if event == "alert" and data:
                    alert = json.loads(data)
                    alert["latency_ms"] = time.time() * 1000 - alert["created_at"]
                    self.alerts.append(alert)
                    self._show(alert)
                event = data = ""

    def _show(self, a: dict[str, Any]) -> None:
        n = len(self.alerts)
        if n <= SHOWN_ALERTS:
            self.out.step(
                "  ALERT",
                f"{clock(a['first_ts'])} reader {a['reader_id']} "
                f"({a['lat']:.4f}, {a['lon']:.4f})  +{a['latency_ms'] / 1000:.2f} s",
            )
        elif n == SHOWN_ALERTS + 1:
            self.out.more("(further alerts are counted in the summary)")

    async def wait_until(self, done: Any, timeout_s: float) -> None:
        """Until `done(alerts)` holds, the stream ends, or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while not done(self.alerts) and time.monotonic() < deadline:
            if self._task is not None and self._task.done():
                self._task.result()  # the stream ended: raise why
                break
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        await self._stack.aclose()


async def _until(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TagtrailError(f"demo failed: {what} within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


def _ok(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.is_error:
        raise TagtrailError(f"demo failed: {what}: HTTP {r.status_code} {r.text[:200]}")
    return r.json() if r.content else {}


async def _history(p: Pipeline, http: httpx.AsyncClient, city: City, out: Out, st: Story) -> None:
    admin = {"Authorization": f"Bearer {p.admin_key}"}
    _ok(await http.post("/v1/readers", json={"readers": city.readers}, headers=admin), "readers")
    await _until(
        lambda: len(p.registry.registry.reader_id) >= len(city.readers),
        WAIT_S,
        "the worker did not see the reader registry",
    )
    t = time.monotonic()
    st.messages, st.history_reads = await replay(
        city.folder / "history.parquet", p.bootstrap, p.settings.topic_reads
    )
    await wait_drained(p.settings, p.bootstrap)
    st.history_s = time.monotonic() - t
    got = await http.get("/v1/export/sightings", headers=admin)
    tags = pq.read_table(io.BytesIO(got.content)).column("tag_id").to_numpy()
    st.sightings, st.bikes_seen = len(tags), len(np.unique(tags))
    out.step(
        "history",
        f"{clock(city.start_ms)[:5]}-{clock(city.split_ms)[:5]} replayed: "
        f"{st.history_reads:,} reads -> {st.sightings:,} sightings, {st.history_s:.1f} s",
    )
    if not st.sightings:
        raise TagtrailError("demo failed: no sightings were stored from the history")


async def _report(
    p: Pipeline, http: httpx.AsyncClient, bike: Bike, keys: dict[str, str], out: Out, st: Story
) -> None:
    admin = {"Authorization": f"Bearer {p.admin_key}"}
    made = _ok(
        await http.post("/v1/keys", json={"role": "owner", "name": "Li Wei"}, headers=admin),
        "minting an owner key",
    )
    keys["owner"] = made["key"]
    owner = {"Authorization": f"Bearer {made['key']}"}
    out.step("owner", f"Li Wei's app gets an owner API key (key id {made['key_id']})")
    body = {"tag_id": bike.tag_id, "plate": bike.plate, "model": "Yadea DE3", "colour": "red"}
    _ok(await http.post("/v1/bikes", json=body, headers=owner), "registering the bike")
    out.more(f"registers bike {bike.plate} (tag {bike.tag_id})")
    t = time.monotonic()
    theft = {
        "tag_id": bike.tag_id,
        "stolen_at": bike.stolen_at,
        "place": "outside the office",
        "description": "red Yadea, basket on the front",
    }
    report = _ok(await http.post("/v1/thefts", json=theft, headers=owner), "reporting the theft")
    st.report_ms = (time.monotonic() - t) * 1000
    st.case_id = report["case"]["case_id"]
    out.more(f"theft reported: stolen at {clock(bike.stolen_at)} -> case {st.case_id}")
    seen = report["last_seen"]
    where = (
        f"last seen {clock(seen['last_ts'])} at reader {seen['reader_id']}"
        if seen
        else "not seen yet"
    )
    out.more(f"accepted in {st.report_ms:.0f} ms; the answer: {where}")
    # The worker follows the hotlist topic; the live reads must meet the case.
    await _until(
        lambda: bike.tag_id in set(p.hotlist.hotlist.tags.tolist()),
        WAIT_S,
        "the stream worker did not receive the case",
    )


async def _last_seen(
    http: httpx.AsyncClient, bike: Bike, police: dict[str, str], reason: str, out: Out
) -> dict[str, Any]:
    last = _ok(
        await http.get(
            f"/v1/bikes/{bike.tag_id}/last-seen", params={"reason": reason}, headers=police
        ),
        "police last-seen",
    )
    out.step("police", f'last-seen, reason "{reason}":')
    out.more(
        f"reader {last['reader_id']} at {clock(last['last_ts'])} "
        f"({last['lat']:.4f}, {last['lon']:.4f})"
    )
    return last


async def _track(
    http: httpx.AsyncClient, bike: Bike, police: dict[str, str], reason: str, out: Out, st: Story
) -> None:
    params = {"reason": reason, "from": bike.stolen_at, "to": int(time.time() * 1000)}
    track = _ok(
        await http.get(f"/v1/bikes/{bike.tag_id}/track", params=params, headers=police),
        "police track",
    )
    st.track = track["count"]
    out.more(f"track since the theft: {st.track} sightings")
    rows = track["sightings"]
    for s in rows[:SHOWN_TRACK]:
        out.more(
            f"  {clock(s['first_ts'])}-{clock(s['last_ts'])}  reader {s['reader_id']:<6} "
            f"{s['lat']:.4f}, {s['lon']:.4f}"
        )
    if len(rows) > SHOWN_TRACK:
        out.more(f"  ... {len(rows) - SHOWN_TRACK} more")


async def run_story(
    p: Pipeline, city: City, bike: Bike, out: Out, st: Story, keys: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=p.api_url, timeout=60) as http:
        await _history(p, http, city, out, st)
        await _report(p, http, bike, keys, out, st)
        admin = {"Authorization": f"Bearer {p.admin_key}"}
        made = _ok(
            await http.post(
                "/v1/keys", json={"role": "police", "name": "duty desk"}, headers=admin
            ),
            "minting a police key",
        )
        keys["police"] = made["key"]
        police = {"Authorization": f"Bearer {made['key']}"}
        reason = f"theft report {st.case_id}"
        watch = AlertWatch(http, made["key"], reason, out)
        await watch.open()
        try:
            out.step(
                "live",
                f"{clock(city.split_ms)[:5]}-{clock(city.end_ms)[:5]} at {LIVE_SPEED:.0f}x real "
                "time; the police console listens",
            )
            out.more("(+ s: from the gateway sending the read to the alert on screen)")
            st.live_reads = await publish_paced(
                city.folder / "live.parquet", p.bootstrap, p.settings.topic_reads, LIVE_SPEED
            )
            await wait_drained(p.settings, p.bootstrap)
            last = await _last_seen(http, bike, police, reason, out)
            # Every sighting is stored now; its alert may still be on its way to the console.
            key = (last["reader_id"], last["first_ts"])
            await watch.wait_until(
                lambda alerts: any((a["reader_id"], a["first_ts"]) == key for a in alerts), 10.0
            )
        finally:
            await watch.close()
        st.alerts = [a for a in watch.alerts if a["case_id"] == st.case_id]
        if not st.alerts:
            raise TagtrailError(f"demo failed: no alert arrived for case {st.case_id}")
        newest = max(st.alerts, key=lambda a: (a["first_ts"], a["last_ts"]))
        st.matches = (newest["reader_id"], newest["first_ts"]) == key
        out.more(
            "matches the newest alert's sighting"
            if st.matches
            else f"does NOT match the newest alert (reader {newest['reader_id']})"
        )
        await _track(http, bike, police, reason, out, st)
        case = _ok(
            await http.get(
                f"/v1/thefts/{st.case_id}", headers={"Authorization": f"Bearer {keys['owner']}"}
            ),
            "the owner's case",
        )
        out.step("owner", f"the app shows case {st.case_id} as {case['status']}")


def summary(out: Out, st: Story, total_s: float, log_file: Path) -> None:
    lat = sorted(a["latency_ms"] for a in st.alerts)
    out.line()
    out.line("summary")
    out.step(
        "  reads",
        f"{st.history_reads:,} history in {st.messages:,} gateway messages, {st.live_reads:,} live",
    )
    out.step(
        "  stored",
        f"{st.sightings:,} sightings of {st.bikes_seen:,} bikes from the history, "
        f"{st.history_reads / max(st.history_s, 1e-9):,.0f} reads/s",
    )
    out.step("  theft", f"case {st.case_id}, report accepted in {st.report_ms:.0f} ms")
    out.step(
        "  alerts",
        f"{len(lat)}, first +{st.alerts[0]['latency_ms'] / 1000:.2f} s, "
        f"slowest +{lat[-1] / 1000:.2f} s",
    )
    out.step(
        "  police",
        f"last-seen {'matches' if st.matches else 'does NOT match'} the newest alert; "
        f"track {st.track} sightings",
    )
    out.step("  total", f"{total_s:.1f} s; logs in {shown(log_file)}")
