"""When the worker takes its checkpoint turns: not during an alert burst, unless overdue."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from core.config import Settings
from stream.followers.registry import RegistryFollower
from stream.worker.worker import BURST_QUIET_S, CHECKPOINT_OVERDUE_TURNS, Worker


def test_a_checkpoint_turn_waits_for_an_alert_burst_to_pass(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, checkpoint_interval_s=4.0)
    nowhere = "127.0.0.1:9"  # never connected: only the turn logic runs
    w = Worker(settings, nowhere, RegistryFollower(nowhere, settings.topic_readers))
    w._owned, w._dirty = {0, 1}, {0}  # two partitions: a turn every 2 s
    now = time.monotonic()
    w._last_checkpoint = now - 2.5
    assert w._checkpoint_due()
    w._burst_at = now  # a step just had a burst of alerts
    assert not w._checkpoint_due()
    # Overdue turns are taken all the same: a restart never re-applies more than they allow.
    assert not w._checkpoint_due(overdue=True)
    w._last_checkpoint = now - 2.0 * CHECKPOINT_OVERDUE_TURNS - 0.5
    assert w._checkpoint_due(overdue=True)
    w._last_checkpoint = now - 2.5
    w._burst_at = now - BURST_QUIET_S - 0.1  # the burst has passed
    assert w._checkpoint_due()
    w._dirty = set()  # nothing new to save
    assert not w._checkpoint_due()


def test_a_burst_stops_a_live_writer_once_per_partition(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, checkpoint_interval_s=4.0)
    nowhere = "127.0.0.1:9"
    w = Worker(settings, nowhere, RegistryFollower(nowhere, settings.topic_readers))
    for p in (0, 1):
        w.processor.adopt(p, None)
    w._owned, w._dirty = {0, 1}, {1}
    folder = w.checkpoints.folder
    folder.mkdir(parents=True)
    # The writer's temp file is a FIFO: it blocks opening it until read, so it is still alive.
    fifo = folder / f"{settings.topic_reads}-1.tmp{os.getpid()}"

    async def scenario() -> None:
        os.mkfifo(fifo)
        await w._checkpoint_next()
        w._stop_writer()  # a burst while partition 1 is written: its writer is stopped
        await w._synced()
        assert w._stopped == {1} and 1 in w._dirty
        assert w.checkpoints.load(settings.topic_reads, 1) is None
        # The next turn takes partition 1 first, and a burst now lets it finish.
        fifo.unlink()
        w._dirty.add(0)
        w._last_saved = 0
        await w._checkpoint_next()
        assert w._writing is not None and w._writing[0] == 1
        written = w._writing[1]
        w._stop_writer()
        assert not written.stopped
        await w._synced()
        assert w._stopped == set() and w._dirty == {0}
        assert w.checkpoints.load(settings.topic_reads, 1) is not None

    try:
        asyncio.run(scenario())
    finally:
        fifo.unlink(missing_ok=True)
        w._pool.shutdown()
        w._sync_pool.shutdown()
