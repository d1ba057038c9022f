"""The e2e benchmark's theft reports: by owners on the recovery API, or straight onto the hotlist.

`Owners` (`--reports api`): a theft's bike is registered (`POST /v1/bikes`) when the simulator
reveals the theft, and the theft is reported (`POST /v1/thefts`) when the replay passes its
report time, by one of a few owner keys, as owners do in the city. The run then goes through the
service's own path: the case is stored, the API puts it on the hotlist, and each case's first
alert makes the service mark it spotted (`recovery.alert_feed`), all while the load is measured.
The replay runs a day ~200x faster than the city lives and with ~30x its thefts, so the API gets
thousands of times the city's report rate, on top of the ingest load, on the same two cores.

`HotlistReports` (`--reports topic`, the default): each case goes straight on the hotlist topic
(the stream/alert_records contract), as the API puts it there; the service has no record of it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaProducer

from core.records.alerts import HotlistEntry, encode_hotlist

# Owner keys the stolen bikes are spread over (each key has its own request budget).
N_OWNERS = 8


@dataclass
class Case:
    case_id: str  # the API's, once reported ("" until then)
    tag_id: int
    stolen_at_ms: int
    reported_at_ms: int  # simulated
    registered_wall_ms: int = 0  # wall clock when the API acknowledged the report


@dataclass
class Owners:
    """Owners on the API at `http` (a client with its base_url), one key each."""

    http: httpx.AsyncClient
    keys: list[str]
    refused: list[str] = field(default_factory=list)  # reports the API refused, with reasons
    # Wall ms from a report's request to the API's answer, and from its due time (the replay
    # reaching its report time) to the answer, including waiting for the bike's registration.
    answer_ms: list[int] = field(default_factory=list)
    due_to_answer_ms: list[int] = field(default_factory=list)

    @classmethod
    async def create(cls, http: httpx.AsyncClient, admin_key: str, n: int = N_OWNERS) -> Owners:
        keys = []
        for i in range(n):
            r = await http.post(
                "/v1/keys",
                json={"role": "owner", "name": f"benchmark owner {i}"},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            _check(r, "creating an owner key")
            keys.append(r.json()["key"])
        return cls(http, keys)

    def _auth(self, tag_id: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tag_id % len(self.keys)]}"}

    async def register(self, tag_id: int) -> None:
        body = {"tag_id": tag_id, "plate": f"T{tag_id % 10**12}", "model": "e-bike"}
        r = await self.http.post("/v1/bikes", json=body, headers=self._auth(tag_id))
        _check(r, f"registering bike {tag_id}")

    async def report(self, case: Case, registered: asyncio.Future[None] | None) -> bool:
        """Report the theft once its bike is registered; False if the API refused it (409: the
        bike already has an open case), which is recorded in `refused`."""
        due = now_ms()
        if registered is not None:
            await registered
        body = {"tag_id": case.tag_id, "stolen_at": case.stolen_at_ms, "place": "benchmark"}
        sent = now_ms()
        r = await self.http.post("/v1/thefts", json=body, headers=self._auth(case.tag_id))
        answered = now_ms()
        self.answer_ms.append(answered - sent)
        self.due_to_answer_ms.append(answered - due)
        if r.status_code == 409:
            self.refused.append(f"tag {case.tag_id}: {r.text[:200]}")
            return False
        _check(r, f"reporting the theft of {case.tag_id}")
        case.case_id = r.json()["case"]["case_id"]
        case.registered_wall_ms = answered
        return True


@dataclass
class HotlistReports:
    """Reports written straight to the hotlist topic; the same interface as `Owners`."""

    producer: AIOKafkaProducer
    topic: str
    refused: list[str] = field(default_factory=list)  # (never: nothing refuses)
    answer_ms: list[int] = field(default_factory=list)
    due_to_answer_ms: list[int] = field(default_factory=list)

    async def register(self, tag_id: int) -> None:
        return None  # the hotlist has no bikes, only cases

    async def report(self, case: Case, registered: asyncio.Future[None] | None) -> bool:
        due = now_ms()
        case.case_id = f"bench-{case.tag_id}"
        key, value = encode_hotlist(HotlistEntry(case.case_id, case.tag_id, case.stolen_at_ms))
        await (await self.producer.send(self.topic, value, key=key))
        case.registered_wall_ms = now_ms()
        self.answer_ms.append(case.registered_wall_ms - due)
        self.due_to_answer_ms.append(case.registered_wall_ms - due)
        return True


Reporter = Owners | HotlistReports


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check(r: httpx.Response, what: str) -> None:
    if not r.is_success:
        raise RuntimeError(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
