"""Operational metrics that no single event updates: the metrics port of worker processes, API
request instrumentation, and a poller for consumer lag and reader silence.

Everything lands in prometheus_client's default registry (with its process collector for CPU and
RSS), so `tagtrail up` serves all of it on the API's /metrics and a worker on its own port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from core.config import Settings
from stream import metrics
from stream.kafka.cluster import topic_partitions
from stream.kafka.groups import drain_stages

log = logging.getLogger(__name__)

# A registered reader with neither reads nor sightings for this long counts as silent. Quiet
# night-time streets see a bike every few minutes even at a small reader, so 15 min is quiet.
SILENCE_WINDOW_MS = 15 * 60_000


def serve_metrics(settings: Settings) -> int:
    """Expose the default registry on settings.metrics_port (worker/sink processes); 0 = off.

    Binds settings.api_host, the process's one bind address (0.0.0.0 in containers, so
    Prometheus can scrape it). Returns the port served, or 0; OSError when the port is taken.
    """
    if settings.metrics_port == 0:
        return 0
    start_http_server(settings.metrics_port, addr=settings.api_host)
    return settings.metrics_port


def instrument_api(app: Any) -> None:
    """Count and time every API request by route template and status.

    Must be called before the app serves its first request (Starlette builds its middleware
    stack then). Unmatched paths are labelled "unmatched" so a scanner cannot blow up the
    label cardinality. Calling it twice on one app is a no-op (counts are never doubled).
    """
    if getattr(app.state, "tagtrail_instrumented", False):
        return
    app.state.tagtrail_instrumented = True

    @app.middleware("http")
    async def _observe(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            metrics.API_REQUESTS.labels(route=name, status=str(status)).inc()
            metrics.API_SECONDS.labels(route=name).observe(time.perf_counter() - t0)


class OpsPoller:
    """Refreshes consumer lag per partition and reader silence every `interval_s`.

    Runs in the process that owns the store (the API in a split deployment, `tagtrail up` in
    one process). `store_call(fn, *args)` runs a store function off the event loop, as
    StoreRunner.run does. A failed poll is logged and retried next tick: metrics must never take
    the service down, and a gap in the series is what the operator should then see.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        store_call: Callable[..., Awaitable[Any]] | None,
        *,
        interval_s: float = 15.0,
        groups: dict[str, list[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store_call = store_call
        self.interval_s = interval_s
        # consumer group -> topics: the workers' group and the raw-read sinks' group read the
        # reads, the sinks' group the sightings.
        if groups is None:
            groups = {}
            for group, topic in drain_stages(settings):
                groups.setdefault(group, []).append(topic)
        self.groups = groups
        self.polls = 0
        self._task: asyncio.Task[None] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await self._admin.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._loop(), name="tagtrail-ops-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (KafkaError, OSError, RuntimeError) as e:
                log.warning("ops metrics poll failed (retrying in %.0f s): %r", self.interval_s, e)
            await asyncio.sleep(self.interval_s)

    async def poll_once(self) -> None:
        await self._poll_lag()
        if self.store_call is not None:
            await self._poll_readers()
        self.polls += 1

    async def _poll_lag(self) -> None:
        if self._admin is None or self._consumer is None:
            raise RuntimeError("OpsPoller.start() was not called")
        every_topic = sorted({t for ts in self.groups.values() for t in ts})
        known = await topic_partitions(self._consumer, every_topic)  # one metadata request
        for group, topics in self.groups.items():
            tps = [tp for tp in known if tp.topic in topics]
            if not tps:
                continue
            end = await self._consumer.end_offsets(tps)
            committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            for tp in tps:
                c = committed.get(tp)
                done = c.offset if c is not None and c.offset >= 0 else 0
                metrics.CONSUMER_LAG.labels(
                    group=group, topic=tp.topic, partition=str(tp.partition)
                ).set(max(end[tp] - done, 0))

    async def _poll_readers(self) -> None:
        from store.health import reader_health

        if self.store_call is None:
            return
        now_ms = int(time.time() * 1000)
        health = await self.store_call(reader_health, now_ms - SILENCE_WINDOW_MS, now_ms)
        metrics.READERS_REGISTERED.set(int(health.registered.sum()))
        metrics.READERS_SILENT.set(int(health.silent.sum()))
