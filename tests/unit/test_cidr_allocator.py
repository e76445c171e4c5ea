"""The pure pod CIDR allocator: lowest free first, occupy / release, exhaustion, bad input."""

import pytest

from services.controllers.cidr_allocator import CIDRAllocator, CIDRError, CIDRRangeExhausted


def test_allocates_lowest_free_subnets_in_order():
    a = CIDRAllocator("10.244.0.0/16", 24)
    assert [a.allocate() for _ in range(3)] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert a.used == 3 and a.capacity == 256


def test_released_subnet_is_reused_before_higher_ones():
    a = CIDRAllocator("10.244.0.0/16", 24)
    for _ in range(4):
        a.allocate()
    a.release("10.244.1.0/24")
    assert a.allocate() == "10.244.1.0/24"
    assert a.allocate() == "10.244.4.0/24"


def test_occupied_subnets_are_skipped():
    a = CIDRAllocator("10.244.0.0/16", 24)
    a.occupy("10.244.0.0/24")
    a.occupy("10.244.2.0/24")
    assert a.allocate() == "10.244.1.0/24"
    assert a.allocate() == "10.244.3.0/24"


def test_occupy_and_release_are_idempotent():
    a = CIDRAllocator("10.244.0.0/16", 24)
    a.occupy("10.244.5.0/24")
    a.occupy("10.244.5.0/24")
    assert a.used == 1
    a.release("10.244.5.0/24")
    a.release("10.244.5.0/24")
    assert a.used == 0


def test_exhausted_range_raises_and_recovers_after_release():
    a = CIDRAllocator("10.0.0.0/30", 31)
    assert [a.allocate(), a.allocate()] == ["10.0.0.0/31", "10.0.0.2/31"]
    with pytest.raises(CIDRRangeExhausted, match="all 2 /31 subnets are in use"):
        a.allocate()
    a.release("10.0.0.2/31")
    assert a.allocate() == "10.0.0.2/31"


def test_never_hands_out_the_same_subnet_twice():
    a = CIDRAllocator("10.244.0.0/20", 24)
    got = [a.allocate() for _ in range(16)]
    assert len(set(got)) == 16
    with pytest.raises(CIDRRangeExhausted):
        a.allocate()


@pytest.mark.parametrize("cidr, used", [
    ("10.244.0.0/23", 2),        # wider than a subnet: takes all it covers
    ("10.244.7.128/25", 1),      # narrower: takes the subnet it lies in
    ("10.0.0.0/8", 256),         # covers the whole cluster CIDR
    ("10.244.3.7/24", 1),        # host bits set: normalised
], ids=["wider", "narrower", "covers-all", "host-bits"])
def test_occupy_marks_every_overlapping_subnet(cidr, used):
    a = CIDRAllocator("10.244.0.0/16", 24)
    a.occupy(cidr)
    assert a.used == used
    assert a.is_used(cidr)


@pytest.mark.parametrize("cidr, message", [
    ("10.245.0.0/24", "outside the cluster CIDR"),
    ("fd00::/64", "is IPv6"),
    ("not-a-cidr", "invalid CIDR"),
    ("10.244.0.0/33", "invalid CIDR"),
], ids=["outside", "other-family", "garbage", "bad-prefix"])
def test_occupy_rejects_cidrs_that_do_not_fit(cidr, message):
    a = CIDRAllocator("10.244.0.0/16", 24)
    with pytest.raises(CIDRError, match=message):
        a.occupy(cidr)
    assert a.used == 0


@pytest.mark.parametrize("cluster, mask, message", [
    ("10.244.0.0/16", 8, "between the cluster CIDR's prefix length 16 and 32"),
    ("10.244.0.0/16", 33, "between"),
    ("10.0.0.0/8", 28, "more than 16 bits longer"),
    ("10.244.0.1/16", 24, "invalid cluster CIDR"),
    ("bogus", 24, "invalid cluster CIDR"),
], ids=["mask-shorter-than-cluster", "mask-too-long", "too-many-subnets", "host-bits-set", "garbage"])
def test_rejects_bad_configuration(cluster, mask, message):
    with pytest.raises(CIDRError, match=message):
        CIDRAllocator(cluster, mask)


def test_ipv6_cluster_cidr():
    a = CIDRAllocator("fd00:10:244::/56", 64)
    assert a.allocate() == "fd00:10:244::/64"
    assert a.allocate() == "fd00:10:244:1::/64"
    assert a.capacity == 256


def test_mask_equal_to_cluster_prefix_gives_one_subnet():
    a = CIDRAllocator("10.244.0.0/24", 24)
    assert a.allocate() == "10.244.0.0/24"
    with pytest.raises(CIDRRangeExhausted):
        a.allocate()
