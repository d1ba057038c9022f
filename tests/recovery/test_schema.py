"""Property-based API test with schemathesis against the service's own /openapi.json: for
generated requests (as police, owner and admin) no 5xx, and every documented response matches
its schema and content type. Bounded examples per operation keep it to a few seconds."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.recovery.harness import Service


@pytest.fixture(scope="module")
def callers(service: Service) -> list[dict[str, str]]:
    return [
        {"Authorization": service.new_key("police", "fuzz")["Authorization"]},
        {"Authorization": service.new_key("owner", "fuzz")["Authorization"]},
        {"Authorization": f"Bearer {service.admin_key}"},
    ]


def test_api_conforms(service: Service, callers: list[dict[str, str]]) -> None:
    # Explicit per-operation loop: schemathesis' pytest plugin does not support pytest 9 yet.
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", headers=callers[0])
    # An endless event stream cannot be validated as one response; it has its own tests.
    schema = schema.exclude(path="/v1/alerts/stream")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15
    for op in ops:

        @given(case=op.as_strategy())
        @settings(
            max_examples=12, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def check(case: Any) -> None:
            for headers in callers:
                case.call_and_validate(
                    base_url=service.url,
                    headers=headers,
                    checks=[
                        not_a_server_error,
                        response_schema_conformance,
                        content_type_conformance,
                    ],
                )

        check()
