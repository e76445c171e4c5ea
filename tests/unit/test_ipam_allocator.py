"""The pure allocator: ranges, the gateway, next-after-last, wrap-around, full."""

from __future__ import annotations

import ipaddress

import pytest

from node_agent.network.allocator import Allocator

A = ipaddress.IPv4Address
NET = ipaddress.IPv4Network("10.1.0.0/29")  # hosts .1-.6


def test_first_address_skips_gateway():
    assert Allocator(NET).next(set()) == A("10.1.0.2")


def test_gateway_elsewhere_is_skipped_but_first_host_is_used():
    alloc = Allocator(NET, gateway=A("10.1.0.6"))
    assert alloc.next(set()) == A("10.1.0.1")
    assert alloc.next({A("10.1.0.5")}, last_reserved=A("10.1.0.4")) == A("10.1.0.1")


def test_next_after_last_reserved_not_lowest_free():
    alloc = Allocator(NET)
    # .2 was released, .3 is the last reserved: .4 comes next, not .2.
    assert alloc.next({A("10.1.0.3")}, last_reserved=A("10.1.0.3")) == A("10.1.0.4")


def test_wraps_around_to_the_start_of_the_range():
    alloc = Allocator(NET)
    assert alloc.next({A("10.1.0.6")}, last_reserved=A("10.1.0.6")) == A("10.1.0.2")


def test_returns_none_when_every_address_is_used():
    alloc = Allocator(NET)
    used = {A(f"10.1.0.{i}") for i in range(2, 7)}
    assert alloc.capacity == 5
    assert alloc.next(used, last_reserved=A("10.1.0.4")) is None


def test_last_reserved_outside_the_range_starts_at_the_beginning():
    alloc = Allocator(NET, range_start=A("10.1.0.3"), range_end=A("10.1.0.5"))
    assert alloc.next(set(), last_reserved=A("192.168.0.1")) == A("10.1.0.3")
    assert alloc.capacity == 3


def test_hands_out_each_address_once_over_a_full_cycle():
    alloc = Allocator(ipaddress.IPv4Network("10.2.0.0/24"))
    used: set = set()
    last = None
    for _ in range(alloc.capacity):
        last = alloc.next(used, last)
        assert last not in used
        used.add(last)
    assert len(used) == 253 and A("10.2.0.1") not in used
    assert alloc.next(used, last) is None


def test_contains_excludes_gateway_and_out_of_range():
    alloc = Allocator(NET)
    assert alloc.contains(A("10.1.0.2"))
    assert not alloc.contains(A("10.1.0.1"))
    assert not alloc.contains(A("10.1.0.7"))


@pytest.mark.parametrize("kwargs", [
    {"gateway": A("10.1.0.0")},
    {"gateway": A("10.1.0.7")},
    {"range_start": A("10.1.0.5"), "range_end": A("10.1.0.3")},
    {"range_end": A("10.9.0.1")},
], ids=["gateway-is-network-address", "gateway-is-broadcast", "start-after-end", "end-outside-subnet"])
def test_rejects_bad_ranges(kwargs):
    with pytest.raises(ValueError):
        Allocator(NET, **kwargs)


def test_rejects_a_network_too_small():
    with pytest.raises(ValueError, match="too small"):
        Allocator(ipaddress.IPv4Network("10.1.0.0/31"))
