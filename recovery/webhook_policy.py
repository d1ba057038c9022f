"""Where owner webhooks may point: public https hosts, plus the operator's allowlist.

An owner chooses the URL and the service POSTs to it, so without a policy any owner could make the
service call internal addresses (server-side request forgery). The URL is checked when it is
registered, on what it says and on every address its host resolves to; every delivery resolves
the host again, checks every address, and connects to a checked address itself (`resolve`, used
by `recovery.notify`'s connection backend), so a name rebound to an internal address between
the check and the connection cannot redirect a delivery.

An address is public when it is global unicast, and it is not an IPv6 form that embeds an IPv4
address (IPv4-mapped or -compatible, NAT64) or a 6to4 address around a non-public IPv4 address.
Legacy IPv4 spellings (`127.1`, `2130706433`, `0x7f000001`, `017700000001`, `0x7f.0.0.1`) are
read as the addresses they name, as resolvers and browsers do.
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
# IPv6 forms carrying an IPv4 address that the host may turn into an IPv4 connection.
_EMBEDDING_V4 = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")
)
RESOLVE_TIMEOUT_S = 5.0


class WebhookRefused(Exception):
    """A webhook target the policy refuses (raised when connecting; the message says why)."""


def why_not_public(ip: IPAddress) -> str | None:
    """Why `ip` is no address to call on an owner's behalf, or None when it is public."""
    if ip.version == 6:
        assert isinstance(ip, ipaddress.IPv6Address)
        if ip.scope_id:
            return f"{ip} is a scoped (link-local) address"
        if any(ip in n for n in _EMBEDDING_V4):
            return f"{ip} embeds an IPv4 address (IPv4-mapped, -compatible or NAT64)"
        if ip.sixtofour is not None and why_not_public(ip.sixtofour) is not None:
            return f"{ip} is a 6to4 address of {ip.sixtofour}, not a public address"
        if ip.teredo is not None:
            return f"{ip} is a Teredo address"
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return f"{ip} is not a public address"
    return None


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

    def allowed_ip(self, ip: IPAddress) -> bool:
        """In one of the operator's networks."""
        return any(ip in n for n in self.networks if n.version == ip.version)

    def allowed_name(self, host: str) -> bool:
        """A host name the operator allows as it is (connected to by name, not checked)."""
        return host.lower().rstrip(".") in self.hosts

    def _allowed_host(self, host: str) -> bool:
        if self.allowed_name(host):
            return True
        ip = as_ip(host)
        return ip is not None and self.allowed_ip(ip)

    def check_url(self, url: str) -> str | None:
        """Why `url` may not be a webhook, or None when it may (on what it says: no network)."""
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
        ip = as_ip(host)
        if ip is not None:
            return why_not_public(ip)
        name = host.rstrip(".")
        if name == "localhost" or name.endswith(_INTERNAL_SUFFIXES):
            return f"{host} is an internal host name"
        return None

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to, each checked; WebhookRefused if any is not allowed
        (or the name does not resolve). What a connection to `host` may use, and nothing else."""
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(
                    host.strip("[]"), port, type=socket.SOCK_STREAM
                ),
                RESOLVE_TIMEOUT_S,
            )
        except (OSError, TimeoutError, ValueError) as e:  # ValueError: not a valid IDNA name
            raise WebhookRefused(f"{host} does not resolve ({e or 'timed out'})") from None
        out: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]))  # with its %scope, if any
            if self.allowed_ip(ip):
                out.append(ip)
                continue
            reason = why_not_public(ip)
            if reason is not None:
                raise WebhookRefused(f"{host} resolves to {ip}: {reason.removeprefix(f'{ip} ')}")
            out.append(ip)
        if not out:
            raise WebhookRefused(f"{host} resolves to no address")
        return list(dict.fromkeys(out))

    async def check_target(self, url: str) -> str | None:
        """check_url, then every address the host resolves to must be public (or allowed)."""
        reason = self.check_url(url)
        if reason is not None:
            return reason
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self.allowed_name(host):
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await self.resolve(host, port)
        except WebhookRefused as e:
            return str(e)
        return None


def as_ip(host: str) -> IPAddress | None:
    """The address an IP-literal host names (legacy IPv4 spellings included), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _legacy_ipv4(host.rstrip("."))


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    # inet_aton's (and the WHATWG URL standard's) forms: 1-4 parts, each decimal, 0x-hex or
    # 0-led octal; the last part fills the remaining bytes.
    parts = host.lower().split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for p in parts:
        try:
            if p.startswith("0x"):
                nums.append(int(p[2:] or "0", 16))
            elif len(p) > 1 and p.startswith("0"):
                nums.append(int(p[1:], 8))
            elif p.isdigit():
                nums.append(int(p))
            else:
                return None
        except ValueError:
            return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(nums)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)
