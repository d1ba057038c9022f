"""CPU priority of threads: bulk work (store merges, a benchmark's load generator) gives way.

Linux schedules threads, and lets any thread raise its own process's nice values without
privileges (lowering them back needs CAP_SYS_NICE). Elsewhere, or without /proc, nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

_TASKS = Path("/proc/self/task")


def renice_threads(nice: int, name_prefixes: tuple[str, ...] | None = None) -> int:
    """Raise to `nice` the nice value of this process's threads (those whose name starts with one
    of `name_prefixes`, or all); returns how many changed. Never lowers one."""
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return 0  # not Linux: priorities stay as they are
    changed = 0
    for task in tasks:
        try:
            if name_prefixes is not None and not (task / "comm").read_text().startswith(
                name_prefixes
            ):
                continue
            tid = int(task.name)
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (OSError, ValueError):
            continue  # the thread ended between the listing and here
    return changed


def thread_nice(name_prefix: str) -> list[int]:
    """The nice values of this process's threads whose name starts with `name_prefix`."""
    out = []
    for task in _TASKS.iterdir():
        try:
            if (task / "comm").read_text().startswith(name_prefix):
                out.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except (OSError, ValueError):
            continue  # ended meanwhile
    return out


def reset_threads(nice: int = 0) -> bool:
    """Set every thread of this process back to `nice`; False where that needs a privilege this
    process lacks (lowering a nice value needs CAP_SYS_NICE)."""
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return True  # nothing was changed here
    for task in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        except PermissionError:
            return False
        except (OSError, ValueError):
            continue  # ended meanwhile
    return True
