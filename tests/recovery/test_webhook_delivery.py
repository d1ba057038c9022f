"""Webhook deliveries connect only to addresses the policy checked, at the moment of connecting.

Real connections to local receivers; the event loop's resolver is replaced where a test needs a
name to answer differently from one lookup to the next (DNS rebinding), since both the checks and
the connections resolve through the running loop.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY

from recovery.notify import Notifier
from recovery.webhook_policy import WebhookPolicy
from tests.recovery.test_webhook_policy import INTERNAL_SPELLINGS


class Receiver:
    """An HTTP(S) endpoint answering 204, counting connections and keeping the Host headers."""

    def __init__(self) -> None:
        self.connections = 0
        self.hosts: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            self.hosts.append(fields.get("host", ""))
            await r.readexactly(int(fields.get("content-length", "0")))
            w.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class ScriptedDNS(asyncio.SelectorEventLoop):
    """A loop whose resolver answers `names` from scripts (the last answer repeats)."""

    names: ClassVar[dict[str, list[str]]] = {}
    lookups: ClassVar[dict[str, int]] = {}

    async def getaddrinfo(self, host: Any, port: Any, **kw: Any) -> Any:  # type: ignore[override]
        # (anyio passes the name IDNA-encoded, asyncio as given)
        script = self.names.get(host.decode() if isinstance(host, bytes) else host)
        if script is None:
            return await super().getaddrinfo(host, port, **kw)
        name = host.decode() if isinstance(host, bytes) else host
        n = self.lookups[name] = self.lookups.get(name, 0) + 1
        ip = script[min(n, len(script)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))]


def run_scripted(coro_fn: Any, names: dict[str, list[str]]) -> Any:
    ScriptedDNS.names, ScriptedDNS.lookups = names, {}
    with asyncio.Runner(loop_factory=ScriptedDNS) as runner:
        return runner.run(coro_fn())


def outcomes() -> dict[str, float]:
    return {
        o: REGISTRY.get_sample_value("tagtrail_webhooks_total", {"outcome": o}) or 0.0
        for o in ("delivered", "refused", "failed")
    }


def test_internal_spellings_are_refused_at_delivery_without_a_connection() -> None:
    async def main() -> list[bool]:
        rcv = await Receiver().start()
        notifier = Notifier(delays_s=(0.01,), timeout_s=2, policy=WebhookPolicy())
        try:
            tasks = [
                notifier.notify(f"https://{h}:{rcv.port}/h", {"event": "spotted"})
                for h in INTERNAL_SPELLINGS
            ]
            return [await t for t in tasks if t is not None]
        finally:
            await notifier.close()
            await rcv.stop()
            assert rcv.connections == 0

    before = outcomes()
    assert asyncio.run(main()) == [False] * len(INTERNAL_SPELLINGS)
    after = outcomes()
    # Refused by the policy: not attempted (and then failed) like an unreachable public host.
    assert after["refused"] - before["refused"] == len(INTERNAL_SPELLINGS)
    assert after["failed"] == before["failed"]


def test_a_name_rebound_after_the_check_cannot_redirect_the_delivery() -> None:
    # The first lookup answers an allowed address (nothing listens there), every later one the
    # receiver's loopback address, which the policy does not allow.
    name = "hooks.rebind.test"

    async def main() -> bool:
        rcv = await Receiver().start()
        policy = WebhookPolicy.parse("127.0.0.2")
        notifier = Notifier(delays_s=(0.01, 0.01), timeout_s=2, policy=policy)
        try:
            task = notifier.notify(f"https://{name}:{rcv.port}/h", {"event": "spotted"})
            assert task is not None
            return await task
        finally:
            await notifier.close()
            await rcv.stop()
            assert rcv.connections == 0, "a delivery reached the rebound address"

    assert run_scripted(main, {name: ["127.0.0.2", "127.0.0.1"]}) is False


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_delivery_connects_to_the_checked_address_and_verifies_the_name(tmp_path: Path) -> None:
    # The name exists only in the scripted resolver: a delivery that arrives was connected to
    # the address the check resolved, while TLS verified the certificate against the name.
    name = "hooks.pinned.test"
    cert, key = _self_signed(tmp_path, name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> tuple[bool, Receiver]:
        rcv = await Receiver().start(server_ctx)
        policy = WebhookPolicy.parse("127.0.0.1")
        notifier = Notifier(delays_s=(), timeout_s=5, policy=policy, ssl_context=client_ctx)
        try:
            task = notifier.notify(f"https://{name}:{rcv.port}/h?token=x", {"event": "spotted"})
            assert task is not None
            return await task, rcv
        finally:
            await notifier.close()
            await rcv.stop()

    delivered, rcv = run_scripted(main, {name: ["127.0.0.1"]})
    assert delivered and rcv.connections == 1
    assert rcv.hosts == [f"{name}:{rcv.port}"]
    assert ScriptedDNS.lookups[name] == 1  # checked and connected on one answer
