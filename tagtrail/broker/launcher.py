"""A real single-node Kafka 4.x (KRaft broker+controller) on 127.0.0.1, from Maven Central jars.

Used by `tagtrail up`, the benchmarks and the test fixtures. The jars are fetched once into a
cache folder with Maven; each broker gets its own work folder, free ports and a process group so
that it can be stopped cleanly or killed for sure.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from core.errors import DependencyMissing, TagtrailError

POM = Path(__file__).with_name("pom.xml")
LOG4J2 = Path(__file__).with_name("log4j2.xml")


class KafkaStartError(TagtrailError):
    """The local broker could not be fetched, formatted or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the broker does: connections of a stopped broker in TIME_WAIT don't make it taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise DependencyMissing(f"{program} not found on PATH: the local Kafka broker needs it")
    return path


def ensure_jars(cache_dir: Path) -> Path:
    """Fetch the broker's jars once (keyed by the pom's hash) and return the folder holding them."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    jars = cache_dir / f"jars-{digest}"
    done = jars / ".complete"
    if done.exists():
        return jars
    mvn = _require("mvn")
    _require("java")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KafkaStartError(
            f"cannot create Kafka cache folder {cache_dir}: {e.strerror}"
        ) from None
    # Several processes (parallel tests, `up` and a benchmark) may race to fetch: one does it.
    with open(cache_dir / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return jars
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jars}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise KafkaStartError("fetching Kafka jars with Maven failed: " + " | ".join(tail))
        done.touch()
    return jars


def _properties(work: Path, port: int, controller_port: int, partitions: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={work / 'logs'}",
            f"num.partitions={partitions}",
            # One broker: internal topics must not ask for more replicas than exist.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "message.max.bytes=16777216",
            "",
        ]
    )


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url UUID) that never starts with '-'.

    Kafka's own generator avoids a leading '-' because the storage tool would read such an id as
    an option; one id in 64 would otherwise fail the format step.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class LocalKafka:
    """One broker process. `start()` returns once it answers metadata requests; `stop()` ends it."""

    def __init__(
        self,
        work_dir: Path,
        cache_dir: Path,
        *,
        port: int = 0,
        heap_mb: int = 512,
        partitions: int = 4,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.cache_dir = Path(cache_dir)
        self.port = port
        self.controller_port = 0
        self.heap_mb = heap_mb
        self.partitions = partitions
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalKafka:
        jars = ensure_jars(self.cache_dir)
        java = _require("java")
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KafkaStartError(
                f"cannot create Kafka folder {self.work_dir}: {e.strerror}"
            ) from None
        props = self.work_dir / "server.properties"
        if not props.exists():
            self._configure()
            self._format(java, jars, props)
        elif not port_is_free(self.port):
            raise KafkaStartError(f"Kafka port {self.port} is taken by another process")
        env = {**os.environ, "LOG_DIR": str(self.work_dir)}
        cmd = [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Xshare:auto",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(props),
        ]
        out = open(self.work_dir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the broker
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()
        self._wait_ready()
        return self

    def _configure(self) -> None:
        if self.port and not port_is_free(self.port):
            raise KafkaStartError(f"Kafka port {self.port} is taken by another process")
        self.port = self.port or free_port()
        self.controller_port = free_port()
        props = _properties(self.work_dir, self.port, self.controller_port, self.partitions)
        (self.work_dir / "server.properties").write_text(props)

    def _format(self, java: str, jars: Path, props: Path) -> None:
        cluster_id = new_cluster_id()
        cmd = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            f"{jars}/*",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(props),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-2:]
            raise KafkaStartError("formatting Kafka storage failed: " + " | ".join(tail))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise KafkaStartError(
                    f"Kafka exited with status {self.proc.returncode} while "
                    f"starting: {self._log_tail()}"
                )
            if asyncio.run(metadata_ok(self.bootstrap)):
                return
            time.sleep(0.3)
        self.kill()
        raise KafkaStartError(
            f"Kafka did not answer within {self.start_timeout_s:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        for name in ("server.log", "stdout.log"):
            path = self.work_dir / name
            if path.exists():
                lines = [
                    ln
                    for ln in path.read_text(errors="replace").splitlines()
                    if "ERROR" in ln or "Exception" in ln
                ]
                if lines:
                    return lines[-1][:300]
        return "no error in the broker log"

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ask the broker to shut down cleanly; kill it if it does not within timeout_s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the broker's whole process group (used on teardown, even after failures)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.proc.wait(timeout=10)

    def restart(self, *, hard: bool = False) -> None:
        """Stop (cleanly, or with SIGKILL when `hard`: a crash) and start again on the same
        folder, so the same logs, cluster id (in the formatted storage) and ports."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


async def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        # A plain connect first keeps aiokafka from logging refusals while the JVM boots.
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError:
        return False
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
