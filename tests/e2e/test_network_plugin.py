"""kubeling's networking as a CNI plugin binary, called the way a runtime calls it.

The runtime runs plugins in its own (here: the node's) network namespace,
with CNI_* in the environment and the network configuration on stdin; the
plugin answers on stdout with a result or an error object and its exit
code. A runtime finds the plugin by its `type` in CNI_PATH: the test
installs a small `kubeling` executable there, as an installer would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.test_network import (  # noqa: F401 - fixtures
    ROOT,
    links,
    namespaces,
    path_of,
    ping,
    pytestmark,
)


@pytest.fixture
def cni_bin(tmp_path):
    """A CNI_PATH directory holding the `kubeling` plugin executable."""
    bindir = tmp_path / "cni-bin"
    bindir.mkdir()
    plugin = bindir / "kubeling"
    plugin.write_text(f"#!/bin/sh\ncd {ROOT}\nexec {sys.executable} -m node_agent.network.cni_plugin\n")
    plugin.chmod(0o755)
    return bindir


class Runtime:
    """Calls the plugin as a CNI runtime does (from inside the node namespace)."""

    def __init__(self, cni_bin, node_ns: str, conf: dict):
        self.cni_bin = cni_bin
        self.node_ns = node_ns
        self.conf = conf

    def call(self, command: str, cid: str = "", pod_ns: str | None = None, ifname: str = "eth0",
             conf: dict | None = None, stdin: bytes | None = None, netns: str | None = None) -> tuple[int, dict]:
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_PATH": str(self.cni_bin)}
        if cid:
            env["CNI_CONTAINERID"] = cid
            env["CNI_IFNAME"] = ifname
            env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{cid}"
        if netns is not None or pod_ns is not None:
            env["CNI_NETNS"] = netns if netns is not None else path_of(pod_ns)
        body = stdin if stdin is not None else json.dumps(conf or self.conf).encode()
        exe = self.cni_bin / (self.conf["type"])
        proc = subprocess.run(["ip", "netns", "exec", self.node_ns, str(exe)], input=body, env=env,
                              capture_output=True, timeout=30)
        out = proc.stdout.decode().strip()
        return proc.returncode, (json.loads(out) if out else {})


@pytest.fixture
def runtime(namespaces, cni_bin, tmp_path):
    node_ns = namespaces.add("node")
    conf = {"cniVersion": "1.0.0", "name": "kubeling-test", "type": "kubeling", "bridge": "kubeling0",
            "ipMasq": True,
            "ipam": {"type": "kubeling", "subnet": "10.88.0.0/24", "dataDir": str(tmp_path / "cni-state")}}
    return Runtime(cni_bin, node_ns, conf)


def ipam_records(runtime: Runtime) -> list[str]:
    d = os.path.join(runtime.conf["ipam"]["dataDir"], "ipam", runtime.conf["name"])
    return sorted(f for f in os.listdir(d) if f[0].isdigit()) if os.path.isdir(d) else []


def test_add_check_del_through_the_plugin_binary(namespaces, runtime):
    pa, pb = namespaces.add("pa"), namespaces.add("pb")
    code, result = runtime.call("ADD", "ca", pa)
    assert code == 0, result
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 2}]
    assert result["interfaces"][2] == {"name": "eth0", "mac": links(pa)["eth0"]["address"],
                                       "sandbox": path_of(pa)}
    code, rb = runtime.call("ADD", "cb", pb)
    assert code == 0, rb
    assert ping(pa, "10.88.0.3")

    # CHECK gets the ADD result as prevResult, as the runtime keeps it.
    code, out = runtime.call("CHECK", "ca", pa, conf=dict(runtime.conf, prevResult=result))
    assert (code, out) == (0, {})
    code, out = runtime.call("STATUS")
    assert (code, out) == (0, {})

    # DEL (with prevResult), then again: both succeed; nothing remains.
    assert runtime.call("DEL", "ca", pa, conf=dict(runtime.conf, prevResult=result)) == (0, {})
    assert runtime.call("DEL", "ca", pa) == (0, {})
    assert set(links(pa)) == {"lo"}
    assert ipam_records(runtime) == ["10.88.0.3"]
    # CHECK after DEL is an error; GC with no valid attachments removes the rest.
    code, out = runtime.call("CHECK", "ca", pa, conf=dict(runtime.conf, prevResult=result))
    assert code == 1 and out["code"] == 100
    assert runtime.call("GC", conf=dict(runtime.conf, **{"cni.dev/valid-attachments": []})) == (0, {})
    assert ipam_records(runtime) == [] and set(links(pb)) == {"lo"}
    veths = [n for n, l in links(runtime.node_ns).items() if l.get("linkinfo", {}).get("info_kind") == "veth"]
    assert veths == []


def test_version(runtime):
    code, out = runtime.call("VERSION", stdin=b'{"cniVersion": "1.0.0"}')
    assert code == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}


@pytest.mark.parametrize("case,code", [
    ("missing-netns", 3),
    ("no-netns", 4),
    ("malformed-config", 6),
    ("no-subnet", 7),
    ("bad-version", 1),
], ids=lambda v: str(v))
def test_bad_input_gets_the_right_code_and_leaves_nothing(namespaces, runtime, case, code):
    pod = namespaces.add("pod")
    kwargs = {"missing-netns": {"netns": "/run/netns/ktn-nope"},
              "no-netns": {"netns": ""},
              "malformed-config": {"pod_ns": pod, "stdin": b'{"cniVersion": "1.0.0", "name": '},
              "no-subnet": {"pod_ns": pod, "conf": {k: v for k, v in runtime.conf.items() if k != "ipam"}},
              "bad-version": {"pod_ns": pod, "conf": dict(runtime.conf, cniVersion="9.9.9")}}[case]
    rc, out = runtime.call("ADD", "c1", **kwargs)
    assert rc == 1 and out["code"] == code, out
    assert out["msg"] and out["cniVersion"]
    assert ipam_records(runtime) == [] and set(links(pod)) == {"lo"}
    assert not [n for n, l in links(runtime.node_ns).items() if l.get("linkinfo", {}).get("info_kind") == "veth"]


def test_duplicate_add_through_the_plugin(namespaces, runtime):
    pod = namespaces.add("pod")
    assert runtime.call("ADD", "c1", pod)[0] == 0
    rc, out = runtime.call("ADD", "c1", pod)
    assert rc == 1 and out["code"] == 4
    assert ipam_records(runtime) == ["10.88.0.2"]
    assert runtime.call("DEL", "c1", pod) == (0, {})
