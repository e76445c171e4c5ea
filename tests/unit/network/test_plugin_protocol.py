"""The plugin binary's protocol where no kernel state is touched: bad
environment, bad configuration, VERSION."""

from __future__ import annotations

import json

import pytest

from node_agent.network import errors
from node_agent.network.plugin import run

CONF = {"cniVersion": "1.0.0", "name": "kubeling", "type": "kubeling",
        "ipam": {"type": "kubeling", "subnet": "10.77.0.0/24", "dataDir": "/nonexistent-kubeling-test"}}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}


def invoke(env, conf) -> tuple[int, dict]:
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    code, out = run(env, stdin)
    return code, json.loads(out) if out else {}


def test_version_lists_supported_versions():
    code, out = invoke({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.1.0"})
    assert code == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}


@pytest.mark.parametrize("env,conf,code", [
    ({"CNI_COMMAND": ""}, CONF, errors.INVALID_ENVIRONMENT_VARIABLES),
    ({"CNI_COMMAND": "FROB"}, CONF, errors.INVALID_ENVIRONMENT_VARIABLES),
    (ENV, b"{not json", errors.DECODING_FAILURE),
    (ENV, dict(CONF, cniVersion="0.2.0"), errors.INCOMPATIBLE_CNI_VERSION),
    (ENV, dict(CONF, mtu=-1), errors.INVALID_NETWORK_CONFIG),
    (ENV, {k: v for k, v in CONF.items() if k != "ipam"}, errors.INVALID_NETWORK_CONFIG),
    (dict(ENV, CNI_CONTAINERID=""), CONF, errors.INVALID_ENVIRONMENT_VARIABLES),
    (dict(ENV, CNI_IFNAME="has space"), CONF, errors.INVALID_ENVIRONMENT_VARIABLES),
    (dict(ENV, CNI_ARGS="novalue"), CONF, errors.INVALID_ENVIRONMENT_VARIABLES),
    (ENV, dict(CONF, runtimeConfig={"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "gre"}]}),
     errors.UNSUPPORTED_FIELD),
], ids=["no-command", "unknown-command", "malformed-json", "old-version", "bad-mtu", "no-subnet",
        "no-container-id", "bad-ifname", "bad-cni-args", "bad-protocol"])
def test_bad_input_gets_its_code(env, conf, code):
    rc, out = invoke(env, conf)
    assert rc == 1
    assert out["code"] == code, out
    assert out["msg"] and out["cniVersion"]
