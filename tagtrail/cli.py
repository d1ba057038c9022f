"""The `tagtrail` command line: every command builds one Settings and passes it down."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.config import Settings, load_settings
from core.errors import TagtrailError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="tagtrail: RFID e-bike sightings, theft alerts and recovery.",
)
readers_app = typer.Typer(no_args_is_help=True, help="The reader registry.")
store_app = typer.Typer(no_args_is_help=True, help="The ClickHouse store.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
export_app = typer.Typer(no_args_is_help=True, help="Export stored data.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker.")
app.add_typer(readers_app, name="readers")
app.add_typer(store_app, name="store")
app.add_typer(keys_app, name="keys")
app.add_typer(export_app, name="export")
app.add_typer(kafka_app, name="kafka")

# Commands that other distributions add (the benchmarks register `tagtrail bench` from their own
# pyproject), so the product never imports them.
for _ep in entry_points(group="tagtrail.commands"):
    app.add_typer(_ep.load(), name=_ep.name)

err = Console(stderr=True, soft_wrap=True)
out_console = Console()


def _settings() -> Settings:
    return load_settings()


@app.command()
def up(
    worker: Annotated[
        bool, typer.Option(help="run a stream worker in this process (else: `tagtrail worker`)")
    ] = True,
) -> None:
    """Run everything in one process: local broker (unless TAGTRAIL_KAFKA), store, worker, API."""
    from tagtrail.up import run_up

    run_up(_settings(), worker=worker)


@app.command()
def worker() -> None:
    """Run a stream worker (reads -> sightings and alerts); several form one consumer group."""
    from tagtrail.services import run_worker

    run_worker(_settings())


@app.command()
def sink() -> None:
    """Run the sink (sightings topic -> store); it owns the embedded store folder."""
    from tagtrail.services import run_sink

    run_sink(_settings())


@app.command()
def api() -> None:
    """Run the recovery API alone (with a ClickHouse server; embedded stores are owned by `up`)."""
    from tagtrail.services import run_api

    run_api(_settings())


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="city scale (1.0 = full Kunming)")] = 0.05,
    minutes: Annotated[int, typer.Option(min=5, help="simulated minutes")] = 20,
    seed: Annotated[int, typer.Option()] = 7,
    keep_running: Annotated[
        bool, typer.Option(help="keep the pipeline up for the police console until Ctrl-C")
    ] = False,
) -> None:
    """A stolen e-bike from the owner's report to the police console, through the real pipeline.

    Simulates a small city, replays its reads through `tagtrail up`'s pipeline, reports a theft
    as an owner through the API and shows its alert, last-seen and track as police. Uses (and
    wipes) TAGTRAIL_DATA_DIR/demo; logs go to TAGTRAIL_DATA_DIR/demo/logs/tagtrail.log.
    """
    from tagtrail.demo import run_demo

    run_demo(
        _settings(),
        scale=scale,
        minutes=minutes,
        seed=seed,
        keep_running=keep_running,
        console=out_console,
    )


@kafka_app.command("start")
def kafka_start(port: Annotated[int, typer.Option(help="0 picks a free port")] = 9092) -> None:
    """Run the local Kafka broker in the foreground until Ctrl-C."""
    from tagtrail.up import run_broker_foreground

    run_broker_foreground(_settings(), port=port, console=out_console)


@store_app.command("migrate")
def store_migrate(
    resume: Annotated[bool, typer.Option(help="re-run a half-applied migration")] = False,
) -> None:
    """Apply pending schema migrations (idempotent)."""
    from store.migrate import migrate
    from store.open import open_backend

    s = _settings()
    backend = open_backend(s)
    try:
        applied = migrate(backend, s, resume=resume)
    finally:
        backend.close()
    out_console.print(
        f"migrations applied: {len(applied)}" + (f" ({', '.join(applied)})" if applied else "")
    )


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="output folder for the Parquet files")],
    scale: Annotated[float, typer.Option(help="1.0 = full Kunming, ~80 M reads/day")] = 0.01,
    duration_s: Annotated[float, typer.Option(help="simulated seconds")] = 3600.0,
    seed: Annotated[int, typer.Option()] = 0,
    theft_rate: Annotated[float | None, typer.Option(help="thefts per day")] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="the city's first day: 'yesterday' or YYYY-MM-DD (midnight, city time UTC+8); "
            "default 2026-03-02, the day the benchmarks' figures were taken on"
        ),
    ] = None,
) -> None:
    """Simulate a city: reads, reader registry and ground truth as Parquet files."""
    from rich.progress import Progress

    from ingest.simulator.config import day_start_ms
    from ingest.simulator.parquet import run_simulation_to_parquet

    overrides = {}
    if start is not None:
        try:
            overrides["start_ms"] = day_start_ms(start)
        except ValueError as e:
            raise TagtrailError(f"--start: {e}") from None

    with Progress(console=out_console) as bar:
        task = bar.add_task("simulating", total=1.0)
        try:
            summary = run_simulation_to_parquet(
                out,
                scale=scale,
                duration_s=duration_s,
                seed=seed,
                theft_rate=theft_rate,
                **overrides,
                progress_cb=lambda frac, n: bar.update(
                    task, completed=frac, description=f"{n:,} reads"
                ),
            )
        except ValueError as e:
            raise TagtrailError(str(e)) from None
    out_console.print(summary)


@readers_app.command("import")
def readers_import(file: Annotated[Path, typer.Argument(help="CSV or Parquet")]) -> None:
    """Import readers (reader_id, lat, lon, kind) through the running `tagtrail up`."""
    from tagtrail.local import api_call, read_readers_file, running_or_fail

    s = _settings()
    rows = read_readers_file(file)
    up_ = running_or_fail(s, "readers import")
    r = api_call(up_, "POST", "/v1/readers", json={"readers": rows})
    out_console.print(f"imported {r.json()['imported']} readers")


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="Parquet read file")],
    wait: Annotated[
        bool, typer.Option(help="return when every read is processed and stored")
    ] = False,
) -> None:
    """Publish a recorded read file through gateway batches."""
    import asyncio

    from rich.progress import Progress

    from ingest.replay import replay as do_replay
    from stream.kafka.progress import wait_drained
    from tagtrail.local import bootstrap_for

    s = _settings()
    if not file.exists():
        raise TagtrailError(f"{file} does not exist")
    bootstrap = bootstrap_for(s, "replay")

    async def go() -> tuple[int, int]:
        with Progress(console=out_console) as bar:
            task = bar.add_task("publishing", total=None)
            res = await do_replay(
                file,
                bootstrap,
                s.topic_reads,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        if wait:
            with out_console.status("waiting for the pipeline to store everything"):
                await wait_drained(s, bootstrap)
        return res

    messages, reads = asyncio.run(go())
    out_console.print(
        f"published {reads:,} reads in {messages:,} messages" + (", all stored" if wait else "")
    )


@app.command()
def backfill(
    follow: Annotated[
        bool, typer.Option(help="keep merging late reads as they come, until Ctrl-C")
    ] = False,
    timeout_s: Annotated[
        float, typer.Option(help="how long to wait for a running sink's backfiller")
    ] = 600.0,
) -> None:
    """Merge the late-reads topic into the stored sightings, as if the reads had come in time.

    The sink (inside `tagtrail up`, or `tagtrail sink`) owns the store and merges late reads
    continuously; while one runs, this command waits until it has merged every late read
    published so far and prints what it did. With no sink running, it opens the store and merges
    them itself until the topic is drained. Reads whose sessions the live stream may still change
    (within max lateness + gap of its newest reads) are deferred: they stay on the topic and are
    merged once the stream has moved on. See docs/operations.md.
    """
    from stream.sinks.backfiller import run_backfill_command
    from tagtrail.local import bootstrap_for

    settings = _settings()
    bootstrap = bootstrap_for(settings, "backfill")
    out_console.print(run_backfill_command(settings, bootstrap, follow=follow, timeout_s=timeout_s))


@export_app.command("sightings")
def export_sightings(out_file: Annotated[Path, typer.Argument(help="output .parquet")]) -> None:
    """Write the current stored sightings (contract columns) to a Parquet file."""
    from core.runtime import find_running
    from tagtrail.local import api_call

    s = _settings()
    up_ = find_running(s)
    if up_ is not None:
        data = api_call(up_, "GET", "/v1/export/sightings").content
        out_file.write_bytes(data)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from store.open import open_store
        from store.queries import export_sightings as q_export

        with open_store(s) as store:
            pq.write_table(pa.table(q_export(store)), out_file)
    out_console.print(f"wrote {out_file}")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="owner|police|supervisor|ops|admin")],
    name: Annotated[str, typer.Option(help="who the key is for")],
    owner_id: Annotated[str | None, typer.Option(help="owner keys: the owner account")] = None,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from core.runtime import find_running
    from recovery.auth import Role, new_key
    from store import accounts
    from tagtrail.local import api_call

    if role not in Role.__members__:
        raise TagtrailError(f"--role must be one of {', '.join(Role.__members__)}")
    s = _settings()
    up_ = find_running(s)
    if up_ is not None:
        body = {"role": role, "name": name, "owner_id": owner_id}
        res = api_call(up_, "POST", "/v1/keys", json=body).json()
        key, key_id = res["key"], res["key_id"]
    else:
        from store.open import open_store

        key, key_id, key_hash = new_key(Role(role))
        with open_store(s) as store:
            accounts.insert_key(
                store,
                key_hash=key_hash,
                key_id=key_id,
                name=name,
                role=role,
                owner_id=owner_id or key_id,
            )
    out_console.print(
        f"key {key_id} ({role}) for {name}: {key}\nStore it now: it is not shown again."
    )


@app.command("settings")
def settings_(
    write: Annotated[
        Path | None,
        typer.Option(help="replace the table between this file's settings-table markers"),
    ] = None,
) -> None:
    """Every setting: its TAGTRAIL_* variable, default and meaning, as a Markdown table."""
    from tagtrail import settings_table

    if write is None:
        print(settings_table.render())
        return
    if not write.exists():
        raise TagtrailError(f"{write} does not exist")
    settings_table.write(write)
    out_console.print(f"updated the settings table in {write}")


def main() -> None:
    """Entry point: a TagtrailError ends in one clear line and a non-zero status, no traceback."""
    try:
        app()
    except TagtrailError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
