"""Process runtime: where a running `tagtrail up` says how to reach it, so other commands work
through it; and how long-running commands learn to stop (SIGINT, SIGTERM).

One process owns the embedded store, so `tagtrail replay`, `readers import` or `export` started in
another shell find the running pipeline here (same TAGTRAIL_DATA_DIR) and go through its broker
and API instead of opening the store themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from core.config import Settings

RUN_FILE = "up.json"


@dataclass(frozen=True, slots=True)
class RunningPipeline:
    pid: int
    kafka: str
    api_url: str
    # A per-run admin key for local CLI calls; the file is readable by its owner only.
    admin_key: str


def _path(settings: Settings) -> Path:
    return settings.run_dir / RUN_FILE


def write_running(settings: Settings, info: RunningPipeline) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = _path(settings)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(info), f)
    tmp.replace(path)


def clear_running(settings: Settings) -> None:
    _path(settings).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def find_running(settings: Settings) -> RunningPipeline | None:
    """The `tagtrail up` running on this data folder, or None (stale files are ignored)."""
    path = _path(settings)
    try:
        info = RunningPipeline(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, on the running loop: how every long-running command
    learns that it should shut down cleanly (Ctrl-C, or a service manager's stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_signalled() -> None:
    """Return once SIGINT or SIGTERM arrives."""
    await stop_event_on_signals().wait()
