"""Runs the recovery service on its own event loop in a background thread (tests, benchmarks).

The caller's thread talks to it over HTTP exactly as clients do; `Service.call` runs a coroutine
on the service's loop (e.g. a store call through its runner). Real store, real broker.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from core.config import Settings
from recovery.api import ServiceContext, create_api
from store.open import open_store
from store.runner import StoreRunner
from stream.kafka.topics import ensure_topics
from tagtrail.listen import api_socket


@dataclass
class Service:
    url: str
    ctx: ServiceContext
    admin_key: str
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Any, timeout_s: float = 30) -> Any:
        """Run a coroutine on the service's loop (e.g. a store query through its runner)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def new_key(self, role: str, name: str = "k", owner_id: str | None = None) -> dict[str, str]:
        body: dict[str, Any] = {"role": role, "name": name}
        if owner_id:
            body["owner_id"] = owner_id
        r = httpx.post(
            f"{self.url}/v1/keys", json=body, headers={"Authorization": f"Bearer {self.admin_key}"}
        )
        r.raise_for_status()
        return {"Authorization": f"Bearer {r.json()['key']}", "key_id": r.json()["key_id"]}


@contextmanager
def running_service(settings: Settings, **ctx_args: Any) -> Iterator[Service]:
    """The service on `settings` (TAGTRAIL_KAFKA must be set); ctx_args go to ServiceContext."""
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop = threading.Event()

    async def main() -> None:
        store = await asyncio.to_thread(open_store, settings)
        runner = StoreRunner(store)
        await ensure_topics(settings, settings.kafka)
        ctx = ServiceContext(settings=settings, runner=runner, bootstrap=settings.kafka, **ctx_args)
        api = create_api(ctx)
        await ctx.start()
        sock = api_socket("127.0.0.1", 0)
        # The client is the socket's peer unless that is a proxy trusted by the settings.
        config = uvicorn.Config(
            api,
            log_level="warning",
            lifespan="off",
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        ready["svc"] = Service(
            f"http://127.0.0.1:{sock.getsockname()[1]}",
            ctx,
            ctx.local_admin_key,
            asyncio.get_running_loop(),
        )
        started.set()
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            server.should_exit = True
            await task
            await ctx.stop()
            await asyncio.to_thread(runner.close)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:
            ready["error"] = e
            started.set()

    t = threading.Thread(target=thread_main, name="recovery-service", daemon=True)
    t.start()
    started.wait(120)
    if "error" in ready:
        raise ready["error"]
    try:
        yield ready["svc"]
    finally:
        stop.set()
        t.join(60)
