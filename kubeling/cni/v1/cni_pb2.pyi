from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    INCOMPATIBLE_CNI_VERSION: _ClassVar[ErrorCode]
    UNSUPPORTED_FIELD: _ClassVar[ErrorCode]
    UNKNOWN_CONTAINER: _ClassVar[ErrorCode]
    INVALID_ENVIRONMENT_VARIABLES: _ClassVar[ErrorCode]
    IO_FAILURE: _ClassVar[ErrorCode]
    DECODING_FAILURE: _ClassVar[ErrorCode]
    INVALID_NETWORK_CONFIG: _ClassVar[ErrorCode]
    TRY_AGAIN_LATER: _ClassVar[ErrorCode]
    PLUGIN_NOT_AVAILABLE: _ClassVar[ErrorCode]
    PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: _ClassVar[ErrorCode]
    INTERFACE_FAILURE: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
INCOMPATIBLE_CNI_VERSION: ErrorCode
UNSUPPORTED_FIELD: ErrorCode
UNKNOWN_CONTAINER: ErrorCode
INVALID_ENVIRONMENT_VARIABLES: ErrorCode
IO_FAILURE: ErrorCode
DECODING_FAILURE: ErrorCode
INVALID_NETWORK_CONFIG: ErrorCode
TRY_AGAIN_LATER: ErrorCode
PLUGIN_NOT_AVAILABLE: ErrorCode
PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: ErrorCode
INTERFACE_FAILURE: ErrorCode

class Error(_message.Message):
    __slots__ = ("code", "msg", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    msg: str
    details: str
    def __init__(self, code: _Optional[int] = ..., msg: _Optional[str] = ..., details: _Optional[str] = ...) -> None: ...

class PodArgs(_message.Message):
    __slots__ = ("name", "namespace", "uid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    uid: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., uid: _Optional[str] = ...) -> None: ...

class PortMapping(_message.Message):
    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HOST_IP_FIELD_NUMBER: _ClassVar[int]
    host_port: int
    container_port: int
    protocol: str
    host_ip: str
    def __init__(self, host_port: _Optional[int] = ..., container_port: _Optional[int] = ..., protocol: _Optional[str] = ..., host_ip: _Optional[str] = ...) -> None: ...

class Interface(_message.Message):
    __slots__ = ("name", "mac", "mtu", "sandbox")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    mtu: int
    sandbox: str
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., sandbox: _Optional[str] = ...) -> None: ...

class IPConfig(_message.Message):
    __slots__ = ("address", "gateway", "interface")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    address: str
    gateway: str
    interface: int
    def __init__(self, address: _Optional[str] = ..., gateway: _Optional[str] = ..., interface: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
    DST_FIELD_NUMBER: _ClassVar[int]
    GW_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADVMSS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    dst: str
    gw: str
    mtu: int
    advmss: int
    priority: int
    table: int
    scope: int
    def __init__(self, dst: _Optional[str] = ..., gw: _Optional[str] = ..., mtu: _Optional[int] = ..., advmss: _Optional[int] = ..., priority: _Optional[int] = ..., table: _Optional[int] = ..., scope: _Optional[int] = ...) -> None: ...

class DNS(_message.Message):
    __slots__ = ("nameservers", "domain", "search", "options")
    NAMESERVERS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    nameservers: _containers.RepeatedScalarFieldContainer[str]
    domain: str
    search: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nameservers: _Optional[_Iterable[str]] = ..., domain: _Optional[str] = ..., search: _Optional[_Iterable[str]] = ..., options: _Optional[_Iterable[str]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("cni_version", "interfaces", "ips", "routes", "dns")
    CNI_VERSION_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    cni_version: str
    interfaces: _containers.RepeatedCompositeFieldContainer[Interface]
    ips: _containers.RepeatedCompositeFieldContainer[IPConfig]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    dns: DNS
    def __init__(self, cni_version: _Optional[str] = ..., interfaces: _Optional[_Iterable[_Union[Interface, _Mapping]]] = ..., ips: _Optional[_Iterable[_Union[IPConfig, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., dns: _Optional[_Union[DNS, _Mapping]] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("container_id", "netns", "ifname", "args", "port_mappings", "config")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    PORT_MAPPINGS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    netns: str
    ifname: str
    args: PodArgs
    port_mappings: _containers.RepeatedCompositeFieldContainer[PortMapping]
    config: str
    def __init__(self, container_id: _Optional[str] = ..., netns: _Optional[str] = ..., ifname: _Optional[str] = ..., args: _Optional[_Union[PodArgs, _Mapping]] = ..., port_mappings: _Optional[_Iterable[_Union[PortMapping, _Mapping]]] = ..., config: _Optional[str] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: Result
    error: Error
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class DelRequest(_message.Message):
    __slots__ = ("container_id", "netns", "ifname", "args", "prev_result", "config")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    PREV_RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    netns: str
    ifname: str
    args: PodArgs
    prev_result: Result
    config: str
    def __init__(self, container_id: _Optional[str] = ..., netns: _Optional[str] = ..., ifname: _Optional[str] = ..., args: _Optional[_Union[PodArgs, _Mapping]] = ..., prev_result: _Optional[_Union[Result, _Mapping]] = ..., config: _Optional[str] = ...) -> None: ...

class DelResponse(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: Error
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("container_id", "netns", "ifname", "args", "prev_result", "config")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    PREV_RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    netns: str
    ifname: str
    args: PodArgs
    prev_result: Result
    config: str
    def __init__(self, container_id: _Optional[str] = ..., netns: _Optional[str] = ..., ifname: _Optional[str] = ..., args: _Optional[_Union[PodArgs, _Mapping]] = ..., prev_result: _Optional[_Union[Result, _Mapping]] = ..., config: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: Error
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: str
    def __init__(self, config: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("error", "pod_cidr", "gateway", "bridge", "mode", "allocated", "capacity")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POD_CIDR_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    error: Error
    pod_cidr: str
    gateway: str
    bridge: str
    mode: str
    allocated: int
    capacity: int
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., pod_cidr: _Optional[str] = ..., gateway: _Optional[str] = ..., bridge: _Optional[str] = ..., mode: _Optional[str] = ..., allocated: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("cni_version",)
    CNI_VERSION_FIELD_NUMBER: _ClassVar[int]
    cni_version: str
    def __init__(self, cni_version: _Optional[str] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("cni_version", "supported_versions")
    CNI_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    cni_version: str
    supported_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cni_version: _Optional[str] = ..., supported_versions: _Optional[_Iterable[str]] = ...) -> None: ...
