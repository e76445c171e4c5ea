"""The on-disk IPAM store: files, locking, restarts, no address twice."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os

import pytest

from node_agent.network.allocator import Allocator
from node_agent.network.ipam_store import AlreadyAttachedError, ExhaustedError, IpamStore

A = ipaddress.IPv4Address


@pytest.fixture
def store(tmp_path):
    return IpamStore(str(tmp_path / "net"))


@pytest.fixture
def allocator():
    return Allocator(ipaddress.IPv4Network("10.3.0.0/29"))  # 5 addresses (.2-.6)


def test_reserve_writes_one_file_per_address_with_its_owner(store, allocator):
    addr = store.reserve(allocator, "c1", "eth0", {"netns": "/run/netns/x"})
    assert addr == A("10.3.0.2")
    alloc = store.find("c1", "eth0")
    assert alloc.address == addr and alloc.container_id == "c1" and alloc.ifname == "eth0"
    assert alloc.record["netns"] == "/run/netns/x"
    assert str(addr) in os.listdir(store.directory)


def test_duplicate_attachment_is_refused_and_changes_nothing(store, allocator):
    store.reserve(allocator, "c1", "eth0")
    with pytest.raises(AlreadyAttachedError):
        store.reserve(allocator, "c1", "eth0")
    assert store.in_use() == {A("10.3.0.2")}
    # Another interface of the same container is another attachment.
    assert store.reserve(allocator, "c1", "eth1") == A("10.3.0.3")


def test_release_frees_the_address_and_is_idempotent(store, allocator):
    store.reserve(allocator, "c1", "eth0")
    assert store.release("c1", "eth0") == A("10.3.0.2")
    assert store.release("c1", "eth0") is None
    assert store.in_use() == set()
    assert os.listdir(os.path.join(store.directory, "by-attachment")) == []


def test_released_address_is_not_reused_at_once(store, allocator):
    store.reserve(allocator, "c1", "eth0")
    store.release("c1", "eth0")
    assert store.reserve(allocator, "c2", "eth0") == A("10.3.0.3")


def test_exhausted_range_raises_and_writes_nothing(store, allocator):
    for i in range(allocator.capacity):
        store.reserve(allocator, f"c{i}", "eth0")
    before = sorted(os.listdir(store.directory))
    with pytest.raises(ExhaustedError):
        store.reserve(allocator, "extra", "eth0")
    assert sorted(os.listdir(store.directory)) == before


def test_state_survives_a_new_store_on_the_same_directory(store, allocator):
    store.reserve(allocator, "c1", "eth0")
    store.reserve(allocator, "c2", "eth0")
    again = IpamStore(store.directory)
    assert again.find("c2", "eth0").address == A("10.3.0.3")
    assert again.reserve(allocator, "c3", "eth0") == A("10.3.0.4")  # continues after the last


def test_update_keeps_owner_fields(store, allocator):
    addr = store.reserve(allocator, "c1", "eth0")
    store.update(addr, {"result": {"ips": []}, "containerID": "forged"})
    rec = store.find("c1", "eth0").record
    assert rec["containerID"] == "c1" and rec["result"] == {"ips": []}


def test_stale_link_without_address_file_is_not_an_attachment(store, allocator):
    addr = store.reserve(allocator, "c1", "eth0")
    os.unlink(os.path.join(store.directory, str(addr)))
    assert store.find("c1", "eth0") is None
    assert store.reserve(allocator, "c1", "eth0") == A("10.3.0.3")


def _reserve_many(directory: str, prefix: str, count: int, queue) -> None:
    store = IpamStore(directory)
    alloc = Allocator(ipaddress.IPv4Network("10.4.0.0/24"))
    queue.put([str(store.reserve(alloc, f"{prefix}-{i}", "eth0")) for i in range(count)])


def test_concurrent_processes_never_get_the_same_address(tmp_path):
    directory = str(tmp_path / "shared")
    IpamStore(directory)
    queue = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_reserve_many, args=(directory, f"p{n}", 40, queue))
             for n in range(4)]
    for p in procs:
        p.start()
    got = [addr for _ in procs for addr in queue.get(timeout=30)]
    for p in procs:
        p.join(10)
    assert len(got) == 160 and len(set(got)) == 160
    assert len(IpamStore(directory).in_use()) == 160
