"""Network benchmarks: pod ADD and DEL latency, kubeling against the
reference CNI plugins, side by side in one run.

- ours: the network service (`python -m node_agent.network`) on a unix
  socket, driven over gRPC as the node agent drives it;
- reference: Debian's containernetworking-plugins, `bridge` with
  `host-local` IPAM, exec'd with the CNI environment and the configuration
  on stdin exactly as a runtime does, directly inside the node namespace;
- ours as a plugin binary (`python -m node_agent.network.cni_plugin`),
  called the same way, over fewer pods (Python's start-up dominates it).

Same subnet (10.244.1.0/24), same MTU, no masquerade on the per-pod path
(the service installs its masquerade rule once per node, not per pod; the
reference is run with ipMasq false so neither pays a firewall call per pod).
Each side gets its own node namespace; the pods are the same namespaces,
clean between rounds. Everything is made under unique names and removed.

Run alone: `python -m tests.bench.network_bench` (root). `run(tmp, report)`
is the entry point for `make bench`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import grpc

from kubeling.cni.v1 import cni_pb2, cni_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = "/usr/lib/cni"
PODS = 100
PLUGIN_PODS = 20
SUBNET = "10.244.1.0/24"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _plugin_round(ns: str, argv: list[str], conf: dict, pods: list[str], cni_path: str,
                  tag: str) -> tuple[list[float], list[float]]:
    """Times ADD then DEL of `pods` by a runtime living in namespace `ns`.

    The timing loop runs in a child process started inside `ns` (as a
    runtime runs plugins from its own namespace), so no namespace switch is
    measured, and the child holds no gRPC state across fork.
    """
    job = json.dumps({"argv": argv, "conf": conf, "pods": pods, "cni_path": cni_path, "tag": tag})
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.bench.network_bench",
                           "--plugin-round"], input=job.encode(), capture_output=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"plugin round failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    out = json.loads(proc.stdout)
    return out["add"], out["del"]


def _plugin_round_here(job: dict) -> dict:
    body = json.dumps(job["conf"]).encode()
    env_extra = {"PYTHONPATH": str(ROOT)}
    adds, dels = [], []
    for command, times in (("ADD", adds), ("DEL", dels)):
        for i, pod in enumerate(job["pods"]):
            env = dict(_cni_env(command, f"{job['tag']}{i}", pod, job["cni_path"]), **env_extra)
            t = time.perf_counter()
            proc = subprocess.run(job["argv"], input=body, env=env, capture_output=True, timeout=60)
            times.append((time.perf_counter() - t) * 1000)
            if proc.returncode != 0:
                raise RuntimeError(f"{job['argv'][-1]} {command} failed: {proc.stdout.decode()} "
                                   f"{proc.stderr.decode()}")
    return {"add": adds, "del": dels}


def _cni_env(command: str, cid: str, pod_ns: str, cni_path: str) -> dict:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}", "CNI_PATH": cni_path}


def _service_round(stub, pods: list[str], tag: str) -> tuple[list[float], list[float]]:
    adds, dels = [], []
    for i, pod in enumerate(pods):
        req = cni_pb2.AddRequest(container_id=f"{tag}{i}", netns=f"/run/netns/{pod}", ifname="eth0",
                                 args=cni_pb2.PodArgs(name=f"{tag}{i}", namespace="bench"))
        t = time.perf_counter()
        resp = stub.Add(req, timeout=30)
        adds.append((time.perf_counter() - t) * 1000)
        if resp.HasField("error"):
            raise RuntimeError(f"Add failed: {resp.error}")
    for i, pod in enumerate(pods):
        req = cni_pb2.DelRequest(container_id=f"{tag}{i}", netns=f"/run/netns/{pod}", ifname="eth0")
        t = time.perf_counter()
        resp = stub.Del(req, timeout=30)
        dels.append((time.perf_counter() - t) * 1000)
        if resp.HasField("error"):
            raise RuntimeError(f"Del failed: {resp.error}")
    return adds, dels


def run(tmp: Path, report: Callable[[str, float, str], None]) -> None:
    if os.geteuid() != 0:
        print("network benchmarks skipped: need root", flush=True)
        return
    if not os.path.exists(os.path.join(REFERENCE_DIR, "bridge")):
        print(f"network benchmarks skipped: no reference plugins in {REFERENCE_DIR}", flush=True)
        return
    run_id = uuid.uuid4().hex[:6]
    made: list[str] = []

    def netns(role: str) -> str:
        name = f"ktb-{run_id}-{role}"
        _sh("ip", "netns", "add", name)
        made.append(name)
        return name

    proc = None
    try:
        ours_ns, ref_ns, plug_ns = netns("ours"), netns("ref"), netns("plug")
        pods = [netns(f"p{i}") for i in range(PODS)]
        sock = str(tmp / "network.sock")
        log = open(tmp / "network-service.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "node_agent.network", "--listen", f"unix://{sock}",
                                 "--node-name", "bench", "--state-dir", str(tmp / "ours"), "--netns", ours_ns,
                                 "--pod-cidr", SUBNET, "--no-masquerade"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while b"listening on" not in (tmp / "network-service.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("network service did not start")
            time.sleep(0.05)
        channel = grpc.insecure_channel(f"unix://{sock}")
        stub = cni_pb2_grpc.NetworkStub(channel)

        ref_conf = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "kubeling0",
                    "isGateway": True, "ipMasq": False, "mtu": 1500,
                    "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": str(tmp / "ref")}}
        plug_conf = {"cniVersion": "1.0.0", "name": "plugnet", "type": "kubeling", "bridge": "kubeling0",
                     "mtu": 1500, "ipam": {"type": "kubeling", "subnet": SUBNET, "dataDir": str(tmp / "plug")}}

        # Warm both (first bridge creation, page cache), then measure.
        _service_round(stub, pods[:2], "warm")
        _plugin_round(ref_ns, [os.path.join(REFERENCE_DIR, "bridge")], ref_conf, pods[:2], REFERENCE_DIR, "warm")
        ours_add, ours_del, ref_add, ref_del = [], [], [], []
        for half in (pods[: PODS // 2], pods[PODS // 2:]):  # interleaved, so drift hits both
            a, d = _service_round(stub, half, f"o{len(ours_add)}-")
            ours_add += a
            ours_del += d
            a, d = _plugin_round(ref_ns, [os.path.join(REFERENCE_DIR, "bridge")], ref_conf, half,
                                 REFERENCE_DIR, f"r{len(ref_add)}-")
            ref_add += a
            ref_del += d
        plugin_argv = [sys.executable, "-m", "node_agent.network.cni_plugin"]
        p_add, p_del = _plugin_round(plug_ns, plugin_argv, plug_conf, pods[:PLUGIN_PODS], "", "k")
        channel.close()

        for name, values in (("network_add_kubeling_service", ours_add), ("network_add_reference_bridge", ref_add),
                             ("network_del_kubeling_service", ours_del), ("network_del_reference_bridge", ref_del),
                             ("network_add_kubeling_plugin_binary", p_add),
                             ("network_del_kubeling_plugin_binary", p_del)):
            report(f"{name}_p50", statistics.median(values), "ms")
            report(f"{name}_p99", _pct(values, 99), "ms")
        report("network_pods_measured", float(len(ours_add)), "pods")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def main() -> int:
    if sys.argv[1:] == ["--plugin-round"]:
        print(json.dumps(_plugin_round_here(json.loads(sys.stdin.read()))))
        return 0
    figures: dict[str, dict] = {}

    def report(name: str, value: float, unit: str) -> None:
        figures[name] = {"value": round(value, 3), "unit": unit}
        print(f"{name}: {value:.3f} {unit}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="kubeling-netbench-"))
    try:
        run(tmp, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = Path(__file__).with_name("results.json")
    merged = json.loads(results.read_text()) if results.exists() else {}
    merged.update(figures)
    results.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
