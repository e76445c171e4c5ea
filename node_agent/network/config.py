"""Network configuration and request parameters, validated.

`NetworkConfig` is what one node network is: its name, bridge, pod CIDR,
gateway, MTU, cluster CIDR (for masquerade) and state directory. The gRPC
service builds it from its flags; the plugin binary from the CNI network
configuration JSON on stdin (`from_cni_json`). Request parameters (container
id, interface name, port mappings) are checked by `validate_*`. Every
problem is a `CniError` with the code the CNI specification gives it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from node_agent.network.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_CNI_VERSION,
    INVALID_ENVIRONMENT_VARIABLES,
    INVALID_NETWORK_CONFIG,
    UNSUPPORTED_FIELD,
    CniError,
)

CNI_VERSION = "1.0.0"
# The result shape we produce is CNI 1.0's; 1.1.0 only added fields we do
# not need to emit, so a 1.1.0 configuration is served with 1.1.0 echoed.
SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")

DEFAULT_NETWORK_NAME = "kubeling"
DEFAULT_BRIDGE = "kubeling0"
DEFAULT_MTU = 1500
VXLAN_OVERHEAD = 50
DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_STATE_DIR = "/var/lib/kubeling/network"
MODES = ("host-gw", "vxlan")

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class DNS:
    """DNS settings handed to pods (the CNI `dns` dictionary)."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class NetworkConfig:
    """One node's pod network. `subnet` may be None until the node has a pod CIDR."""

    name: str = DEFAULT_NETWORK_NAME
    cni_version: str = CNI_VERSION
    bridge: str = DEFAULT_BRIDGE
    subnet: ipaddress.IPv4Network | None = None
    gateway: ipaddress.IPv4Address | None = None  # default: the subnet's first address
    mtu: int = DEFAULT_MTU
    cluster_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network(DEFAULT_CLUSTER_CIDR)
    ip_masq: bool = True
    state_dir: str = DEFAULT_STATE_DIR
    dns: DNS = field(default_factory=DNS)

    @property
    def gateway_ip(self) -> ipaddress.IPv4Address:
        if self.gateway is not None:
            return self.gateway
        assert self.subnet is not None
        return self.subnet.network_address + 1

    def with_subnet(self, cidr: str) -> "NetworkConfig":
        """A copy for pod CIDR `cidr` (validated; CniError 7 if bad)."""
        subnet = parse_subnet(cidr, "podCIDR")
        return replace(self, subnet=subnet, gateway=None)


def parse_subnet(value: Any, what: str) -> ipaddress.IPv4Network:
    """An IPv4 network with room for a gateway and at least one pod."""
    if not isinstance(value, str):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", f"{what} must be a string, got {value!r}")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what} {value!r}", str(e)) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise CniError(UNSUPPORTED_FIELD, f"unsupported {what} {value!r}", "only IPv4 pod networks are supported")
    if net.prefixlen > 30:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what} {value!r}",
                       f"network {value} too small to allocate from")
    return net


def _str(conf: dict, key: str, default: str = "") -> str:
    value = conf.get(key, default)
    if not isinstance(value, str):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {key}", f"{key} must be a string, got {value!r}")
    return value


def _str_list(conf: dict, key: str, where: str) -> tuple[str, ...]:
    value = conf.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {where}.{key}", "must be a list of strings")
    return tuple(value)


def check_version(version: str) -> str:
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_CNI_VERSION, f"incompatible CNI version {version!r}",
                       f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
    return version


def decode_json(text: str | bytes) -> dict:
    """A JSON object from `text`; CniError 6 when it is not one."""
    try:
        conf = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODING_FAILURE, "failed to decode network configuration", str(e)) from None
    if not isinstance(conf, dict):
        raise CniError(DECODING_FAILURE, "failed to decode network configuration",
                       "the configuration must be a JSON object")
    return conf


