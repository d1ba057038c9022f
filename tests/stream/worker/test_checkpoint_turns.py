"""When the worker takes its checkpoint turns: not during an alert burst, unless overdue."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from core.config import Settings
from stream.followers.registry import RegistryFollower
from stream.worker.checkpoint_turns import ALERT_BURST, BURST_QUIET_S, CHECKPOINT_OVERDUE_TURNS
from stream.worker.worker import Worker


def test_a_checkpoint_turn_waits_for_an_alert_burst_to_pass(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, checkpoint_interval_s=4.0)
    nowhere = "127.0.0.1:9"  # never connected: only the turn logic runs
    w = Worker(settings, nowhere, RegistryFollower(nowhere, settings.topic_readers))
    turns = w.turns
    turns.dirty = {0}  # of two partitions: a turn every 2 s
    now = time.monotonic()
    turns.last_turn = now - 2.5
    assert turns.due(2)
    turns.burst_at = now  # a step just had a burst of alerts
    assert not turns.due(2)
    # Overdue turns are taken all the same: a restart never re-applies more than they allow.
    assert not turns.due(2, overdue=True)
    turns.last_turn = now - 2.0 * CHECKPOINT_OVERDUE_TURNS - 0.5
    assert turns.due(2, overdue=True)
    turns.last_turn = now - 2.5
    turns.burst_at = now - BURST_QUIET_S - 0.1  # the burst has passed
    assert turns.due(2)
    turns.dirty = set()  # nothing new to save
    assert not turns.due(2)
    w._pool.shutdown()
    turns.close()


def test_a_burst_stops_a_live_writer_once_per_partition(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, checkpoint_interval_s=4.0)
    nowhere = "127.0.0.1:9"
    w = Worker(settings, nowhere, RegistryFollower(nowhere, settings.topic_readers))
    for p in (0, 1):
        w.processor.adopt(p, None)
    turns = w.turns
    w.ownership.owned, turns.dirty = {0, 1}, {1}
    folder = turns.store.folder
    folder.mkdir(parents=True)
    # The writer's temp file is a FIFO: it blocks opening it until read, so it is still alive.
    fifo = folder / f"{settings.topic_reads}-1.tmp{os.getpid()}"

    async def scenario() -> None:
        os.mkfifo(fifo)
        await w._checkpoint_next()
        turns.stop_writer()  # a burst while partition 1 is written: its writer is stopped
        await turns.synced()
        assert turns.stopped == {1} and 1 in turns.dirty
        assert turns.store.load(settings.topic_reads, 1) is None
        # The next turn takes partition 1 first, and a burst now lets it finish.
        fifo.unlink()
        turns.dirty.add(0)
        turns.last_saved = 0
        await w._checkpoint_next()
        assert turns.writing is not None and turns.writing[0] == 1
        written = turns.writing[1]
        turns.on_alerts(ALERT_BURST)
        assert not written.stopped
        await turns.synced()
        assert turns.stopped == set() and turns.dirty == {0}
        assert turns.store.load(settings.topic_reads, 1) is not None

    try:
        asyncio.run(scenario())
    finally:
        fifo.unlink(missing_ok=True)
        w._pool.shutdown()
        turns.close()
