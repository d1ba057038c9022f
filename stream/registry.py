"""The reader registry as every worker sees it: a compacted `readers` topic followed from the start.

Each worker needs all readers (to validate reader ids and to place fixed readers), not a share of
them, so it reads every partition of the compacted topic without a consumer group and rebuilds
sorted numpy arrays whenever the registry changes.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.dedup import ReaderRegistry
from stream.exceptions import BrokerUnavailable

log = logging.getLogger(__name__)

KINDS = ("fixed", "mobile")


def registry_from_rows(rows: dict[int, dict[str, object]]) -> ReaderRegistry:
    """Every registered reader (all ids are valid); mobile readers get NaN positions."""
    ids = sorted(rows)
    fixed = [rows[i]["kind"] == "fixed" for i in ids]
    lat = [float(rows[i]["lat"]) if f else np.nan for i, f in zip(ids, fixed, strict=True)]  # type: ignore[arg-type]
    lon = [float(rows[i]["lon"]) if f else np.nan for i, f in zip(ids, fixed, strict=True)]  # type: ignore[arg-type]
    return ReaderRegistry.from_columns(ids, lat, lon)


def encode_reader(reader_id: int, lat: float, lon: float, kind: str) -> tuple[bytes, bytes]:
    """(key, value) of one registry record on the readers topic."""
    if kind not in KINDS:
        raise ValueError(f"reader kind must be one of {KINDS}, not {kind!r}")
    key = int(reader_id).to_bytes(4, "big")
    value = json.dumps({"reader_id": int(reader_id), "lat": lat, "lon": lon, "kind": kind})
    return key, value.encode()


class RegistryFollower:
    """Keeps a ReaderRegistry current from the readers topic; `caught_up` is set at the log end."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.registry = ReaderRegistry.empty()
        self.version = 0  # bumped on every change, so caches keyed on it can rebuild
        self.caught_up = asyncio.Event()
        self._rows: dict[int, dict[str, object]] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await self._consumer.start()
        parts: set[int] = set()
        for _ in range(50):  # a just-created topic takes a moment to appear in metadata
            # The consumer's own metadata only covers assigned topics: ask for the whole cluster's.
            meta = await self._consumer._client.fetch_all_metadata()
            parts = meta.partitions_for_topic(self.topic) or set()
            if parts:
                break
            await asyncio.sleep(0.2)
        if not parts:
            await self._consumer.stop()
            raise BrokerUnavailable(f"topic {self.topic} does not exist on the broker")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        end = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._follow(end))

    async def _follow(self, end: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        pending = {tp: off for tp, off in end.items() if off > 0}
        if not pending:
            self.caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            changed = False
            for tp, msgs in batches.items():
                for m in msgs:
                    rid = int.from_bytes(m.key, "big")
                    if m.value is None:
                        self._rows.pop(rid, None)
                    else:
                        self._rows[rid] = json.loads(m.value)
                    changed = True
                    if tp in pending and m.offset + 1 >= pending[tp]:
                        del pending[tp]
            if changed:
                self.registry = registry_from_rows(self._rows)
                self.version += 1
            if not pending and not self.caught_up.is_set():
                log.info("reader registry loaded: %d readers", len(self.registry.reader_id))
                self.caught_up.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
