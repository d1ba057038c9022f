"""`tagtrail demo` end to end, as a user runs it: its own Kafka broker, a small city, the story of
one theft on the terminal, and no third-party noise there (it goes to the demo's log file)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

TAGTRAIL = [sys.executable, "-m", "tagtrail.cli"]
SMALL = ["--scale", "0.02", "--minutes", "10"]
# What must never reach the terminal: tracebacks, aiokafka's and Faust's start-up complaints.
NOISE = re.compile(
    r"Traceback|aiokafka|faust|NotLeaderForPartition|UnknownMemberId|CommitFailed|"
    r"GroupCoordinator|KafkaError|uvicorn|WARNING|INFO"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGTRAIL_")}
    return env | {"TAGTRAIL_DATA_DIR": str(tmp_path / "data"), "TAGTRAIL_API_PORT": "0"}


def _check_story(out: str) -> None:
    assert "theft reported: stolen at" in out, out
    case = re.search(r"-> case (c_[0-9a-f]+)", out)
    assert case, out
    assert re.search(r"ALERT .* reader \d+ .* \+\d+\.\d\d s", out), out
    assert "matches the newest alert's sighting" in out, out
    assert re.search(rf"the app shows case {case.group(1)} as (open|spotted)", out), out
    assert "last-seen matches the newest alert" in out, out
    assert all(len(line) <= 80 for line in out.splitlines()), out


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TAGTRAIL, "demo", *SMALL, *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C first, so the demo stops its broker; a kill only if that did not end it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """stdout up to the line starting with `marker` (a reader thread: readline may block)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            if line.startswith(marker):
                return
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        got.append(line)
        if not line or line.startswith(marker):
            break
    return "".join(got)


def test_demo_tells_the_story(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _start(tmp_path)
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        _stop(proc)
    assert proc.returncode == 0, out + err
    _check_story(out)
    assert "logs in data/demo/logs/tagtrail.log" in out
    assert err == "", err
    assert not NOISE.search(out), out
    assert (tmp_path / "data" / "demo" / "logs" / "tagtrail.log").exists()
    assert time.monotonic() - t0 < 120


def test_demo_keeps_running_for_the_console(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--keep-running")
    try:
        out = _read_until(proc, "Ctrl-C stops", 150)
        assert out.rstrip().endswith("Ctrl-C stops the pipeline."), out
        _check_story(out)
        url = re.search(r"Police console: (\S+)", out)
        key = re.search(r"^\s+(tt_police_\S+)$", out, re.M)
        assert url and key, out
        assert httpx.get(url.group(1), timeout=10).status_code == 200
        r = httpx.get(
            url.group(1).replace("/console/", "/v1/alerts"),
            params={"reason": "test"},
            headers={"Authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["alerts"], r.text
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 0, out + rest + err
    assert "stopping" in rest
    assert err == "", err
    assert not NOISE.search(out + rest), out + rest
    assert not (tmp_path / "data" / "demo" / "run" / "up.json").exists()
