"""An event loop on a thread of its own, for bulk consumers that must not hold up the main loop.

A burst of gateway messages or alerts costs tens of ms of parsing per fetch; on a thread of its
own that time is shared with the main loop at the GIL's switch interval instead of blocking it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)


class LoopThread:
    """`await start(main)` runs `main(started)` on a new thread's loop and returns once `main`
    resolved `started` (raising what it was resolved with); `await stop(signal)` calls `signal`
    on that loop (it should make `main` return) and joins the thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self, main: Callable[[Future[None]], Awaitable[None]]) -> None:
        started: Future[None] = Future()

        async def run() -> None:
            self.loop = asyncio.get_running_loop()
            try:
                await main(started)
            except BaseException as e:
                if not started.done():
                    started.set_exception(e)  # the caller of start raises it
                    return
                log.error("%s stopped: %r", self.name, e, exc_info=e)
            finally:
                if not started.done():
                    started.set_exception(RuntimeError(f"{self.name} ended before it started"))

        self._thread = threading.Thread(target=lambda: asyncio.run(run()), name=self.name)
        self._thread.daemon = True
        self._thread.start()
        await asyncio.wrap_future(started)

    async def stop(self, signal: Callable[[], None], timeout_s: float = 60.0) -> None:
        loop, thread = self.loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(signal)
            await asyncio.to_thread(thread.join, timeout_s)
