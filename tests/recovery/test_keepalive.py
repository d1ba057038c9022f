"""Kept-alive connections answer at full speed: every real client (the console, owner apps, httpx,
requests.Session) reuses its connection, and a served socket without TCP_NODELAY made each
request after the first wait ~40 ms for the client's delayed ACK."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import httpx

from tagtrail.listen import api_socket
from tests.recovery.harness import Service


def test_accepted_connections_have_nagle_off() -> None:
    """The cause, checked where it lives: asyncio sets TCP_NODELAY on what the socket accepts."""

    async def main() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            sock = w.get_extra_info("socket")
            got.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            w.close()

        server = await asyncio.start_server(on_connect, sock=api_socket("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            w.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) != 0


def test_kept_alive_requests_do_not_wait_for_delayed_acks(service: Service) -> None:
    """Ten requests on one connection: the slow path cost >= 40 ms each, whatever the route;
    the median bound leaves a loaded CI machine ample room."""
    auth = service.new_key("police", "keepalive")["Authorization"]
    times = []
    with httpx.Client(headers={"Authorization": auth}, timeout=10) as client:
        for _ in range(11):
            t0 = time.perf_counter()
            r = client.get(f"{service.url}/openapi.json")
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
    assert statistics.median(times[1:]) < 0.030, [round(t * 1000, 1) for t in times]
