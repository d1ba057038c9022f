"""`tagtrail demo`: one stolen e-bike, from the owner's report to the police console.

A small simulated city goes through the whole real pipeline (`tagtrail up`'s Pipeline: a local
Kafka broker, the stream worker, the sink into the embedded store, the recovery API). Its morning
so far is replayed as history. Then, as an owner's app would, the demo registers a bike and
reports it stolen through the HTTP API with an owner key; listens to the police console's live
alert stream while the rest of the morning comes in at 60x real time, as gateways send it; and
asks, as police stating a reason, where the bike was last seen and for its track.

Everything lives in data/demo (wiped at each run, apart from the logs); third-party logs
(aiokafka, Faust, uvicorn) go to data/demo/logs/tagtrail.log and the broker's own to
data/demo/kafka/server.log, so the terminal shows the story and our own errors only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from rich.console import Console

from core.config import Settings
from core.errors import ConfigError, TagtrailError
from core.runtime import (
    RunningPipeline,
    clear_running,
    find_running,
    until_signalled,
    write_running,
)
from tagtrail.demo_city import choose_bike, clock, simulate, yesterday_rush_hour_ms
from tagtrail.demo_story import Out, Story, run_story, shown, summary
from tagtrail.listen import api_socket
from tagtrail.logs import configure_logging
from tagtrail.up import Pipeline

# yesterday_rush_hour_ms: tests simulate their cities at the demo's time of day.
__all__ = ["demo_settings", "run_demo", "yesterday_rush_hour_ms"]

log = logging.getLogger(__name__)


def demo_settings(settings: Settings) -> Settings:
    """The demo's own data folder (data/demo); its API port, or any free one if that is taken."""
    port = settings.api_port
    try:
        api_socket(settings.api_host, port).close()
    except OSError:
        port = 0
    return settings.model_copy(update={"data_dir": settings.data_dir / "demo", "api_port": port})


def _fresh(s: Settings) -> None:
    running = find_running(s)
    if running is not None:
        raise ConfigError(
            f"a demo is already running on {s.data_dir} (pid {running.pid}, {running.api_url})"
        )
    if s.data_dir.exists():
        for child in s.data_dir.iterdir():
            if child.name != "logs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()


async def _demo(
    s: Settings, *, scale: float, minutes: int, seed: int, keep: bool, out: Out, log_file: Path
) -> None:
    t0 = time.monotonic()
    out.line("tagtrail demo: a stolen e-bike, from the owner's report to the police console")
    out.line(f"(logs: {shown(log_file)}, Kafka's: {shown(s.data_dir / 'kafka' / 'server.log')})")
    out.line()
    with out.console.status("simulating the city"):
        city = await asyncio.to_thread(
            simulate, s.data_dir / "city", scale=scale, minutes=minutes, seed=seed
        )
    bike = choose_bike(city)
    out.step(
        "city",
        f"{minutes} min of a simulated city, yesterday {clock(city.start_ms)[:5]} (UTC+8): "
        f"{len(city.readers):,} readers",
    )
    out.more(f"{city.n_reads:,} tag reads")
    t = time.monotonic()
    with out.console.status("starting Kafka, the store, the stream worker and the API"):
        pipeline = Pipeline(s)
        try:
            await pipeline.start()
        except BaseException:
            await pipeline.stop()
            raise
    st, keys = Story(), {}
    try:
        write_running(
            s,
            RunningPipeline(
                pid=os.getpid(),
                kafka=pipeline.bootstrap,
                api_url=pipeline.api_url,
                admin_key=pipeline.admin_key,
            ),
        )
        out.step(
            "pipeline", f"Kafka, stream worker, store and API up in {time.monotonic() - t:.1f} s"
        )
        await run_story(pipeline, city, bike, out, st, keys)
        summary(out, st, time.monotonic() - t0, log_file)
        out.line()
        if keep:
            out.line(f"Police console: {pipeline.api_url}/console/")
            out.line("  sign in with this police API key, and a reason (e.g. demo):")
            out.line(f"  {keys['police']}")
            out.line(f"Owner API key (Li Wei): {keys['owner']}")
            here = f"TAGTRAIL_DATA_DIR={shown(s.data_dir)}"
            out.line(f"Other shells: {here} tagtrail export sightings x.parquet")
            out.line("Ctrl-C stops the pipeline.")
            await until_signalled()
            out.line("stopping")
        else:
            out.line("Stopped. To see it in the police console: make demo KEEP=1")
            out.line("(or tagtrail demo --keep-running)")
    finally:
        clear_running(s)
        await pipeline.stop()
    if not st.matches:
        raise TagtrailError("demo failed: the police last-seen does not match the alerts")


def run_demo(
    settings: Settings,
    *,
    scale: float,
    minutes: int,
    seed: int,
    keep_running: bool,
    console: Console,
) -> None:
    s = demo_settings(settings)
    log_file = s.data_dir / "logs" / "tagtrail.log"
    _fresh(s)
    configure_logging(s, log_file=log_file)
    out = Out(console)
    try:
        asyncio.run(
            _demo(
                s,
                scale=scale,
                minutes=minutes,
                seed=seed,
                keep=keep_running,
                out=out,
                log_file=log_file,
            )
        )
    except TagtrailError as e:
        log.warning("%s", e)  # for the file; main() prints the one line
        raise TagtrailError(f"{e} (logs: {shown(log_file)})") from None
    except Exception as e:
        # The traceback goes to the file; the user gets one plain line (from main()).
        log.warning("demo failed", exc_info=True)
        raise TagtrailError(f"demo failed: {e!r} (details: {shown(log_file)})") from None
