"""kubeling's networking as a standard CNI plugin (the execution protocol).

A runtime runs the plugin binary with the parameters in the environment
(CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH)
and the network configuration JSON on stdin; the plugin prints the result
(ADD, VERSION) or an error object on stdout and exits 0 on success, 1 on
failure. `run(env, stdin)` does all of it without touching the process, so
it is testable; `cni_plugin.py` is the executable face.

The plugin works in the namespace it is run in (the runtime's, i.e. the
node's) with the same core as the gRPC service: `PodNetwork`. Its network
configuration::

    {"cniVersion": "1.0.0", "name": "kubeling", "type": "kubeling",
     "bridge": "kubeling0", "mtu": 1500, "ipMasq": false,
     "clusterCIDR": "10.244.0.0/16",
     "ipam": {"type": "kubeling", "subnet": "10.244.1.0/24",
              "gateway": "10.244.1.1", "dataDir": "/var/lib/kubeling/network"},
     "dns": {"nameservers": ["10.96.0.10"]},
     "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
"""

from __future__ import annotations

import asyncio
import json
from typing import Mapping

from node_agent.network.config import (
    CNI_VERSION,
    SUPPORTED_VERSIONS,
    NetworkConfig,
    apply_cni_json,
    decode_json,
    parse_cni_args,
    port_mappings_from_json,
)
from node_agent.network.errors import (
    INVALID_ENVIRONMENT_VARIABLES,
    INVALID_NETWORK_CONFIG,
    INTERFACE_FAILURE,
    CniError,
)

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "VERSION", "GC")
# The plugin's defaults differ from the service's in one way: like the
# reference bridge plugin, it masquerades only when asked (ipMasq: true).
PLUGIN_BASE = NetworkConfig(ip_masq=False)


def run(env: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """(exit code, stdout) for one invocation."""
    version = CNI_VERSION
    try:
        command = env.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniError(INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_COMMAND {command!r}",
                           f"CNI_COMMAND must be one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            requested = CNI_VERSION
            if stdin.strip():
                requested = decode_json(stdin).get("cniVersion") or CNI_VERSION
            return 0, json.dumps({"cniVersion": requested, "supportedVersions": list(SUPPORTED_VERSIONS)})
        conf = decode_json(stdin)
        if isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"]
        cfg = apply_cni_json(PLUGIN_BASE, conf)
        version = cfg.cni_version
        result = asyncio.run(_dispatch(command, env, conf, cfg))
        return 0, json.dumps(result) if result is not None else ""
    except CniError as e:
        return 1, json.dumps(e.to_json(version))
    except Exception as e:  # noqa: BLE001 - a runtime needs an error object, not a traceback
        return 1, json.dumps(CniError(INTERFACE_FAILURE, "internal error", repr(e)).to_json(version))


def _attachment(env: Mapping[str, str], conf: dict, cfg: NetworkConfig, command: str):
    from node_agent.network.network import Attachment, PodInfo
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    mappings = ()
    runtime = conf.get("runtimeConfig") or {}
    if command == "ADD" and isinstance(runtime, dict) and "portMappings" in runtime:
        mappings = port_mappings_from_json(runtime["portMappings"])
    return Attachment(container_id=env.get("CNI_CONTAINERID", ""), netns=env.get("CNI_NETNS", ""),
                      ifname=env.get("CNI_IFNAME", ""),
                      pod=PodInfo(args.get("K8S_POD_NAME", ""), args.get("K8S_POD_NAMESPACE", ""),
                                  args.get("K8S_POD_UID", "")),
                      port_mappings=mappings, config=cfg)


async def _dispatch(command: str, env: Mapping[str, str], conf: dict, cfg: NetworkConfig):
    from node_agent.network.network import PodNetwork
    if command == "ADD" and cfg.subnet is None:
        raise CniError(INVALID_NETWORK_CONFIG, "ipam.subnet is required",
                       "the plugin allocates pod addresses from ipam.subnet")
    network = PodNetwork(cfg, None, manage_masquerade=cfg.ip_masq)
    await network.start(setup_node=False)
    try:
        if command == "ADD":
            await network.prepare_node()
            return await network.add(_attachment(env, conf, cfg, command))
        if command == "DEL":
            await network.delete(_attachment(env, conf, cfg, command))
            return None
        if command == "CHECK":
            prev = conf.get("prevResult")
            if prev is not None and not isinstance(prev, dict):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid prevResult", "prevResult must be an object")
            await network.check(_attachment(env, conf, cfg, command), prev)
            return None
        if command == "STATUS":
            info = await network.status(cfg)
            if info["error"] is not None:
                raise info["error"]
            return None
        if command == "GC":
            valid = conf.get("cni.dev/valid-attachments") or []
            if not isinstance(valid, list):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid cni.dev/valid-attachments", "must be a list")
            keep = {(a.get("containerID"), a.get("ifname")) for a in valid if isinstance(a, dict)}
            await network.gc(keep, cfg)
            return None
    finally:
        await network.close()
    return None
