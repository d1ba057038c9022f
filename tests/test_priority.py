"""Thread priorities: bulk threads give way; the rest of the process keeps its own."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tagtrail.priority import renice_this_thread


def test_a_thread_lowers_only_its_own_priority() -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("thread priorities are set through Linux's /proc, absent here")
    seen: dict[str, int] = {}

    def bulk() -> None:
        renice_this_thread(7)
        seen["bulk"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(
            target=lambda: seen.update(
                child=os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            )
        )
        child.start()
        child.join()

    t = threading.Thread(target=bulk)
    t.start()
    t.join()
    assert seen == {"bulk": 7, "child": 7}  # the threads it starts inherit it
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 7
