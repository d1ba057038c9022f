"""`tagtrail up` with its store calls timed, for `bench_api_wrk --time-store`: where a request's
time goes when the API waits on the one store thread (cProfile sees only the event loop).

    python -m benchmarks.up_store_timed OUT.json up [...]

Wraps store.runner.StoreRunner.run (nothing in the product changes): per store function, the
calls, the time each waited for the store thread and the time it ran there. SIGUSR1 writes OUT.json
with the calls since the last SIGUSR1 (one load phase) and starts counting afresh; so does the
end of the process (SIGTERM stops `tagtrail up` cleanly).
"""

from __future__ import annotations

import atexit
import json
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from store.runner import StoreRunner

STATS: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # n, wait, run, max run


def _name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    return f"{getattr(fn, '__module__', '?')}.{name}"


def install(out: Path) -> None:
    original = StoreRunner.run

    async def timed(self: StoreRunner, fn: Any, *args: Any, **kwargs: Any) -> Any:
        queued = time.perf_counter()
        ran: list[float] = []

        def call(store: Any, *a: Any, **kw: Any) -> Any:
            ran.append(time.perf_counter())
            try:
                return fn(store, *a, **kw)
            finally:
                ran.append(time.perf_counter())

        try:
            return await original(self, call, *args, **kwargs)
        finally:
            if len(ran) == 2:
                s = STATS[_name(fn)]
                s[0] += 1
                s[1] += ran[0] - queued
                s[2] += ran[1] - ran[0]
                s[3] = max(s[3], ran[1] - ran[0])

    StoreRunner.run = timed  # type: ignore[method-assign]

    def dump() -> None:
        rows = {
            name: {
                "calls": int(n),
                "wait_ms_mean": round(wait / n * 1000, 3),
                "run_ms_mean": round(run / n * 1000, 3),
                "run_ms_max": round(mx * 1000, 3),
                "run_s_total": round(run, 3),
            }
            for name, (n, wait, run, mx) in sorted(STATS.items(), key=lambda kv: -kv[1][2])
            if n
        }
        STATS.clear()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        tmp.replace(out)

    atexit.register(dump)
    signal.signal(signal.SIGUSR1, lambda *_: dump())


def main() -> None:
    out = Path(sys.argv[1])
    install(out)
    from tagtrail.cli import main as cli_main

    sys.argv = ["tagtrail", *sys.argv[2:]]
    cli_main()


if __name__ == "__main__":
    main()
