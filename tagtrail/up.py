"""`tagtrail up`: broker (unless TAGTRAIL_KAFKA), store, worker, sink and API in one process.

With `--no-worker`, everything but the worker (which then runs as `tagtrail worker` processes).

`Pipeline` is also what the demo and the end-to-end tests run, so they exercise exactly this.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import uvicorn
from rich.console import Console

from core.config import Settings
from core.errors import ConfigError
from core.priority import favour_event_loop
from core.runtime import RunningPipeline, clear_running, stop_event_on_signals, write_running
from recovery.ratelimit import RateLimiter
from store.runner import StoreRunner
from stream.exceptions import BrokerUnavailable
from stream.faust_app import exit_now
from stream.followers.hotlist import HotlistFollower
from stream.followers.registry import RegistryFollower
from stream.kafka.topics import ensure_topics
from stream.sinks.sightings import build_sink
from stream.worker.gc_pause import freeze_long_lived
from stream.worker.worker import Worker
from tagtrail.broker.launcher import LocalKafka, metadata_ok
from tagtrail.listen import api_socket
from tagtrail.logs import configure_logging
from tagtrail.metrics_server import OpsPoller, instrument_api

log = logging.getLogger(__name__)


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    try:
        api_socket(host, port).close()
    except OSError:
        raise ConfigError(f"API port {host}:{port} is taken (set TAGTRAIL_API_PORT)") from None


class Pipeline:
    """The whole pipeline in this process; `async with Pipeline(settings)` starts and stops it.

    With `worker=False` the stream worker is left out (store, sink and API only): workers then run
    as `tagtrail worker` processes, each with its own GIL, against the same broker.
    """

    def __init__(self, settings: Settings, *, worker: bool = True) -> None:
        self.settings = settings
        self.with_worker = worker
        self.broker: LocalKafka | None = None
        self.bootstrap = settings.kafka
        self.runner: StoreRunner | None = None
        self.registry: RegistryFollower | None = None
        self.hotlist: HotlistFollower | None = None
        self.app: Any = None
        self.sink: Any = None
        self.ops: OpsPoller | None = None
        self.api: Any = None
        self.server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self.api_url = ""
        self.admin_key = ""

    async def start(self) -> Pipeline:
        from recovery.api import ServiceContext, create_api
        from store.open import open_store

        s = self.settings
        _check_port_free(s.api_host, s.api_port)
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"data folder {s.data_dir} is not writable: {e.strerror}") from None
        if not s.kafka:
            self.broker = LocalKafka(
                s.data_dir / "kafka",
                s.kafka_cache_dir,
                port=s.kafka_port,
                heap_mb=s.kafka_heap_mb,
                partitions=s.partitions,
                start_timeout_s=s.kafka_start_timeout_s,
            )
            await asyncio.to_thread(self.broker.start)
            self.bootstrap = self.broker.bootstrap
        elif not await metadata_ok(s.kafka, timeout_s=5.0):
            raise BrokerUnavailable(f"Kafka broker at {s.kafka} (TAGTRAIL_KAFKA) is unreachable")
        store = await asyncio.to_thread(open_store, s)
        self.runner = StoreRunner(store)
        await ensure_topics(s, self.bootstrap)
        if self.with_worker:
            self.registry = RegistryFollower(self.bootstrap, s.topic_readers)
            await self.registry.start()
            self.hotlist = HotlistFollower(self.bootstrap, s.topic_hotlist)
            await self.hotlist.start()
            self.app = Worker(s, self.bootstrap, self.registry, self.hotlist, on_fatal=self._fatal)
            await self.app.start()
        # With the worker in this process, the raw-read agent validates against the same registry.
        self.sink = build_sink(
            s, self.bootstrap, self.runner, on_fatal=self._fatal, registry=self.registry
        )
        await self.sink.start()
        ctx = ServiceContext(
            settings=s,
            runner=self.runner,
            bootstrap=self.bootstrap,
            limiter=RateLimiter(s.api_rate_per_s, s.api_rate_burst),
            tile_url=s.console_tile_url,
        )
        self.api = create_api(ctx)
        instrument_api(self.api)
        self.ops = OpsPoller(s, self.bootstrap, self.runner.run)
        await self.ops.start()
        await ctx.start()
        self.admin_key = ctx.local_admin_key
        sock = api_socket(s.api_host, s.api_port)
        port = sock.getsockname()[1]
        # log_config=None: uvicorn's records go through our handlers (tagtrail.logs), not its own.
        # The client is the socket's peer unless that is a proxy trusted by the settings.
        config = uvicorn.Config(
            self.api, log_level="warning", log_config=None, lifespan="off",
            proxy_headers=bool(s.trusted_proxies), forwarded_allow_ips=s.trusted_proxies,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._server_task.done():
                self._server_task.result()
            await asyncio.sleep(0.02)
        self.api_url = f"http://{s.api_host}:{port}"
        self._ctx = ctx
        freeze_long_lived()  # the API's alert stream must not stall on full collections either
        return self

    def _fatal(self, exc: BaseException) -> None:
        # The broker runs in its own session: take it down before the process leaves.
        if self.broker is not None:
            self.broker.kill()
        exit_now(exc)

    async def stop(self) -> None:
        if self.ops is not None:
            await self.ops.stop()
        if self.server is not None:
            self.server.should_exit = True
            if self._server_task is not None:
                await asyncio.gather(self._server_task, return_exceptions=True)
        if getattr(self, "_ctx", None) is not None:
            await self._ctx.stop()
        if self.app is not None:
            await self.app.stop()
        if self.sink is not None:
            await self.sink.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self.hotlist is not None:
            await self.hotlist.stop()
        if self.runner is not None:
            await asyncio.to_thread(self.runner.close)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)

    async def __aenter__(self) -> Pipeline:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _up(settings: Settings, console: Console, *, worker: bool = True) -> None:
    stop = stop_event_on_signals()
    async with Pipeline(settings, worker=worker) as p:
        write_running(
            settings,
            RunningPipeline(
                pid=os.getpid(), kafka=p.bootstrap, api_url=p.api_url, admin_key=p.admin_key
            ),
        )
        console.print(
            f"tagtrail up: kafka {p.bootstrap}, API {p.api_url}, "
            f"store {settings.clickhouse or settings.store_dir}. Ctrl-C stops."
        )
        try:
            await stop.wait()
        finally:
            clear_running(settings)
    console.print("tagtrail stopped")


def run_up(settings: Settings, *, worker: bool = True) -> None:
    configure_logging(settings)
    favour_event_loop()
    asyncio.run(_up(settings, Console(), worker=worker))


def run_broker_foreground(settings: Settings, *, port: int, console: Console) -> None:
    broker = LocalKafka(
        settings.data_dir / "kafka",
        settings.kafka_cache_dir,
        port=port,
        heap_mb=settings.kafka_heap_mb,
        partitions=settings.partitions,
    )
    broker.start()
    console.print(f"Kafka ready at {broker.bootstrap} (Ctrl-C stops)")
    sigs = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        signal.sigwait(sigs)
    finally:
        broker.stop()
