"""`make bench`: the end-to-end benchmark (unpaced for throughput, then paced at the 200 k reads/s
target for alert latency), every per-stage benchmark, then the README table.

    python -m benchmarks.run [--scale day] [--rate 200000] [--skip-micro] [--skip-e2e]

Runs by hand (about an hour at --scale day on 2 cores), never in `make test`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="day", help="hour | day | N (see benchmarks.e2e_scale)")
    ap.add_argument("--rate", default="200000", help="reads/s of the paced latency run")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    a = ap.parse_args()
    cli = [sys.executable, "-m", "benchmarks.cli"]
    steps = []
    if not a.skip_e2e:
        steps.append([*cli, "e2e", "--scale", a.scale])
        steps.append([*cli, "e2e", "--scale", a.scale, "--rate", a.rate, "--no-peer"])
    if not a.skip_micro:
        steps.append([*cli, "micro"])
    steps.append([sys.executable, "-m", "benchmarks.readme_table", "--write", "README.md"])
    for cmd in steps:
        print("$", " ".join(cmd[1:]), flush=True)
        # Separate processes: each benchmark starts with a clean heap and its own broker.
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
