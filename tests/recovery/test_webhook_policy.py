"""The webhook policy: public https hosts, or what the operator allows; nothing internal."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.webhook_policy import WebhookPolicy

STRICT = WebhookPolicy()


def test_public_https_only_by_default() -> None:
    assert STRICT.check_url("https://hooks.example.com/t/abc?x=1") is None
    assert STRICT.check_url("https://93.184.216.34:8443/h") is None
    for bad in (
        "http://hooks.example.com/",  # plain http
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://192.168.1.10/",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[fd00::1]/",
        "https://0.0.0.0/",
        "https://localhost/",
        "https://printer.local/",
        "https://svc.internal/",
        "https://user:pw@example.com/",
        "ftp://example.com/",
        "https:///nohost",
        "https://example.com:99999/",
    ):
        assert STRICT.check_url(bad) is not None, bad


def test_allowlist_admits_named_hosts_addresses_and_networks() -> None:
    p = WebhookPolicy.parse(" gw.lan , 127.0.0.1, 10.20.0.0/16 ,")
    assert p.check_url("http://gw.lan:9000/hook") is None
    assert p.check_url("http://127.0.0.1:5000/") is None
    assert p.check_url("http://10.20.3.4/") is None
    assert p.check_url("http://10.21.3.4/") is not None
    assert p.check_url("http://127.0.0.2/") is not None


# The owner-chosen spellings of loopback that registration once accepted (issue 22).
INTERNAL_SPELLINGS = (
    "127.1",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "0x7f.0.0.1",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
)


def test_legacy_and_embedded_spellings_of_internal_addresses_are_refused() -> None:
    for host in (
        *INTERNAL_SPELLINGS,
        "0x7f.1",
        "10.1",  # 10.0.0.1
        "0xa9fea9fe",  # 169.254.169.254
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",  # local-use NAT64
        "[2002:7f00:1::1]",  # 6to4 around 127.0.0.1
        "[2002:a00:1::1]",  # 6to4 around 10.0.0.1
        "[ff02::1]",  # multicast
        "224.0.0.1",
        "[fe80::1]",
        "127.0.0.1.",
        "localhost.",
    ):
        url = f"https://{host}:8443/h"
        assert STRICT.check_url(url) is not None, url
        assert asyncio.run(STRICT.check_target(url)) is not None, url
    # Public addresses in the same notations stay usable.
    assert STRICT.check_url("https://1572395042/h") is None  # 93.184.216.34
    assert STRICT.check_url("https://[2002:5db8:d822::1]/h") is None  # 6to4 of a public address


@given(st.ip_addresses())
def test_an_ip_literal_is_allowed_only_when_public(ip: ipaddress._BaseAddress) -> None:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    allowed = STRICT.check_url(f"https://{host}/h") is None
    if allowed:
        assert ip.is_global and not ip.is_multicast and not ip.is_reserved
    if ip.version == 4:
        assert allowed == (ip.is_global and not ip.is_multicast and not ip.is_reserved)
    else:
        assert isinstance(ip, ipaddress.IPv6Address)
        if ip.ipv4_mapped or int(ip) >> 32 == 0 or ip in ipaddress.ip_network("64:ff9b::/96"):
            assert not allowed


def test_the_target_check_covers_what_the_name_resolves_to() -> None:
    # The machine's own name passes the name check, but resolves to a loopback/private address.
    p = WebhookPolicy()
    name = socket.gethostname().lower()
    try:
        addrs = {ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(name, 443)}
    except OSError as e:
        pytest.skip(f"this machine's host name {name!r} does not resolve ({e})")
    if all(a.is_global for a in addrs):
        pytest.skip(f"this machine's host name {name!r} resolves to public addresses only")
    assert p.check_url(f"https://{name}/h") is None
    reason = asyncio.run(p.check_target(f"https://{name}/h"))
    assert reason is not None and "not a public address" in reason
    assert asyncio.run(p.check_target("https://no-such-host.invalid/h")) is not None
    assert asyncio.run(WebhookPolicy.parse("127.0.0.1").check_target("http://127.0.0.1/")) is None


def test_a_name_that_cannot_be_resolved_is_refused_not_a_fault() -> None:
    # Not a valid IDNA name: getaddrinfo raises UnicodeError (schemathesis found it as a 500).
    assert asyncio.run(STRICT.check_target("https://\U000f8cc0.example/h")) is not None
