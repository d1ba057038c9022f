"""The service's front door (issue 22): limits per client address, the key checked before a body
is read, no-store on /v1 answers, /docs and /metrics behind configuration, webhook targets
checked on what they resolve to. A real service on the session broker with the default policy
(no webhook allowlist, default docs and metrics access, tight unknown-key limits).

Some tests speak from other loopback addresses (127.0.0.2, 127.0.0.3): each client address has
its own limits, so they cannot starve the module's other tests of theirs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from core.config import load_settings
from recovery.api import ServiceContext, create_api
from store import accounts
from tagtrail.broker.launcher import LocalKafka
from tests.recovery.conftest import module_settings
from tests.recovery.harness import Service, running_service, seed_sightings
from tests.recovery.test_webhook_policy import INTERNAL_SPELLINGS

BAD_KEY_BURST = 20
ADDRESS_BURST = 100


@pytest.fixture(scope="module")
def service(
    kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    settings = module_settings(
        tmp_path_factory.mktemp("front-door"),
        kafka_broker.bootstrap,
        webhook_allow_hosts="",
        api_bad_key_rate_per_s=1.0,
        api_bad_key_burst=BAD_KEY_BURST,
        api_address_rate_per_s=50.0,
        api_address_rate_burst=ADDRESS_BURST,
        api_docs="key",
        metrics_open=False,
    )
    with running_service(settings) as svc:
        yield svc


def h(key: dict[str, str]) -> dict[str, str]:
    return {"Authorization": key["Authorization"]}


def from_address(ip: str) -> httpx.Client:
    """A client whose connections come from `ip` (any 127/8 address reaches the service)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=ip), timeout=30)


def test_unknown_keys_are_limited_per_client_address(service: Service) -> None:
    lookups = 0
    real_run = service.ctx.runner.run

    def counting_run(fn: Any, *args: Any, **kw: Any) -> Any:
        nonlocal lookups
        lookups += fn is accounts.find_key
        return real_run(fn, *args, **kw)

    police = service.new_key("police", "neighbour")
    service.ctx.runner.run = counting_run  # type: ignore[method-assign]
    statuses: list[int] = []
    retry_after: set[str] = set()
    t0 = time.monotonic()
    try:
        with from_address("127.0.0.2") as client:
            for i in range(400):
                r = client.get(
                    f"{service.url}/v1/thefts",
                    headers={"Authorization": f"Bearer tt_owner_{i:012x}_guess"},
                )
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_after.add(r.headers.get("retry-after", ""))
            # Another address is not affected by this one's guessing.
            ok = httpx.get(f"{service.url}/v1/thefts", params={"reason": "x"}, headers=h(police))
    finally:
        service.ctx.runner.run = real_run  # type: ignore[method-assign]
    elapsed = time.monotonic() - t0
    allowed = BAD_KEY_BURST + int(elapsed) + 2
    assert set(statuses) == {401, 429}, set(statuses)
    assert statuses.count(401) <= allowed, (statuses.count(401), elapsed)
    assert lookups <= allowed, f"{lookups} store lookups for {len(statuses)} unknown keys"
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
    assert ok.status_code == 200, ok.text


def test_requests_are_limited_per_client_address(service: Service) -> None:
    statuses = []
    with from_address("127.0.0.3") as client:
        for _ in range(3 * ADDRESS_BURST):
            r = client.get(f"{service.url}/v1/bikes")  # no key at all: cheap, still counted
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    assert len(statuses) > ADDRESS_BURST // 2


