"""Misconfiguration ends in one clear line naming the problem and a non-zero status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TAGTRAIL = [sys.executable, "-m", "tagtrail.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TAGTRAIL_")} | env
    return subprocess.run(
        [*TAGTRAIL, *args], env=full, capture_output=True, text=True, timeout=120, check=False
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_broker_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        line = one_error_line(
            run(
                {
                    "TAGTRAIL_KAFKA": f"127.0.0.1:{port}",
                    "TAGTRAIL_DATA_DIR": str(tmp_path),
                    "TAGTRAIL_API_PORT": "0",
                },
                "up",
            )
        )
    assert "unreachable" in line and str(port) in line


def test_store_folder_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = one_error_line(
        run(
            {
                "TAGTRAIL_KAFKA": "127.0.0.1:1",
                "TAGTRAIL_API_PORT": "0",
                "TAGTRAIL_DATA_DIR": str(blocker / "data"),
            },
            "up",
        )
    )
    assert "not writable" in line and str(blocker) in line


def test_api_port_taken(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(
            run({"TAGTRAIL_API_PORT": str(port), "TAGTRAIL_DATA_DIR": str(tmp_path)}, "up")
        )
    assert f"port 127.0.0.1:{port} is taken" in line


def test_bad_setting_is_named(tmp_path: Path) -> None:
    line = one_error_line(run({"TAGTRAIL_GAP_MS": "soon"}, "up"))
    assert "TAGTRAIL_GAP_MS" in line


def test_java_missing(tmp_path: Path) -> None:
    # A PATH with only this interpreter's folder: no java, no mvn. A fresh cache forces a fetch.
    env = {
        "PATH": str(Path(sys.executable).parent),
        "TAGTRAIL_DATA_DIR": str(tmp_path),
        "TAGTRAIL_KAFKA_CACHE_DIR": str(tmp_path / "cache"),
        "TAGTRAIL_API_PORT": "0",
    }
    line = one_error_line(run(env, "up"))
    assert "not found on PATH" in line
