"""Module-scoped recovery service on the session broker, with fresh store and topics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from core.config import Settings, load_settings
from tagtrail.broker.launcher import LocalKafka
from tests.recovery.harness import Service, running_service


def module_settings(tmp: object, bootstrap: str, **overrides: object) -> Settings:
    u = uuid.uuid4().hex[:8]
    base: dict[str, object] = {
        "data_dir": tmp,
        "kafka": bootstrap,
        "api_port": 0,
        **{
            f"topic_{t}": f"{t}-{u}"
            for t in ("reads", "readers", "dead_letter", "late", "sightings", "hotlist", "alerts")
        },
        "consumer_group": f"group-{u}",
        "webhook_allow_hosts": "127.0.0.1",  # the tests' webhook receiver
        # Every test speaks from 127.0.0.1: per-address limits only where a test sets them.
        "api_address_rate_per_s": 1e6,
        "api_address_rate_burst": 10**6,
        "api_bad_key_burst": 10**6,
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture(scope="module")
def service(
    kafka_broker: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    settings = module_settings(tmp_path_factory.mktemp("recovery"), kafka_broker.bootstrap)
    with running_service(settings) as svc:
        yield svc
