"""Behind a reverse proxy listed in settings.trusted_proxies, the audit's client_ip is the client
the proxy names in X-Forwarded-For (one embedded store per process: a module of its own)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from store import accounts
from tagtrail.broker.launcher import LocalKafka
from tests.recovery.conftest import module_settings
from tests.recovery.harness import Service, running_service


@pytest.fixture(scope="module")
def service(
    kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service behind a proxy on 127.0.0.1 (where the tests connect from)."""
    settings = module_settings(
        tmp_path_factory.mktemp("proxied"), kafka_broker.bootstrap, trusted_proxies="127.0.0.1"
    )
    with running_service(settings) as svc:
        yield svc


def test_a_trusted_proxy_names_the_client(service: Service) -> None:
    pol = service.new_key("police", "behind proxy")
    r = httpx.get(
        f"{service.url}/v1/alerts",
        params={"reason": "r"},
        headers={"Authorization": pol["Authorization"], "X-Forwarded-For": "203.0.113.7"},
    )
    assert r.status_code == 200
    [rec] = service.call(
        service.ctx.runner.run(lambda s: accounts.audit_records(s, actor=pol["key_id"]))
    )
    assert rec["client_ip"] == "203.0.113.7"
