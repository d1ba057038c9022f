"""Group commit: concurrent writers of one kind share a store insert, each still waits for it.

A store insert costs about the same whatever its size (it writes a new part on disk), so one
insert per request would cap the rate of writes. Here the first writer starts an insert; writers
arriving meanwhile queue up and go together in the next one. No artificial delay is added, and a
caller is answered only once its own row is stored (or sees the insert's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, runner: Any, write: Callable[[Any, list[T]], None]) -> None:
        self.runner = runner
        self.write_fn = write
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def write(self, item: T) -> None:
        """Store `item` (with whatever else is pending); raises what the insert raised."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.runner.run(self.write_fn, [item for item, _ in batch])
            except Exception as e:  # every waiter of this batch gets the store's error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
