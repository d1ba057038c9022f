"""The API's listening socket, bound before uvicorn serves it (so the port is known at once)."""

from __future__ import annotations

import socket


def api_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 picks a free one. Raises OSError if taken.

    Made with proto=IPPROTO_TCP on purpose: asyncio turns Nagle's algorithm off (TCP_NODELAY)
    only on accepted sockets whose proto says TCP, and `socket.socket()` says 0. With Nagle on, a
    kept-alive connection's second response waits for the client's delayed ACK, ~40 ms each.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock
