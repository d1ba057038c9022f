"""LoopThread: a start that fails says why; stop makes main return and joins the thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from core.loop_thread import LoopThread


def test_start_stop_and_failures() -> None:
    async def run() -> None:
        ran: dict[str, object] = {}
        stop = asyncio.Event()

        async def main(started: Future[None]) -> None:
            ran["thread"] = threading.current_thread().name
            started.set_result(None)
            await stop.wait()
            ran["stopped"] = True

        lt = LoopThread("probe")
        await lt.start(main)
        await lt.stop(stop.set, timeout_s=5)
        assert ran == {"thread": "probe", "stopped": True}

        async def broken(started: Future[None]) -> None:
            raise OSError("no broker")

        with pytest.raises(OSError, match="no broker"):
            await LoopThread("broken").start(broken)

        async def silent(started: Future[None]) -> None:
            return None

        with pytest.raises(RuntimeError, match="ended before it started"):
            await LoopThread("silent").start(silent)

    asyncio.run(run())