def _post_partial(url: str, path: str, declared: int, headers: dict[str, str]) -> bytes:
    """POST declaring `declared` body bytes but sending 1 KiB: what answers before the rest?"""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {declared}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"readers": [' + b" " * 1011)
        s.settimeout(5)
        try:
            return s.recv(65536)
        except TimeoutError:
            return b"(no answer while the body was still coming)"


def test_the_key_is_checked_before_the_body_is_read(service: Service) -> None:
    # The reader import accepts 16 MB bodies; a 9.9 MB one without a key must not be read.
    for path, declared, headers in (
        ("/v1/readers", 9_900_000, {}),
        ("/v1/readers", 9_900_000, {"Authorization": "Bearer tt_admin_000000000000_guess"}),
        ("/v1/thefts", 60_000, {}),
        ("/v1/bikes", 20_000, {"X-Api-Key": "not-a-key"}),
    ):
        answer = _post_partial(service.url, path, declared, headers)
        assert answer.startswith(b"HTTP/1.1 401"), (path, headers, answer[:200])
        assert b"no-store" in answer.lower()


def test_v1_answers_are_not_stored_by_caches(service: Service) -> None:
    owner = service.new_key("owner", "cache", owner_id="owner-cache")
    police = service.new_key("police", "cache")
    tag = 7_700_001
    r = httpx.post(
        f"{service.url}/v1/bikes", json={"tag_id": tag, "plate": "NS1"}, headers=h(owner)
    )
    assert r.status_code == 201, r.text
    seed_sightings(service, tag, [(5, int(time.time() * 1000) - 60_000, 25.04, 102.71)])
    answers = [
        r,
        httpx.get(f"{service.url}/v1/bikes/{tag}/last-seen", headers=h(owner)),
        httpx.get(
            f"{service.url}/v1/bikes/{tag}/last-seen", params={"reason": "t"}, headers=h(police)
        ),
        httpx.get(f"{service.url}/v1/bikes", headers=h(owner)),
        httpx.get(f"{service.url}/v1/thefts", headers=h(owner)),
        httpx.get(f"{service.url}/v1/bikes/1/last-seen", headers=h(owner)),  # 404
        httpx.get(f"{service.url}/v1/bikes"),  # 401
        httpx.get(f"{service.url}/v1/no-such-route", headers=h(owner)),  # 404
    ]
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200, 404, 401, 404]
    for a in answers:
        assert a.headers.get("cache-control") == "no-store", (a.request.url, a.headers)


def test_docs_and_metrics_need_a_key_by_default(service: Service) -> None:
    owner = service.new_key("owner", "docs", owner_id="owner-docs")
    ops = service.new_key("ops", "scraper")
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
        r = httpx.get(f"{service.url}{path}")
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{service.url}{path}", headers=h(owner)).status_code == 200, path
    assert httpx.get(f"{service.url}/metrics", headers=h(owner)).status_code == 403
    r = httpx.get(f"{service.url}/metrics", headers=h(ops))
    assert r.status_code == 200 and "tagtrail_webhooks_total" in r.text
    # What stays open: health checks and the console's static files (its data needs a key).
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert httpx.get(f"{service.url}/console/").status_code == 200


def test_docs_and_metrics_follow_their_settings() -> None:
    def get(paths: list[str], **overrides: Any) -> list[httpx.Response]:
        settings = load_settings(data_dir="/nonexistent", **overrides)
        ctx = ServiceContext(settings=settings, runner=None, bootstrap="")  # type: ignore[arg-type]

        async def main() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=create_api(ctx))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return [await client.get(p) for p in paths]

        return asyncio.run(main())

    docs = ["/docs", "/redoc", "/openapi.json"]
    *closed, metrics = get([*docs, "/metrics"], api_docs="off", metrics_open=True)
    assert [r.status_code for r in closed] == [404, 404, 404]
    assert metrics.status_code == 200 and "tagtrail_webhooks_total" in metrics.text
    got = get([*docs, "/metrics"], api_docs="open")
    assert [r.status_code for r in got] == [200, 200, 200, 401]


def test_webhook_registration_checks_the_resolved_address(service: Service) -> None:
    owner = service.new_key("owner", "hooks", owner_id="owner-hooks")
    # The machine's own name passes a check of the text alone; it resolves to this machine.
    name = socket.gethostname().lower()
    try:
        own = {ai[4][0] for ai in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
    except OSError:
        own = set()
    internal = bool(own) and not any(ipaddress.ip_address(ip).is_global for ip in own)
    own_name = [name] if internal else []
    for host in (*INTERNAL_SPELLINGS, *own_name, "no-such-host.invalid"):
        url = f"https://{host}:8443/h"
        r = httpx.post(
            f"{service.url}/v1/bikes",
            json={"tag_id": 7_700_002, "plate": "WH1", "webhook_url": url},
            headers=h(owner),
        )
        assert r.status_code == 422 and "webhook_url" in r.text, (url, r.status_code, r.text)
