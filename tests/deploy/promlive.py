"""Helpers for tests against a real Prometheus: a child server in a temp folder, PromQL over HTTP,
and the panel and rule expressions of the committed dashboards and rules."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING = "Debian's prometheus package is not installed (apt-get install prometheus)"


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    kind: str  # "promql" or "sql"
    text: str


def dashboard_queries() -> Iterator[Query]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for p in board["panels"]:
            for t in p["targets"]:
                if "expr" in t:
                    yield Query(board["uid"], p["title"], "promql", t["expr"])
                else:
                    yield Query(board["uid"], p["title"], "sql", t["rawSql"])


def rule_list(path: Path = RULES) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


# A comparison with a literal on its right filters series; its `bool` form keeps every series
# (as 0/1), so evaluating it proves the underlying series exist whether or not the alert fires.
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(?=[-\d(])")


def as_bool(expr: str) -> str:
    return _COMPARISON.sub(lambda m: f"{m.group(1)} bool ", expr)


def operands(expr: str) -> list[str]:
    """The operands of top-level `and` / `unless` / `or` (each is checked on its own: `unless`
    drops every series when its right side has one, whatever the values)."""
    parts, depth, start = [], 0, 0
    tokens = re.finditer(r"[()]|\b(?:and|unless|or)\b", expr)
    for m in tokens:
        tok = m.group(0)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0:
            parts.append(expr[start : m.start()].strip())
            start = m.end()
    parts.append(expr[start:].strip())
    return parts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """Debian's prometheus as a child process; `stop()` kills it (also on test failure)."""

    def __init__(
        self, folder: Path, targets: list[str], rules: Path | None, bearer: str | None = None
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        job: dict[str, Any] = {"job_name": "tagtrail-up", "static_configs": [{"targets": targets}]}
        if bearer is not None:  # the API's /metrics answers ops keys
            (folder / "scrape.key").write_text(bearer)
            job["authorization"] = {"type": "Bearer", "credentials_file": "scrape.key"}
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [job],
        }
        if rules is not None:
            # The committed rules, with every group evaluated each second so the test is short.
            doc = yaml.safe_load(rules.read_text())
            for g in doc["groups"]:
                g["interval"] = "1s"
            (folder / "rules.yml").write_text(yaml.safe_dump(doc))
            config["rule_files"] = ["rules.yml"]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        if PROMETHEUS is None:
            raise RuntimeError(MISSING)
        self.log = (self.folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready in {timeout_s} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises AssertionError with Prometheus' error for a bad expression."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{expr}: {body.get('error', r.text)}"
        return list(body["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]
