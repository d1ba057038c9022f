"""`tagtrail bench ...`: benchmark commands, added to the CLI through the `tagtrail.commands`
entry point of benchmarks/pyproject.toml.

Each run writes results/<run-id>/ with results.json, report.md and PNG plots.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: end to end and per stage.")

RESULTS = Path("results")


def machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "2 cores shared with other work while measured: figures are noisy",
    }


def new_run_dir(kind: str, label: str, root: Path = RESULTS) -> tuple[str, Path]:
    safe = "".join(c if c.isalnum() or c in ".-" else "-" for c in label).strip("-")
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{kind}-{safe}"
    path = root / run_id
    path.mkdir(parents=True, exist_ok=False)
    return run_id, path


@bench_app.command("e2e")
def e2e(
    scale: Annotated[
        str, typer.Option(help="hour | day | night | N (<=1: city scale; >1: reads)")
    ] = "0.01",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write results here")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    partitions: Annotated[int, typer.Option(min=1)] = 4,
    theft_rate: Annotated[float, typer.Option(help="thefts per day (absolute)")] = 2000.0,
    report_delay_s: Annotated[float, typer.Option(help="median theft -> report delay")] = 600.0,
    rate: Annotated[float, typer.Option(help="cap on published reads/s; 0 = no cap")] = 0.0,
    flush_ms: Annotated[
        int, typer.Option(min=1, help="gateways flush what they buffered every this many wall ms")
    ] = 1000,
    flush_slots: Annotated[
        int,
        typer.Option(
            min=1,
            help="gateway flush phases within --flush-ms (each gateway keeps its own); "
            "1 = every gateway flushes at the same moment (the worst case)",
        ),
    ] = 20,
    reports: Annotated[
        str,
        typer.Option(
            help="theft reports: 'topic' straight onto the hotlist topic; 'api' by bike owners "
            "on the recovery API (its case path under the load, at the replay's report rate)"
        ),
    ] = "topic",
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="`tagtrail worker` processes; 0 = the worker inside `tagtrail up`"
        ),
    ] = 1,
    peer: Annotated[bool, typer.Option(help="also run the ClickHouse Kafka-engine peer")] = True,
    profile: Annotated[
        bool, typer.Option(help="cProfile the pipeline processes (raw/up.prof, raw/worker-N.prof)")
    ] = False,
    results_dir: Annotated[Path, typer.Option(help="where results/<run-id>/ goes")] = RESULTS,
    keep_work: Annotated[bool, typer.Option(help="keep the broker and store folders")] = False,
) -> None:
    """Simulator -> gateways -> Kafka -> worker -> sink -> store -> API/alerts, measured."""
    from benchmarks.e2e import E2EOptions, run_e2e
    from benchmarks.e2e_scale import parse_scale

    try:
        sc = parse_scale(scale)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if reports not in ("topic", "api"):
        raise typer.BadParameter(f"--reports is 'topic' or 'api', not {reports!r}")
    run_id, out = new_run_dir("e2e", scale, results_dir)
    work = Path(tempfile.mkdtemp(prefix="tagtrail-bench-"))
    info = {"run_id": run_id, "command": _command("e2e")}
    info["machine"] = machine()
    t = time.perf_counter()
    try:
        opts = E2EOptions(
            scale=sc,
            work_dir=work,
            seed=seed,
            partitions=partitions,
            theft_rate_per_day=theft_rate,
            report_delay_median_s=report_delay_s,
            rate_reads_per_s=rate,
            flush_ms=flush_ms,
            flush_slots=flush_slots,
            reports=reports,
            workers=workers,
            profile=profile,
            peer=peer,
        )
        res = asyncio.run(run_e2e(opts, out / "raw"))
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    result = info | {"kind": "e2e", "wall_s": round(time.perf_counter() - t, 1)} | res
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finish(result, out, json_out)


@bench_app.command("micro")
def micro(
    quick: Annotated[bool, typer.Option(help="small sizes (seconds, for tests)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write results here")] = None,
    results_dir: Annotated[Path, typer.Option(help="where results/<run-id>/ goes")] = RESULTS,
) -> None:
    """Per-stage benchmarks, each with its peer, in one run."""
    from benchmarks.micro import run_micro

    run_id, out = new_run_dir("micro", "quick" if quick else "full", results_dir)
    t = time.perf_counter()
    res = run_micro(quick=quick)
    result = {"run_id": run_id, "kind": "micro", "machine": machine()} | {
        "command": "tagtrail bench micro" + (" --quick" if quick else ""),
        "wall_s": round(time.perf_counter() - t, 1),
        "stages": res,
    }
    finish(result, out, json_out)


def _command(name: str) -> str:
    args = sys.argv[sys.argv.index(name) + 1 :] if name in sys.argv else []
    return " ".join(["tagtrail bench", name, *args])


def finish(result: dict[str, Any], out: Path, json_out: Path | None) -> None:
    from benchmarks.report import write_report

    text = json.dumps(result, indent=2, default=str)
    (out / "results.json").write_text(text + "\n")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    report = write_report(result, out)
    typer.echo(report.read_text())
    typer.echo(f"wrote {out}/results.json and {report}")


if __name__ == "__main__":
    bench_app()
