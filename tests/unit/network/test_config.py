"""Network configuration and parameters: each bad input gets its CNI code."""

from __future__ import annotations

import ipaddress
import json

import pytest

from node_agent.network import errors
from node_agent.network.config import (
    NetworkConfig,
    apply_cni_json,
    check_port_conflicts,
    decode_json,
    parse_cni_args,
    port_mapping,
    port_mappings_from_json,
    validate_container_id,
    validate_ifname,
)
from node_agent.network.errors import CniError

BASE = {"cniVersion": "1.0.0", "name": "kubeling", "type": "kubeling"}


def conf(**extra):
    return dict(BASE, **extra)


def test_applies_known_keys():
    cfg = apply_cni_json(NetworkConfig(), conf(bridge="br9", mtu=1400, ipMasq=False,
                                               ipam={"type": "kubeling", "subnet": "10.9.0.0/24",
                                                     "gateway": "10.9.0.254", "dataDir": "/tmp/x"},
                                               dns={"nameservers": ["10.96.0.10"]}))
    assert cfg.bridge == "br9" and cfg.mtu == 1400 and cfg.ip_masq is False
    assert cfg.subnet == ipaddress.IPv4Network("10.9.0.0/24")
    assert cfg.gateway_ip == ipaddress.IPv4Address("10.9.0.254")
    assert cfg.state_dir == "/tmp/x" and cfg.dns.nameservers == ("10.96.0.10",)


def test_default_gateway_is_first_host():
    assert str(NetworkConfig().with_subnet("10.5.0.0/16").gateway_ip) == "10.5.0.1"


def test_unknown_keys_are_ignored():
    apply_cni_json(NetworkConfig(), conf(capabilities={"portMappings": True}, somethingElse=1))


@pytest.mark.parametrize("text,code", [
    ("{", errors.DECODING_FAILURE),
    ("[1, 2]", errors.DECODING_FAILURE),
    (b"\xff\xfe", errors.DECODING_FAILURE),
], ids=["truncated", "not-an-object", "not-utf8"])
def test_undecodable_config(text, code):
    with pytest.raises(CniError) as e:
        decode_json(text)
    assert e.value.code == code


@pytest.mark.parametrize("change,code", [
    ({"cniVersion": "0.3.1"}, errors.INCOMPATIBLE_CNI_VERSION),
    ({"cniVersion": 1}, errors.INVALID_NETWORK_CONFIG),
    ({"name": ""}, errors.INVALID_NETWORK_CONFIG),
    ({"name": "a/b"}, errors.INVALID_NETWORK_CONFIG),
    ({"mtu": "1500"}, errors.INVALID_NETWORK_CONFIG),
    ({"mtu": 10}, errors.INVALID_NETWORK_CONFIG),
    ({"bridge": "a-name-far-too-long"}, errors.INVALID_NETWORK_CONFIG),
    ({"ipMasq": "yes"}, errors.INVALID_NETWORK_CONFIG),
    ({"ipam": {"subnet": "10.0.0.0/33"}}, errors.INVALID_NETWORK_CONFIG),
    ({"ipam": {"subnet": "10.0.0.1/24"}}, errors.INVALID_NETWORK_CONFIG),
    ({"ipam": {"subnet": "10.0.0.0/31"}}, errors.INVALID_NETWORK_CONFIG),
    ({"ipam": {"subnet": "fd00::/64"}}, errors.UNSUPPORTED_FIELD),
    ({"ipam": {"type": "dhcp"}}, errors.UNSUPPORTED_FIELD),
    ({"ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}}, errors.INVALID_NETWORK_CONFIG),
    ({"ipam": {"dataDir": "relative"}}, errors.INVALID_NETWORK_CONFIG),
    ({"dns": {"nameservers": "10.0.0.1"}}, errors.INVALID_NETWORK_CONFIG),
], ids=["old-version", "version-not-string", "empty-name", "name-with-slash", "mtu-string", "mtu-tiny",
        "bridge-too-long", "ipmasq-string", "bad-prefix", "host-bits-set", "too-small", "ipv6",
        "foreign-ipam", "gateway-outside", "relative-datadir", "nameservers-not-list"])
def test_invalid_config(change, code):
    with pytest.raises(CniError) as e:
        apply_cni_json(NetworkConfig(), dict(BASE, **change))
    assert e.value.code == code, e.value


def test_missing_version_is_incompatible():
    body = dict(BASE)
    del body["cniVersion"]
    with pytest.raises(CniError) as e:
        apply_cni_json(NetworkConfig(), body)
    assert e.value.code == errors.INCOMPATIBLE_CNI_VERSION


@pytest.mark.parametrize("cid", ["", "-abc", "a b", "a:b", "x" * 300], ids=["empty", "leading-dash", "space",
                                                                            "colon", "too-long"])
def test_invalid_container_id(cid):
    with pytest.raises(CniError) as e:
        validate_container_id(cid)
    assert e.value.code == errors.INVALID_ENVIRONMENT_VARIABLES


@pytest.mark.parametrize("ifname", ["", ".", "..", "eth/0", "eth:0", "eth 0", "a" * 16])
def test_invalid_ifname(ifname):
    with pytest.raises(CniError) as e:
        validate_ifname(ifname)
    assert e.value.code == errors.INVALID_ENVIRONMENT_VARIABLES
    assert "CNI_IFNAME" in e.value.msg


def test_valid_names_pass():
    validate_container_id("3f2a_b.c-d")
    validate_ifname("eth0")
    validate_ifname("a" * 15)


def test_port_mappings():
    maps = port_mappings_from_json([{"hostPort": 8080, "containerPort": 80},
                                    {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "0.0.0.0"}])
    assert maps[0].protocol == "tcp" and maps[1].protocol == "udp" and maps[1].host_ip == ""


@pytest.mark.parametrize("item,code", [
    ({"hostPort": 0, "containerPort": 80}, errors.INVALID_NETWORK_CONFIG),
    ({"hostPort": 80, "containerPort": 70000}, errors.INVALID_NETWORK_CONFIG),
    ({"hostPort": "80", "containerPort": 80}, errors.INVALID_NETWORK_CONFIG),
    ({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}, errors.UNSUPPORTED_FIELD),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "nope"}, errors.INVALID_NETWORK_CONFIG),
    ({"hostPort": 80, "containerPort": 80, "hostIP": "::1"}, errors.UNSUPPORTED_FIELD),
], ids=["zero-host-port", "container-port-too-big", "port-string", "icmp", "bad-host-ip", "ipv6-host-ip"])
def test_invalid_port_mapping(item, code):
    with pytest.raises(CniError) as e:
        port_mappings_from_json([item])
    assert e.value.code == code


def test_duplicate_host_ports_conflict():
    with pytest.raises(CniError) as e:
        check_port_conflicts((port_mapping(80, 80), port_mapping(80, 81)))
    assert e.value.code == errors.INVALID_NETWORK_CONFIG
    check_port_conflicts((port_mapping(80, 80), port_mapping(80, 80, "udp")))


def test_cni_args():
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "default"}
    with pytest.raises(CniError) as e:
        parse_cni_args("K8S_POD_NAME")
    assert e.value.code == errors.INVALID_ENVIRONMENT_VARIABLES


def test_error_json_shape():
    body = CniError(7, "Invalid Configuration", "too small").to_json("1.0.0")
    assert json.loads(json.dumps(body)) == {"cniVersion": "1.0.0", "code": 7, "msg": "Invalid Configuration",
                                            "details": "too small"}
