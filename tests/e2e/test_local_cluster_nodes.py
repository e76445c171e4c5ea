"""`kubeling up --nodes 2` as a user runs it: two real nodes in network
namespaces of their own on a bridge, a Deployment's pods Running on both,
pods reaching each other across nodes, `kubeling logs` and `kubeling exec`
through the API server; and `kubeling down` leaving nothing behind: no
namespace, link, mount, cgroup, container or process.

`down` always runs (in a finally), and the leftover checks run after it even
when the test failed on the way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBELING = ROOT / ".venv" / "bin" / "kubeling"
if not KUBELING.exists():
    KUBELING = Path(sys.executable).parent / "kubeling"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "conmon", "nsenter", "nft")),
                       reason="needs runc, conmon, nsenter and nft"),
]

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: http
        image: localhost/kubeling/http:1
        ports:
        - containerPort: 8080
"""

TALKER = """\
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  nodeName: node-2
  containers:
  - name: main
    image: localhost/kubeling/shell:1
    command: ["sh", "-c", "echo hello from $(hostname); echo second line; exec sleep 3600"]
"""


CRASHER = """\
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  nodeName: node-1
  volumes:
  - name: data
    emptyDir: {}
  containers:
  - name: main
    image: localhost/kubeling/shell:1
    volumeMounts:
    - {name: data, mountPath: /data}
    command: ["sh", "-c", "n=$(( $(cat /data/n 2>/dev/null || echo 0) + 1 )); echo $n > /data/n; echo run-$n; [ $n -ge 2 ] && exec sleep 3600; exit 1"]
"""


class Local:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "config"
        self.env = dict(os.environ, KUBELING_CONFIG=str(self.config), KUBELING_STATE_DIR=str(self.state))

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(KUBELING), *args], capture_output=True, text=True, env=self.env,
                              cwd=self.tmp, timeout=timeout, input=input)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, f"kubeling {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def logs_tail(self) -> str:
        out = []
        for log in sorted((self.state / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(out)


def wait_for(predicate, timeout: float, what: str, details=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}\n{details()}")
        time.sleep(0.5)


def items(doc: dict) -> list[dict]:
    return doc.get("items", [doc] if doc.get("kind") else [])


def leftovers(state: Path) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("kubeling-node-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == "kubeling-lan" or name.startswith("kl-node-"):
            found.append(f"link {name}")
    with open("/proc/mounts") as f:
        found += [f"mount {line.split()[1]}" for line in f if str(state) in line.split()[1]]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if str(state) in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            found.append(f"process {entry}: {cmdline[:120]}")
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "kubeling" / "node-1").exists() or (hierarchy / "kubeling" / "node-2").exists():
            found.append(f"cgroup {hierarchy}/kubeling/node-*")
    return found


@pytest.fixture
def local(tmp_path):
    local = Local(tmp_path)
    try:
        yield local
    finally:
        down = local("down", ok=False, timeout=180)
        left = leftovers(local.state)
        assert down.returncode == 0, f"kubeling down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, "kubeling down left behind:\n" + "\n".join(left) + "\n" + down.stdout


def test_two_nodes_run_pods_serve_logs_and_exec_and_down_leaves_nothing(local):
    up = local("up", "--nodes", "2", timeout=600)
    assert "node-1" in up.stdout and "node-2" in up.stdout, up.stdout

    nodes = {n["metadata"]["name"]: n for n in items(local.json("nodes"))}
    assert set(nodes) == {"node-1", "node-2"}, local.logs_tail()
    for name, node in nodes.items():
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == f"10.250.0.{10 + int(name[-1])}"
        assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0

    # A Deployment's pods run on both nodes.
    local("apply", "-f", "-", input=DEPLOYMENT)

    def running_pods() -> list[dict]:
        pods = items(local.json("pods", "-l", "app=web"))
        return [p for p in pods if p.get("status", {}).get("phase") == "Running"
                and all(c.get("ready") for c in p["status"].get("containerStatuses", []))]

    pods = wait_for(lambda: len(running_pods()) == 4 and running_pods(), 180, "4 Running web pods",
                    lambda: local("get", "pods", "-o", "wide", ok=False).stdout + local.logs_tail())
    by_node = {}
    for p in pods:
        by_node.setdefault(p["spec"]["nodeName"], []).append(p)
    assert set(by_node) == {"node-1", "node-2"}, {n: len(ps) for n, ps in by_node.items()}

    # exec, and a pod on one node reaches a pod on the other by its IP.
    a, b = by_node["node-1"][0], by_node["node-2"][0]
    exec_ = local("exec", a["metadata"]["name"], "--", "hostname")
    assert exec_.stdout == a["metadata"]["name"] + "\n"
    # (busybox wget -T crashes, on any machine: bound it with timeout instead)
    across = local("exec", a["metadata"]["name"], "--", "timeout", "10", "wget", "-qO-",
                   f"http://{b['status']['podIP']}:8080/")
    assert across.stdout.strip() == b["metadata"]["name"]
    failed = local("exec", a["metadata"]["name"], "--", "sh", "-c", "exit 7", ok=False)
    assert failed.returncode == 7
    # This machine reaches pods over the LAN bridge too (a route per node's pod CIDR).
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP proxy
    for pod in (a, b):
        with direct.open(f"http://{pod['status']['podIP']}:8080/", timeout=5) as answer:
            assert answer.read().decode().strip() == pod["metadata"]["name"]

    # logs of a pod placed on node-2.
    local("apply", "-f", "-", input=TALKER)
    wait_for(lambda: local("logs", "talker", ok=False).stdout == "hello from talker\nsecond line\n", 120,
             "the talker's log", lambda: local("logs", "talker", ok=False).stderr + local.logs_tail())
    assert local("logs", "talker", "--tail", "1").stdout == "second line\n"

    # After a crash and a restart by the node agent, --previous shows the first run.
    local("apply", "-f", "-", input=CRASHER)
    wait_for(lambda: local("logs", "crasher", ok=False).stdout == "run-2\n", 120, "the restarted run",
             lambda: local("get", "pod", "crasher", "-o", "yaml", ok=False).stdout)
    assert local("logs", "crasher", "--previous").stdout == "run-1\n"
