"""Where owner webhooks may point: public https hosts, plus the operator's allowlist.

An owner chooses the URL and the service POSTs to it, so without a policy any owner could make the
service call internal addresses (server-side request forgery). The URL is checked when it is
registered, and the host's resolved addresses again before each delivery, since a public name
can later resolve to a private address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Allowed hosts (lower-case names, addresses and networks) beyond public https ones."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, allow: str) -> WebhookPolicy:
        """From a comma-separated list of host names, IP addresses and CIDR networks."""
        hosts: set[str] = set()
        nets = []
        for item in (x.strip().lower() for x in allow.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item)
        return cls(frozenset(hosts), tuple(nets))

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls.parse(settings.webhook_allow_hosts)

    def _allowed_ip(self, ip: IPAddress) -> bool:
        return any(ip in n for n in self.networks if n.version == ip.version)

    def _allowed_host(self, host: str) -> bool:
        if host in self.hosts:
            return True
        ip = _as_ip(host)
        return ip is not None and self._allowed_ip(ip)

    def check_url(self, url: str) -> str | None:
        """Why `url` may not be a webhook, or None when it may (no network access)."""
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a malformed port
        except ValueError as e:
            return f"not a valid URL ({e})"
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            return "must be an http(s) URL with a host"
        if parts.username is not None or parts.password is not None:
            return "must not carry credentials"
        if port == 0:
            return "port 0 is not a valid port"
        if self._allowed_host(host):
            return None
        if parts.scheme != "https":
            return "must use https (plain http only for hosts the operator allows)"
        ip = _as_ip(host)
        if ip is not None and not ip.is_global:
            return f"{host} is not a public address"
        if ip is None and (host == "localhost" or host.endswith(_INTERNAL_SUFFIXES)):
            return f"{host} is an internal host name"
        return None

    async def check_delivery(self, url: str) -> str | None:
        """check_url, then every address the host resolves to must be public (or allowed)."""
        reason = self.check_url(url)
        if reason is not None:
            return reason
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self._allowed_host(host):
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as e:
            return f"{host} does not resolve ({e})"
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not ip.is_global and not self._allowed_ip(ip):
                return f"{host} resolves to {ip}, not a public address"
        return None


def _as_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
