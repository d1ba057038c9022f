"""When the worker takes its checkpoint turns: not during an alert burst, unless overdue."""

from __future__ import annotations

import time
from pathlib import Path

from stream.registry import RegistryFollower
from stream.worker import BURST_QUIET_S, CHECKPOINT_OVERDUE_TURNS, Worker
from tagtrail.config import Settings


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
