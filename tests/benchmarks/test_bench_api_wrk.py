"""benchmarks/bench_api_wrk.py's pieces: its request files, its wrk script and the parsing of wrk's
output, for one second against a small HTTP server here (the figures are not asserted)."""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from benchmarks.bench_api_wrk import parse_wrk, request_line, run_wrk, write_requests

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:1
  2 threads and 16 connections
  Latency Distribution
     50%  612.00us
     75%    2.14ms
     90%    5.02ms
     99%    1.20s
  3104 requests in 2.00s, 1.09MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 1625
Requests/sec:   1550.04
STATUS {"201": 1479, "409": 1625}
LATENCY_US {"p50": 612, "p90": 5021, "p99": 1200000, "p999": 1400000, "max": 1500000, "mean": 2.5}
"""


def test_parse_wrk() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert r["req_per_s"] == 1550.04 and r["requests"] == 3104 and r["duration_s"] == 2.0
    assert r["p50_ms"] == 0.612 and r["p99_ms"] == 1200.0 and r["max_ms"] == 1500.0
    assert r["statuses"] == {"201": 1479, "409": 1625} and r["non_2xx_3xx"] == 1625
    assert r["socket_errors"] == {"connect": 0, "read": 1, "write": 0, "timeout": 2}
    assert r["served_2xx_per_s"] == 739.5
    with pytest.raises(ValueError):
        parse_wrk("wrk: connection refused")


def test_request_line() -> None:
    assert request_line("GET", "/healthz") == "GET\t/healthz\t-\t-"
    line = request_line("POST", "/v1/thefts", "k1", {"tag_id": 3})
    assert line == 'POST\t/v1/thefts\tk1\t{"tag_id":3}'
    with pytest.raises(ValueError):
        request_line("GET", "/a\tb")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the benchmark measures
    seen: ClassVar[Counter[tuple[str, str, str, str]]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _answer(self, status: int) -> None:
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with self.lock:
            self.seen[("GET", self.path, self.headers.get("Authorization", ""), "")] += 1
        self._answer(200)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        with self.lock:
            self.seen[("POST", self.path, self.headers.get("Authorization", ""), body)] += 1
        self._answer(201 if json.loads(body)["tag_id"] % 2 == 0 else 409)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_wrk_script_rotates_requests_and_counts_statuses(server: str, tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (deploy/apt-packages.txt; .ci/run installs it)")
    _Handler.seen.clear()
    lines = [request_line("POST", "/v1/thefts", f"key{t}", {"tag_id": t}) for t in range(4)]
    lines.append(request_line("GET", "/v1/bikes/7/last-seen?reason=x", "police"))
    reqs = write_requests(tmp_path / "reqs.tsv", lines)
    r = run_wrk(server, reqs, seconds=1, connections=4, threads=2)
    assert r["requests"] > 0 and r["req_per_s"] > 0 and r["p99_ms"] > 0
    # Every line was sent as written (method, path, key, body), and nothing else.
    sent = {k[:3] for k in _Handler.seen}
    assert sent == {("POST", "/v1/thefts", f"Bearer key{t}") for t in range(4)} | {
        ("GET", "/v1/bikes/7/last-seen?reason=x", "Bearer police")
    }
    assert {k[3] for k in _Handler.seen if k[0] == "POST"} == {
        json.dumps({"tag_id": t}, separators=(",", ":")) for t in range(4)
    }
    # Statuses counted over both threads: 201 for even tags, 409 for odd ones, 200 for GET.
    assert set(r["statuses"]) == {"200", "201", "409"}
    assert sum(r["statuses"].values()) >= r["requests"] - 4  # wrk may drop in-flight ones
    assert r["non_2xx_3xx"] == r["statuses"]["409"]