def apply_cni_json(base: NetworkConfig, conf: dict) -> NetworkConfig:
    """`base` with the known keys of a CNI network configuration applied.

    Known keys: cniVersion (required), name (required), bridge, mtu, ipMasq,
    clusterCIDR, dns, and ipam.subnet / ipam.gateway / ipam.dataDir. Other
    keys (type, capabilities, runtimeConfig, prevResult, args) are accepted
    and ignored here, as the specification asks of plugins.
    """
    version = check_version(_str(conf, "cniVersion"))
    name = _str(conf, "name")
    if not name or not _NETWORK_NAME.match(name):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid network name {name!r}",
                       "name must start with a letter or digit, then letters, digits, '_', '.', '-'")
    changes: dict[str, Any] = {"cni_version": version, "name": name}
    if "bridge" in conf:
        bridge = _str(conf, "bridge")
        validate_ifname(bridge, "bridge", INVALID_NETWORK_CONFIG)
        changes["bridge"] = bridge
    if "mtu" in conf:
        mtu = conf["mtu"]
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 65535:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid mtu {mtu!r}", "mtu must be an integer 576-65535")
        changes["mtu"] = mtu
    if "ipMasq" in conf:
        if not isinstance(conf["ipMasq"], bool):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid ipMasq", "ipMasq must be true or false")
        changes["ip_masq"] = conf["ipMasq"]
    if "clusterCIDR" in conf:
        changes["cluster_cidr"] = parse_subnet(conf["clusterCIDR"], "clusterCIDR")
    if "dns" in conf:
        dns = conf["dns"]
        if not isinstance(dns, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid dns", "dns must be an object")
        changes["dns"] = DNS(nameservers=_str_list(dns, "nameservers", "dns"), domain=_str(dns, "domain"),
                             search=_str_list(dns, "search", "dns"), options=_str_list(dns, "options", "dns"))
    if "ipam" in conf:
        ipam = conf["ipam"]
        if not isinstance(ipam, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam", "ipam must be an object")
        ipam_type = _str(ipam, "type", "kubeling")
        if ipam_type not in ("kubeling", "host-local"):
            raise CniError(UNSUPPORTED_FIELD, f"unsupported ipam.type {ipam_type!r}",
                           "kubeling allocates addresses itself (ipam.type kubeling)")
        if "subnet" in ipam:
            changes["subnet"] = parse_subnet(ipam["subnet"], "ipam.subnet")
            changes["gateway"] = None
        if "gateway" in ipam:
            subnet = changes.get("subnet", base.subnet)
            try:
                gw = ipaddress.IPv4Address(_str(ipam, "gateway"))
            except ValueError as e:
                raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.gateway", str(e)) from None
            if subnet is None or gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                raise CniError(INVALID_NETWORK_CONFIG, f"invalid ipam.gateway {gw}",
                               f"the gateway must be a host address of the subnet {subnet}")
            changes["gateway"] = gw
        if "dataDir" in ipam:
            data_dir = _str(ipam, "dataDir")
            if not data_dir.startswith("/"):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.dataDir", "dataDir must be an absolute path")
            changes["state_dir"] = data_dir
    return replace(base, **changes)


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, "CNI_CONTAINERID is required")
    if not _CONTAINER_ID.match(container_id) or len(container_id) > 256:
        raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_CONTAINERID {container_id!r}",
                       "it must start with a letter or digit, then letters, digits, '_', '.', '-'")


def validate_ifname(ifname: str, what: str = "CNI_IFNAME", code: int = INVALID_ENVIRONMENT_VARIABLES) -> None:
    """Linux interface name rules: 1-15 bytes, not "." or "..", no "/", ":" or whitespace."""
    if not ifname:
        raise CniError(code, f"{what} is required")
    if (len(ifname.encode()) > 15 or ifname in (".", "..")
            or any(c in "/:" or c.isspace() for c in ifname)):
        raise CniError(code, f"invalid {what} {ifname!r}",
                       "interface names are 1-15 characters, not '.' or '..', without '/', ':' or whitespace")


@dataclass(frozen=True)
class PortMapping:
    """One hostPort mapping (CNI runtimeConfig.portMappings)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_json(self) -> dict:
        out = {"hostPort": self.host_port, "containerPort": self.container_port, "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


def port_mapping(host_port: Any, container_port: Any, protocol: Any = "", host_ip: Any = "") -> PortMapping:
    """A validated PortMapping; CniError 7 (or 2 for an unsupported protocol)."""
    for what, port in (("hostPort", host_port), ("containerPort", container_port)):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid portMappings {what} {port!r}",
                           "ports must be integers 1-65535")
    protocol = (protocol or "tcp")
    if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
        raise CniError(UNSUPPORTED_FIELD, f"unsupported portMappings protocol {protocol!r}",
                       "supported protocols: tcp, udp, sctp")
    host_ip = host_ip or ""
    if host_ip:
        try:
            addr = ipaddress.ip_address(host_ip)
        except ValueError as e:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid portMappings hostIP {host_ip!r}", str(e)) from None
        if not isinstance(addr, ipaddress.IPv4Address):
            raise CniError(UNSUPPORTED_FIELD, f"unsupported portMappings hostIP {host_ip!r}",
                           "only IPv4 host addresses are supported")
        if addr.is_unspecified:
            host_ip = ""
    return PortMapping(host_port, container_port, protocol.lower(), host_ip)


def port_mappings_from_json(value: Any) -> tuple[PortMapping, ...]:
    if not isinstance(value, list):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid runtimeConfig.portMappings", "must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid runtimeConfig.portMappings",
                           "each mapping must be an object")
        out.append(port_mapping(item.get("hostPort"), item.get("containerPort"),
                                item.get("protocol", ""), item.get("hostIP", "")))
    return tuple(out)


def check_port_conflicts(mappings: tuple[PortMapping, ...]) -> None:
    seen = set()
    for m in mappings:
        key = (m.host_port, m.protocol, m.host_ip)
        if key in seen:
            raise CniError(INVALID_NETWORK_CONFIG, f"duplicate hostPort {m.host_port}/{m.protocol}",
                           "each (hostPort, protocol, hostIP) may be mapped once")
        seen.add(key)


def parse_cni_args(value: str) -> dict[str, str]:
    """CNI_ARGS "K1=V1;K2=V2" as a dict; CniError 4 when malformed."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_ARGS pair {part!r}",
                           "CNI_ARGS is KEY=VALUE pairs separated by ';'")
        out[key] = val
    return out
