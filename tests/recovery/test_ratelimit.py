"""Token buckets: spending, peeking without spending, and a table that cannot grow without bound."""

from __future__ import annotations

from recovery.gate import client_address
from recovery.ratelimit import RateLimiter


def test_wait_peeks_without_spending() -> None:
    lim = RateLimiter(rate_per_s=0.001, burst=2)
    assert lim.wait("a") == 0 and lim.wait("a") == 0
    assert lim.take("a") == 0 and lim.take("a") == 0
    assert lim.wait("a") > 0 and lim.take("a") > 0
    assert lim.wait("b") == 0  # keys are independent


def test_the_table_of_buckets_is_bounded() -> None:
    lim = RateLimiter(rate_per_s=0.001, burst=5, max_keys=1000)
    for i in range(10_000):
        lim.take(f"10.0.{i // 256}.{i % 256}")
    assert len(lim._buckets) <= 1000


def test_ipv6_clients_count_by_their_64() -> None:
    a = client_address({"client": ("2001:db8:1:2::1", 5000)})
    b = client_address({"client": ("2001:db8:1:2:ffff::9", 5000)})
    assert a == b == "2001:db8:1:2::/64"
    assert client_address({"client": ("::ffff:10.0.0.1", 1)}) == "10.0.0.1"
    assert client_address({"client": ("10.0.0.1", 1)}) == "10.0.0.1"
    assert client_address({}) == ""
