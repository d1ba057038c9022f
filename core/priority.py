"""CPU priority of threads: bulk work (store merges, a benchmark's load generator) gives way.

Only threads that never hold the GIL (native pools such as the store's merge threads) or whole
processes are reniced: a niced Python thread, descheduled in favour of busier processes while it
holds the GIL, holds up every thread of its process (docs/performance.md has the stall measured).

Linux schedules threads, and lets any thread raise its own process's nice values without
privileges (lowering them back needs CAP_SYS_NICE). Elsewhere, or without /proc, nothing changes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TASKS = Path("/proc/self/task")


def _tasks() -> list[Path]:
    """This process's threads, as /proc entries (none where there is no /proc)."""
    try:
        return list(_TASKS.iterdir())
    except OSError:
        return []  # not Linux: priorities stay as they are


def _named(task: Path, prefixes: str | tuple[str, ...] | None) -> bool:
    return prefixes is None or (task / "comm").read_text().startswith(prefixes)


def renice_threads(nice: int, name_prefixes: tuple[str, ...] | None = None) -> int:
    """Raise to `nice` the nice value of this process's threads (those whose name starts with one
    of `name_prefixes`, or all); returns how many changed. Never lowers one."""
    changed = 0
    for task in _tasks():
        try:
            tid = int(task.name)
            if _named(task, name_prefixes) and os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (OSError, ValueError):
            continue  # the thread ended between the listing and here
    return changed


def thread_nice(name_prefix: str) -> list[int]:
    """The nice values of this process's threads whose name starts with `name_prefix`."""
    out = []
    for task in _tasks():
        try:
            if _named(task, name_prefix):
                out.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except (OSError, ValueError):
            continue  # ended meanwhile
    return out


def reset_threads(nice: int = 0) -> bool:
    """Set every thread of this process back to `nice`; False where that needs a privilege this
    process lacks (lowering a nice value needs CAP_SYS_NICE)."""
    for task in _tasks():
        try:
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        except PermissionError:
            return False
        except (OSError, ValueError):
            continue  # ended meanwhile
    return True


# How long a thread wanting the GIL waits before the holder is asked to drop it (CPython's
# default is 5 ms). A service's event loop wakes, does a little, and sleeps again many times per
# burst while kernel and store threads run Python between their native calls: each wake would
# otherwise wait up to the default interval for the GIL.
GIL_SWITCH_INTERVAL_S = 0.0005


def favour_event_loop() -> None:
    """Let the event loop take the GIL back quickly from busy worker threads."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
