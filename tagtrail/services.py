"""The pipeline's parts as separate processes: `tagtrail worker`, `tagtrail sink`, `tagtrail api`.

Each waits for SIGINT/SIGTERM and stops cleanly; each exposes Prometheus metrics on
TAGTRAIL_METRICS_PORT when it is set (the API also serves /metrics itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn
from aiokafka.errors import KafkaError

from core.config import Settings
from core.priority import favour_event_loop
from core.runtime import until_signalled
from recovery.ratelimit import RateLimiter
from stream.exceptions import BrokerUnavailable
from stream.kafka.topics import ensure_topics
from stream.worker.gc_pause import freeze_long_lived
from tagtrail.broker.launcher import metadata_ok
from tagtrail.local import bootstrap_for
from tagtrail.logs import configure_logging
from tagtrail.metrics_server import OpsPoller, instrument_api, serve_metrics

log = logging.getLogger(__name__)


# A restarting broker is back well within this: a process started (or restarted by its
# supervisor) during the outage waits for it; a broker away for longer is a one-line error.
BROKER_WAIT_S = 60.0


async def _reachable(settings: Settings, bootstrap: str) -> None:
    """Wait until the broker answers and the topics exist (up to BROKER_WAIT_S)."""
    deadline = time.monotonic() + BROKER_WAIT_S
    while True:
        why = "no answer"
        if await metadata_ok(bootstrap, timeout_s=5.0):
            try:
                await ensure_topics(settings, bootstrap)
                return
            except (KafkaError, BrokerUnavailable) as e:  # went away again in between
                why = str(e)
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"Kafka broker at {bootstrap} is unreachable (waited {BROKER_WAIT_S:.0f} s)"
            )
        log.warning("Kafka broker at %s not available (%s); waiting for it", bootstrap, why)
        await asyncio.sleep(1.0)


async def _broker(settings: Settings, what: str) -> str:
    bootstrap = bootstrap_for(settings, what)
    await _reachable(settings, bootstrap)
    serve_metrics(settings)
    return bootstrap


async def _worker(settings: Settings) -> None:
    from stream.followers.hotlist import HotlistFollower
    from stream.followers.registry import RegistryFollower
    from stream.worker.worker import Worker

    bootstrap = await _broker(settings, "worker")
    while True:
        registry = RegistryFollower(bootstrap, settings.topic_readers)
        hotlist = HotlistFollower(bootstrap, settings.topic_hotlist)
        app = Worker(settings, bootstrap, registry, hotlist)
        try:
            await registry.start()
            await hotlist.start()
            await app.start()
            break
        except KafkaError as e:
            # The broker went away while this worker connected: start over once it is back.
            log.warning("Kafka broker lost while starting (%r); starting again", e)
            await app.stop()
            await hotlist.stop()
            await registry.stop()
            await _reachable(settings, bootstrap)
    try:
        await until_signalled()
    finally:
        await app.stop()
        await hotlist.stop()
        await registry.stop()


async def _sink(settings: Settings) -> None:
    from store.open import open_store
    from store.runner import StoreRunner
    from stream.sinks.sightings import build_sink

    bootstrap = await _broker(settings, "sink")
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    app = build_sink(settings, bootstrap, runner)
    await app.start()
    freeze_long_lived()
    try:
        await until_signalled()
    finally:
        await app.stop()
        await asyncio.to_thread(runner.close)


async def _api(settings: Settings) -> None:
    from recovery.api import ServiceContext, create_api
    from store.open import open_store
    from store.runner import StoreRunner

    bootstrap = await _broker(settings, "api")
    runner = StoreRunner(await asyncio.to_thread(open_store, settings))
    ctx = ServiceContext(
        settings=settings,
        runner=runner,
        bootstrap=bootstrap,
        limiter=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst),
        tile_url=settings.console_tile_url,
    )
    api = create_api(ctx)
    instrument_api(api)
    ops = OpsPoller(settings, bootstrap, runner.run)
    await ctx.start()
    await ops.start()
    freeze_long_lived()  # the alert stream (SSE) must not stall on full collections
    server = uvicorn.Server(
        uvicorn.Config(
            api,
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            log_config=None,  # its records go through our handlers (tagtrail.logs)
            lifespan="off",
            # The client is the socket's peer unless that is a proxy trusted by the settings.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies,
        )
    )
    try:
        await server.serve()
    finally:
        await ops.stop()
        await ctx.stop()
        await asyncio.to_thread(runner.close)


def _run(main: Callable[[Settings], Awaitable[None]], settings: Settings) -> None:
    configure_logging(settings)
    favour_event_loop()
    asyncio.run(main(settings))  # type: ignore[arg-type]


def run_worker(settings: Settings) -> None:
    _run(_worker, settings)


def run_sink(settings: Settings) -> None:
    _run(_sink, settings)


def run_api(settings: Settings) -> None:
    _run(_api, settings)
