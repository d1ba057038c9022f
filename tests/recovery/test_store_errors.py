"""Store failures at the API: one that may pass answers 503 with the error's own Retry-After;
any other (a bad query, a broken schema) is a fault here, logged in one line and answered 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from recovery.exceptions import Conflict, InvalidField, NotFound, NotReady, RateLimited
from recovery.http_errors import retry_after, status_of
from store.exceptions import StoreError, StoreUnavailable
from store.store import Store
from tests.recovery.harness import Service


class FailingBackend:
    """The real backend, except that statements reading `table` raise `error`."""

    def __init__(self, real: Any, table: str, error: StoreError) -> None:
        self.real, self.table, self.error = real, table, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _check(self, sql: str) -> None:
        if f"FROM {self.table} " in sql:
            raise self.error

    def execute(self, sql: str, params: Any = None) -> Any:
        self._check(sql)
        return self.real.execute(sql, params)

    def query_columns(self, sql: str, params: Any = None) -> Any:
        self._check(sql)
        return self.real.query_columns(sql, params)


@contextmanager
def readers_failing(svc: Service, error: StoreError) -> Iterator[None]:
    """The service's store, with its reader registry failing with `error` meanwhile."""
    runner = svc.ctx.runner
    real = runner.store
    runner.store = Store(FailingBackend(real.backend, "readers", error), real.settings)  # type: ignore[arg-type]
    try:
        yield
    finally:
        runner.store = real


@pytest.fixture(scope="module")
def ops(service: Service) -> dict[str, str]:
    return {"Authorization": service.new_key("ops", "ops")["Authorization"]}


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (StoreUnavailable("server gone", retry_after_s=3), "3"),
        (StoreUnavailable("server gone", retry_after_s=2.2), "3"),  # rounded up
        (StoreUnavailable("server gone", retry_after_s=0.1), "1"),
        (StoreError("busy", retriable=True), "1"),  # no retry_after_s of its own
    ],
)
def test_retriable_store_error_is_503_with_its_retry_after(
    service: Service, ops: dict[str, str], error: StoreError, retry: str
) -> None:
    with readers_failing(service, error):
        r = httpx.get(f"{service.url}/v1/readers", headers=ops)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == retry
    assert r.json() == {"error": "the store is unavailable; retry shortly"}


def test_failed_query_is_a_logged_500(
    service: Service, ops: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A real failure of the embedded store: the table the route reads is not there."""

    def rename(a: str, b: str) -> None:
        sql = f"RENAME TABLE {a} TO {b}"
        service.call(service.ctx.runner.run(lambda s: s.backend.execute(sql)))

    rename("readers", "readers_away")
    try:
        with caplog.at_level(logging.ERROR, logger="recovery.http_errors"):
            r = httpx.get(f"{service.url}/v1/readers", headers=ops)
    finally:
        rename("readers_away", "readers")
    assert r.status_code == 500, r.text
    assert "Retry-After" not in r.headers
    assert r.json() == {"error": "internal error (logged)"}  # no SQL, no engine message
    logged = [x for x in caplog.records if x.name == "recovery.http_errors"]
    assert len(logged) == 1 and logged[0].exc_info is None
    line = logged[0].getMessage()
    assert "GET /v1/readers" in line and "StoreQueryError" in line and "\n" not in line
    # Back to normal once the table is.
    assert httpx.get(f"{service.url}/v1/readers", headers=ops).status_code == 200


def test_non_retriable_store_error_is_500(service: Service, ops: dict[str, str]) -> None:
    with readers_failing(service, StoreError("columns of unequal length")):
        r = httpx.get(f"{service.url}/v1/readers", headers=ops)
    assert r.status_code == 500 and r.json() == {"error": "internal error (logged)"}


def test_domain_errors_map_to_statuses() -> None:
    assert status_of(NotFound("no case c", kind="case", key="c")) == 404
    assert status_of(Conflict("taken", kind="tag", key=1)) == 409
    assert status_of(InvalidField("bad", field="x")) == 422  # before its base's 400
    assert status_of(RateLimited("slow down", retry_after_s=0.2)) == 429
    assert status_of(NotReady()) == 503 and NotReady().retriable
    assert [retry_after(x) for x in (3, 2.01, 0, -1, float("nan"), None, "x")] == [
        "3", "3", "1", "1", "1", "1", "1",
    ]  # fmt: skip
