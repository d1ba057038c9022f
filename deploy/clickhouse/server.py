"""A throw-away ClickHouse server: generated config in a temp folder, free ports, child process.

Uses Debian's `clickhouse-server` (apt packages clickhouse-server, clickhouse-client). The
server runs in the foreground as our child, so stopping it (or our exit) leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from core.errors import DependencyMissing, TagtrailError

HERE = Path(__file__).parent
SERVER_BINARY = "clickhouse-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_server() -> str:
    """Path of clickhouse-server, or DependencyMissing saying which package provides it."""
    path = shutil.which(SERVER_BINARY) or shutil.which(SERVER_BINARY, path="/usr/sbin:/usr/bin")
    if not path:
        raise DependencyMissing(
            "clickhouse-server not found: apt-get install clickhouse-server clickhouse-client"
        )
    return path


class ClickHouseServer:
    """One server on 127.0.0.1 with one user; `dsn` is ready for the native backend."""

    def __init__(self, root: Path, *, user: str = "tagtrail", password: str = "tagtrail") -> None:
        self.root = Path(root)
        self.user, self.password = user, password
        self.tcp_port = free_port()
        self.http_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def dsn(self) -> str:
        return f"clickhouse://{self.user}:{self.password}@127.0.0.1:{self.tcp_port}/default"

    def _write_config(self) -> None:
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "root": str(self.root),
            "tcp_port": str(self.tcp_port),
            "http_port": str(self.http_port),
            "user": self.user,
            "password_sha256": hashlib.sha256(self.password.encode()).hexdigest(),
        }
        for name in ("config.xml", "users.xml"):
            text = (HERE / f"{name}.tmpl").read_text()
            for k, v in values.items():
                text = text.replace("{" + k + "}", v)
            (self.root / name).write_text(text)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until its native port accepts connections."""
        out = (self.root / "log" / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            [find_server(), f"--config-file={self.root / 'config.xml'}"],
            cwd=self.root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TagtrailError(
                    f"clickhouse-server exited with {self._proc.returncode}; "
                    f"see {self.root / 'log'}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TagtrailError(f"clickhouse-server did not listen within {timeout_s}s")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (a clean shutdown flushes data), then SIGKILL if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ClickHouseServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
