"""nftables rulesets and result conversions, rendered without a kernel."""

from __future__ import annotations

import ipaddress

from kubeling.cni.v1 import cni_pb2
from node_agent.network import hostport, masquerade, nft
from node_agent.network.config import port_mapping
from node_agent.network.pod_interface import host_veth_name
from node_agent.network.routes import node_route, vtep_mac
from node_agent.network.service import result_from_proto, result_to_proto

POD = hostport.PodPorts("c1", "eth0", ipaddress.IPv4Address("10.244.1.5"),
                        (port_mapping(8080, 80), port_mapping(5353, 53, "udp", "192.168.1.10")))


def test_no_mappings_means_no_table():
    assert hostport.render([], ipaddress.IPv4Network("10.244.1.0/24")) is None
    text = nft.replace_table("ip", "kubeling_hostport", None)
    assert text == "table ip kubeling_hostport\ndelete table ip kubeling_hostport\n"


def test_hostport_rules_dnat_local_addresses_to_the_pod():
    body = hostport.render([POD], ipaddress.IPv4Network("10.244.1.0/24"))
    assert "meta l4proto tcp th dport 8080 dnat to 10.244.1.5:80" in body
    assert "ip daddr 192.168.1.10 meta l4proto udp th dport 5353 dnat to 10.244.1.5:53" in body
    assert "fib daddr type local jump hostports" in body
    assert "ct status dnat ip saddr 10.244.1.0/24 ip daddr 10.244.1.0/24 masquerade" in body


def test_masquerade_spares_cluster_traffic():
    body = masquerade.render(ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv4Network("10.244.0.0/16"))
    assert "ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16" in body and "masquerade" in body


def test_host_veth_name_is_stable_short_and_distinct():
    a = host_veth_name("c1", "eth0")
    assert a == host_veth_name("c1", "eth0") and len(a) <= 15
    assert a != host_veth_name("c1", "eth1") and a != host_veth_name("c2", "eth0")


def test_vtep_mac_is_unicast_and_local():
    mac = vtep_mac(ipaddress.IPv4Address("192.168.77.2"))
    assert mac == "0e:6b:c0:a8:4d:02"
    first = int(mac.split(":")[0], 16)
    assert first & 1 == 0 and first & 2 == 2


def test_node_route_needs_cidr_and_ipv4_address():
    assert node_route("n", "10.244.2.0/24", "192.168.77.2") is not None
    assert node_route("n", "", "192.168.77.2") is None
    assert node_route("n", "10.244.2.0/24", "") is None
    assert node_route("n", "10.244.2.0/24", "fd00::1") is None


def test_result_round_trips_through_proto():
    result = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "kubeling0", "mac": "0a:58:0a:f4:01:01"},
                             {"name": "veth1", "mac": "aa:bb:cc:dd:ee:01"},
                             {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/p"}],
              "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}],
              "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]}
    msg = result_to_proto(result)
    assert isinstance(msg, cni_pb2.Result) and msg.ips[0].HasField("interface")
    assert result_from_proto(msg) == result
