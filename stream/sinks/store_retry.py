"""Store writes retried with backoff, for the sinks: the same dedup token on every attempt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from core.errors import TagtrailError
from store.runner import StoreRunner

log = logging.getLogger(__name__)

RETRIES = 5


async def with_retries(
    what: str, runner: StoreRunner, fn: Callable[..., object], *args: Any, **kwargs: Any
) -> None:
    """Run `fn` on the store's thread; retry a retriable failure RETRIES times with backoff."""
    for attempt in range(RETRIES):
        try:
            await runner.run(fn, *args, **kwargs)
            return
        except TagtrailError as e:
            # Same dedup token on each attempt: a retry after a lost ack is stored once.
            if not e.retriable or attempt == RETRIES - 1:
                raise
            log.warning("%s failed (%s); retrying", what, e)
            await asyncio.sleep(0.5 * 2**attempt)
