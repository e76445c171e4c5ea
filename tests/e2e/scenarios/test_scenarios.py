"""The promises of the seed documents, on one real cluster, as its users see them.

One fresh `kubeling up --nodes 3` for the module (temporary state dir and
client config), the scenarios in order, each driving the cluster through the
CLI and the public gRPC API (and, where the scenario is about the machine
itself, killing and restarting processes on it as an operator or a power
cut would), each printing one line with what it measured. Whatever happens,
`kubeling down` runs at the end and nothing of the cluster may remain
(scenario 9). Figures are reported, never asserted: the timeouts are
generous because this runs on small, busy machines.

`make e2e` runs this module alone, with its lines on the terminal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.scenarios import manifests as m
from tests.e2e.scenarios.harness import (
    Cluster, container_id, leftovers, nft_tables, node_ready, pod_ready, report, restart_count, terminating,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1800),  # per scenario; each wait has its own, shorter, limit
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, runc, cgroups)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "conmon", "nsenter", "nft", "ip")),
                       reason="needs runc, conmon, nsenter, nft and ip"),
]

NODES = 3
NS = "shop"
WEB = "app=web"
CLIENT = "client"
SPIKE = 50
SCALE_UP = 20  # scenario 8
OTHER_CLUSTER_WAIT = 1200.0
SERVICE_URL = f"http://web.{NS}.svc.cluster.local/"
FAILED: list[int] = []  # the scenarios that failed in this run


# ------------------------------------------------------------------ the cluster

@pytest.fixture(scope="module")
def cluster(request):
    # Not under pytest's basetemp: another pytest session on this machine may
    # prune that while the cluster still runs from it.
    c = Cluster(Path(tempfile.mkdtemp(prefix="kubeling-e2e-")), nodes=NODES)
    say = lambda line: report(request.config, line)  # noqa: E731
    try:
        # The nodes' namespaces and the LAN bridge have fixed names: one local
        # cluster with nodes at a time per machine. Wait for another to end.
        if other := c.other_cluster():
            say(f"waiting for another local cluster with nodes to stop ({other}) ...")
            wait_for(lambda: not c.other_cluster(), OTHER_CLUSTER_WAIT, "the other local cluster to stop",
                     interval=2)
        c.tables_before = nft_tables()
        t0 = time.monotonic()
        c.up()
        say(f"cluster up: {NODES} nodes, control plane and DNS in {time.monotonic() - t0:.1f}s "
            f"(state in {c.state})")
        yield c
    finally:
        _tear_down(c, say)


def _tear_down(c: Cluster, say) -> None:
    """Scenario 9: `kubeling down` leaves nothing of the cluster behind."""
    with contextlib.suppress(Exception):
        c.read_record()
    if not c.record:  # `up` failed, and cleaned up after itself; what is there is not ours
        c.purge()
        return
    t0 = time.monotonic()
    down = c.down()
    took = time.monotonic() - t0
    problems = []
    if down.returncode != 0:
        problems.append(f"kubeling down exited {down.returncode}: {down.stderr.strip()}")
    problems += leftovers(c.state, c.record, NODES, c.tables_before)
    if FAILED or problems:  # the components' logs outlive the run, for whoever looks into it
        kept = Path(tempfile.mkdtemp(prefix="kubeling-e2e-logs-"))
        shutil.copytree(c.state / "logs", kept, dirs_exist_ok=True)
        say(f"failed scenarios {FAILED or '-'}: the cluster's logs are kept in {kept}")
    c.purge()
    if problems:
        say(f"scenario 9 clean teardown: FAILED: {'; '.join(problems)[:300]}")
        pytest.fail("kubeling down left behind:\n" + "\n".join(problems) + "\n" + down.stdout,
                    pytrace=False)
    say(f"scenario 9 clean teardown: kubeling down in {took:.1f}s; no network namespace, link, route, "
        f"nftables table, mount, cgroup, runc container or process of the cluster left")


@pytest.fixture
def say(request):
    return lambda line: report(request.config, line)


@contextlib.contextmanager
def scenario(request, number: int, title: str):
    """Runs a scenario; on failure prints its line with the reason, then fails the test."""
    t0 = time.monotonic()
    try:
        yield
    except BaseException as e:
        FAILED.append(number)
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        report(request.config, f"scenario {number} {title}: FAILED after {time.monotonic() - t0:.1f}s: "
                               f"{first[:240]}")
        raise


# ------------------------------------------------------------------ shared steps

def web_pods(c: Cluster, namespace: str = NS) -> list:
    return [p for p in c.api.pods(namespace, WEB)]


def details(c: Cluster, namespace: str = NS, logs: tuple = ()) -> str:
    out = c.kubeling("get", "pods", "-n", namespace, "-o", "wide", ok=False).stdout
    out += c.kubeling("describe", "deployment", "web", "-n", namespace, ok=False).stdout[-3000:]
    return out + (c.logs_tail(logs) if logs else "")


def wait_web(c: Cluster, replicas: int, namespace: str = NS, timeout: float = 300,
             settled: bool = True, image: str | None = None) -> list:
    """`replicas` web pods Running and Ready (of `image`), in the Service's
    endpoints; with `settled`, no other web pod left (none terminating)."""
    def check():
        pods = web_pods(c, namespace)
        ready = [p for p in pods if pod_ready(p)
                 and (image is None or p.spec.containers[0].image == image)]
        if len(ready) != replicas or (settled and len(pods) != replicas):
            return None
        if c.api.endpoint_ips(namespace, "web") != {p.status.pod_ip for p in ready}:
            return None
        return ready
    return wait_for(check, timeout, f"{replicas} ready web pods in {namespace}",
                    lambda: details(c, namespace))


def ensure_app(c: Cluster, replicas: int = 3) -> list:
    """The app of scenario 1 at `replicas`, settled, and the client pod (when a
    scenario runs on its own)."""
    if c.api.get("deployments", "web", NS) is None:
        c.apply(m.app(NS))
    if c.api.get("pods", CLIENT, NS) is None:
        c.apply(m.shell_pod(CLIENT, NS, m.CLIENT_SCRIPT))
    d = c.api.get("deployments", "web", NS)
    if d.spec.replicas != replicas:
        c.kubeling("scale", "deployment", "web", f"--replicas={replicas}", "-n", NS)
    wait_for(lambda: (p := c.api.get("pods", CLIENT, NS)) is not None and pod_ready(p), 180,
             "the client pod", lambda: details(c))
    return wait_web(c, replicas)


def ask_service(c: Cluster, count: int, url: str = SERVICE_URL, client: str = CLIENT,
                namespace: str = NS) -> list[str]:
    """`count` requests through the Service from the client pod; the answers, one per request."""
    script = (f"i=0; while [ $i -lt {count} ]; do i=$((i+1)); "
              f"timeout 5 wget -qO- {url} || echo FAILED; done")
    out = c.exec(client, namespace, "sh", "-c", script, timeout=60 + count).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


class Traffic:
    """A shell pod on node-1 sending requests to the Service without pause."""

    def __init__(self, c: Cluster, name: str):
        self.c, self.name = c, name

    def start(self) -> "Traffic":
        self.c.apply(m.shell_pod(self.name, NS, m.TRAFFIC_SCRIPT))
        wait_for(lambda: self.counts()[0] >= 20, 180, f"traffic from {self.name}",
                 lambda: details(self.c) + self.failures())
        return self

    def counts(self) -> tuple[int, int, int, int]:
        """(succeeded, failed, answered by version 1, by version 2) so far."""
        out = self.c.exec(self.name, NS, "cat", "/data/counts", ok=False, timeout=30)
        fields = out.stdout.split()
        return tuple(int(x) for x in fields) if out.returncode == 0 and len(fields) == 4 else (0, 0, 0, 0)

    def stop(self) -> tuple[int, int, int, int]:
        out = self.c.exec(self.name, NS, "sh", "-c",
                          "touch /data/stop; i=0; while [ ! -e /data/done ] && [ $i -lt 150 ]; "
                          "do sleep 0.1; i=$((i+1)); done; cat /data/counts", timeout=60)
        return tuple(int(x) for x in out.stdout.split())

    def failures(self) -> str:
        return self.c.kubeling("logs", self.name, "-n", NS, ok=False).stdout[-3000:]

    def delete(self) -> None:
        self.c.kubeling("delete", "pod", self.name, "-n", NS, "--now", ok=False)


def pods_by_node(pods) -> dict[str, int]:
    return dict(sorted(Counter(p.spec.node_name for p in pods).items()))


def spread(pods) -> str:
    return "/".join(str(n) for n in pods_by_node(pods).values()) + " over " + \
        "/".join(pods_by_node(pods))


# ------------------------------------------------------------------ 1

def test_1_deploy_from_yaml(cluster, request, say):
    c = cluster
    with scenario(request, 1, "deploy from YAML"):
        t0 = time.monotonic()
        out = c.apply(m.app(NS))
        for line in ("namespace/shop created", "configmap/web-config created", "secret/web-secret created",
                     "deployment.apps/web created", "service/web created"):
            assert line in out, out
        c.apply(m.shell_pod(CLIENT, NS, m.CLIENT_SCRIPT))
        pods = wait_web(c, 3, timeout=240)
        took = time.monotonic() - t0
        c.kubeling("rollout", "status", "deployment/web", "-n", NS, "--timeout=60s")
        assert "unchanged" in c.apply(m.app(NS))
        wait_for(lambda: (p := c.api.get("pods", CLIENT, NS)) is not None and pod_ready(p), 180,
                 "the client pod", lambda: details(c))

        # The environment from the ConfigMap and the Secret.
        pod = pods[0]
        env = dict(line.split("=", 1) for line in
                   c.exec(pod.metadata.name, NS, "env").stdout.splitlines() if "=" in line)
        assert env.get("GREETING") == "hello from shop", env
        assert env.get("API_TOKEN") == "token-shop", env
        assert env.get("CFG_LOG_LEVEL") == "info", env
        # The memory limit is the container's cgroup's, on its node.
        procs = c.container_processes(pod.spec.node_name, container_id(pod))
        assert procs, f"no process of {pod.metadata.name} found on {pod.spec.node_name}"
        with open(f"/proc/{procs[0][0]}/cgroup") as f:
            memory = next(line.split(":", 2)[2] for line in f.read().splitlines()
                          if line.split(":")[1] in ("memory", ""))
        limit_file = next(p for p in (f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes",
                                      f"/sys/fs/cgroup{memory}/memory.max") if os.path.exists(p))
        assert open(limit_file).read().strip() == str(64 * 1024 * 1024), limit_file

        # The app answers through its Service, by name, from its pods.
        svc = c.api.get("services", "web", NS)
        names = {p.metadata.name for p in pods}
        answers = ask_service(c, 12) + ask_service(c, 3, url="http://web/")
        assert set(answers) <= names, answers
        say(f"scenario 1 deploy from YAML: Namespace, ConfigMap, Secret, Deployment, Service applied; "
            f"3/3 pods Ready in {took:.1f}s on {len(pods_by_node(pods))} nodes; Service web "
            f"({svc.spec.cluster_ip}) answered {len(answers)}/{len(answers)} requests from "
            f"{len(set(answers))} pods; env from ConfigMap/Secret and 64Mi memory limit in place")


# ------------------------------------------------------------------ 2

def test_2_traffic_spike(cluster, request, say):
    c = cluster
    with scenario(request, 2, "traffic spike"):
        ensure_app(c, 3)
        t0 = time.monotonic()
        c.kubeling("scale", "deployment", "web", f"--replicas={SPIKE}", "-n", NS)
        wait_for(lambda: len([p for p in web_pods(c) if pod_ready(p)]) >= SPIKE, 600,
                 f"{SPIKE} ready pods", lambda: details(c))
        t_ready = time.monotonic() - t0
        pods = wait_web(c, SPIKE, timeout=300)
        t_endpoints = time.monotonic() - t0
        by_node = pods_by_node(pods)
        assert len(by_node) == NODES, by_node
        assert all(p.status.phase == "Running" for p in pods)

        # The Service balances over all of them.
        names = {p.metadata.name for p in pods}
        seen: Counter = Counter()
        sent = 0
        while set(seen) != names and sent < 1000:
            answers = ask_service(c, 200)
            sent += len(answers)
            assert "FAILED" not in answers, answers
            seen.update(answers)
        assert set(seen) <= names, set(seen) - names
        assert set(seen) == names, f"{len(set(seen))} of {SPIKE} pods answered {sent} requests"

        t1 = time.monotonic()
        c.kubeling("scale", "deployment", "web", "--replicas=3", "-n", NS)
        wait_web(c, 3, timeout=300)
        t_down = time.monotonic() - t1
        say(f"scenario 2 traffic spike: {SPIKE} pods ready in {t_ready:.1f}s, all {SPIKE} in the Service's "
            f"endpoints at {t_endpoints:.1f}s, spread {spread(pods)}; {sent} requests reached all "
            f"{len(seen)} pods (min {min(seen.values())}, max {max(seen.values())} each); "
            f"back to 3 in {t_down:.1f}s")


# ------------------------------------------------------------------ 3

def test_3_container_crash(cluster, request, say):
    c = cluster
    with scenario(request, 3, "container crash"):
        pods = ensure_app(c, 3)
        pod = sorted(pods, key=lambda p: p.metadata.name)[0]
        name, node, cid, restarts = pod.metadata.name, pod.spec.node_name, container_id(pod), restart_count(pod)
        procs = c.container_processes(node, cid)
        httpd = [pid for pid, comm in procs if comm == "httpd"]
        assert httpd, f"no httpd among {procs} of {name} on {node}"
        t0 = time.monotonic()
        os.kill(httpd[0], signal.SIGKILL)

        def restarted():
            p = c.api.get("pods", name, NS)
            return p if p is not None and restart_count(p) > restarts and container_id(p) not in ("", cid) \
                else None
        p = wait_for(restarted, 120, f"{name} to restart", lambda: details(c))
        t_restarted = time.monotonic() - t0

        def back():
            p = c.api.get("pods", name, NS)
            return p if p is not None and pod_ready(p) and \
                p.status.pod_ip in c.api.endpoint_ips(NS, "web") else None
        p = wait_for(back, 120, f"{name} back in the endpoints", lambda: details(c))
        t_back = time.monotonic() - t0
        assert restart_count(p) == restarts + 1, restart_count(p)
        last = p.status.container_statuses[0].last_state.terminated
        assert last.exit_code != 0, p.status.container_statuses[0]
        assert not c.container_processes(node, cid), "the killed container still has processes"
        say(f"scenario 3 container crash: SIGKILL to httpd (host pid {httpd[0]}) of {name} on {node}; "
            f"restarted (restartCount {restarts}->{restart_count(p)}, exit code {last.exit_code}) "
            f"in {t_restarted:.1f}s; Ready and back in the Service's endpoints in {t_back:.1f}s")


# ------------------------------------------------------------------ 4

def test_4_node_failure(cluster, request, say):
    c = cluster
    with scenario(request, 4, "node failure"):
        replicas = 6
        pods = ensure_app(c, replicas)
        by_node = pods_by_node(pods)
        victim = max((n for n in by_node if n != m.CLIENT_NODE), key=lambda n: by_node[n], default=None)
        assert victim is not None, f"no web pod outside {m.CLIENT_NODE}: {by_node}"
        lost = {p.metadata.name for p in pods if p.spec.node_name == victim}

        t0 = time.monotonic()
        killed = c.kill_node(victim)
        t_notice = t_replaced = None
        status = ""
        deadline = t0 + 180
        while t_notice is None or t_replaced is None:
            assert time.monotonic() < deadline, (
                f"after 180s: Ready={status!r}, replaced={t_replaced}\n" + details(c))
            now = time.monotonic()
            with contextlib.suppress(Exception):
                if t_notice is None:
                    status = node_ready(c.api.get("nodes", victim, ""))
                    if status != "True":
                        t_notice = now - t0
                if t_replaced is None:
                    ready = [p for p in web_pods(c) if pod_ready(p) and p.spec.node_name != victim]
                    if len(ready) >= replicas:
                        t_replaced = now - t0
            time.sleep(0.1)
        assert status == "Unknown", status
        # The lost pods are gone from the API (their node cannot confirm); the Service has the new ones.
        pods = wait_web(c, replicas, timeout=180)
        assert not lost & {p.metadata.name for p in pods}
        assert victim not in pods_by_node(pods)
        events = c.kubeling("get", "events", "-A", ok=False).stdout
        noticed_event = "NodeNotReady" in events

        # Bring it back: it rejoins and takes new pods.
        t1 = time.monotonic()
        c.restart([f"{comp}-{victim}" for comp in ("network", "runtime", "kubelet", "proxy")])

        def schedulable():
            n = c.api.get("nodes", victim, "")
            return node_ready(n) == "True" and not any(
                t.effect in ("NoSchedule", "NoExecute") for t in n.spec.taints)
        wait_for(schedulable, 120, f"{victim} Ready without taints", lambda: details(c))
        t_rejoin = time.monotonic() - t1
        c.kubeling("scale", "deployment", "web", f"--replicas={replicas + 3}", "-n", NS)
        pods = wait_web(c, replicas + 3, timeout=240)
        landed = pods_by_node(pods).get(victim, 0)
        assert landed >= 1, pods_by_node(pods)
        # On the node, only the containers of the pods it now runs: nothing of the dead ones.
        def containers_on_victim():
            expected = {container_id(p) for p in c.api.list("pods") if p.spec.node_name == victim}
            return c.runc_containers(victim) == expected
        wait_for(containers_on_victim, 60, f"only live pods' containers on {victim}",
                 lambda: f"runc: {sorted(c.runc_containers(victim))}")
        c.kubeling("scale", "deployment", "web", "--replicas=3", "-n", NS)
        wait_web(c, 3, timeout=240)
        say(f"scenario 4 node failure: {victim} killed (agent, runtime, network, proxy and {killed} "
            f"container-side processes) with {len(lost)} of {replicas} web pods; noticed "
            f"(Ready=Unknown) in {t_notice:.1f}s{' with a NodeNotReady event' if noticed_event else ''}; "
            f"{replicas} pods Running+Ready on the other nodes in {t_replaced:.1f}s; restarted, "
            f"{victim} Ready and schedulable again in {t_rejoin:.1f}s (nothing of its dead pods left on it) "
            f"and took {landed} of 3 new pods")


# ------------------------------------------------------------------ 5

def test_5_zero_downtime_rolling_update(cluster, request, say):
    c = cluster
    with scenario(request, 5, "zero-downtime rolling update"):
        ensure_app(c, 3)
        if c.api.get("deployments", "web", NS).spec.template.spec.containers[0].image != m.HTTP_1:
            c.kubeling("set", "image", "deployment/web", f"web={m.HTTP_1}", "-n", NS)
            wait_web(c, 3, image=m.HTTP_1)
        traffic = Traffic(c, "traffic-5").start()
        try:
            t0 = time.monotonic()
            c.kubeling("set", "image", "deployment/web", f"web={m.HTTP_2}", "-n", NS)
            c.kubeling("rollout", "status", "deployment/web", "-n", NS, "--timeout=300s", timeout=320)
            t_rollout = time.monotonic() - t0
            wait_web(c, 3, image=m.HTTP_2, timeout=120)  # the old pods are gone too
            time.sleep(2)
            ok, failed, v1, v2 = traffic.stop()
            log = traffic.failures() if failed else ""
        finally:
            traffic.delete()
        assert failed == 0, f"{failed} of {ok + failed} requests failed:\n{log}"
        assert v1 > 0 and v2 > 0, (ok, failed, v1, v2)
        assert set(ask_service(c, 6, url=SERVICE_URL + "version")) == {"2"}
        say(f"scenario 5 zero-downtime rolling update: http:1 -> http:2 over 3 pods in {t_rollout:.1f}s "
            f"while a client sent {ok + failed} requests without pause: {failed} failed "
            f"({v1} answered by version 1, {v2} by version 2)")


# ------------------------------------------------------------------ 6

def test_6_bad_release_and_rollback(cluster, request, say):
    c = cluster
    with scenario(request, 6, "bad release and rollback"):
        ensure_app(c, 3)
        d = c.api.get("deployments", "web", NS)
        good_image = d.spec.template.spec.containers[0].image
        good = {p.metadata.name for p in wait_web(c, 3)}
        good_hash = c.api.get("pods", sorted(good)[0], NS).metadata.labels["pod-template-hash"]
        traffic = Traffic(c, "traffic-6").start()
        try:
            # Release 3: the same image, but its readiness probe asks a path the app does not serve.
            t0 = time.monotonic()
            c.apply(m.app(NS, image=good_image, readiness_path="/nope", progress_deadline=15))
            status = c.kubeling_bg("rollout", "status", "deployment/web", "-n", NS, "--timeout=180s")
            min_good = 3
            new_seen = 0
            while status.poll() is None:
                assert time.monotonic() - t0 < 200, "rollout status did not end"
                with contextlib.suppress(Exception):
                    pods = web_pods(c)
                    min_good = min(min_good, len([p for p in pods if pod_ready(p)
                                                  and p.metadata.name in good]))
                    new = [p for p in pods if p.metadata.labels.get("pod-template-hash") != good_hash]
                    new_seen = max(new_seen, len(new))
                    assert not any(pod_ready(p) for p in new), "a pod of the bad release became ready"
                time.sleep(0.2)
            t_failed = time.monotonic() - t0
            out, err = status.communicate()
            assert status.returncode != 0, out + err
            assert 'deployment "web" exceeded its progress deadline' in err, out + err
            assert min_good >= 3, f"the old pods went down to {min_good} ready"
            assert new_seen >= 1, "the bad release made no pod"
            d = c.api.get("deployments", "web", NS)
            progressing = next(x for x in d.status.conditions if x.type == "Progressing")
            assert progressing.reason == "ProgressDeadlineExceeded", progressing

            t1 = time.monotonic()
            undo = c.kubeling("rollout", "undo", "deployment/web", "-n", NS).stdout
            c.kubeling("rollout", "status", "deployment/web", "-n", NS, "--timeout=180s", timeout=200)
            t_undo = time.monotonic() - t1
            pods = wait_web(c, 3, timeout=120)
            time.sleep(1)
            ok, failed, _, _ = traffic.stop()
            log = traffic.failures() if failed else ""
        finally:
            traffic.delete()
        assert {p.metadata.labels["pod-template-hash"] for p in pods} == {good_hash}
        assert {p.metadata.name for p in pods} == good, "the rollback replaced the old pods"
        d = c.api.get("deployments", "web", NS)
        assert d.spec.template.spec.containers[0].readiness_probe.http_get.path == "/healthz"
        assert failed == 0, f"{failed} of {ok + failed} requests failed:\n{log}"
        history = c.kubeling("rollout", "history", "deployment/web", "-n", NS).stdout
        say(f"scenario 6 bad release and rollback: never-ready release stalled with {min_good}/3 old pods "
            f"ready throughout ({new_seen} new pod(s) never Ready); rollout status failed with the "
            f"progress deadline after {t_failed:.1f}s; rollout undo restored it in {t_undo:.1f}s "
            f"({undo.strip()}); {ok + failed} requests meanwhile, {failed} failed; "
            f"{len(history.strip().splitlines()) - 1} revisions in history")


# ------------------------------------------------------------------ 7

NAMESPACED = ("pods", "deployments", "replicasets", "services", "endpoints", "configmaps", "secrets")


def objects(c: Cluster, namespace: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> uid of every object of NAMESPACED kinds in the namespace."""
    return {(kind, o.metadata.name): o.metadata.uid for kind in NAMESPACED
            for o in c.api.list(kind, namespace)}


def test_7_namespaces(cluster, request, say):
    c = cluster
    with scenario(request, 7, "namespaces"):
        ensure_app(c, 3)
        t0 = time.monotonic()
        for ns in ("dev", "prod"):
            c.apply(m.app(ns, replicas=2))
        dev_pods = {p.metadata.name for p in wait_web(c, 2, "dev")}
        prod_pods = {p.metadata.name for p in wait_web(c, 2, "prod")}
        t_ready = time.monotonic() - t0
        # Each namespace's Service answers from its own pods, by name from anywhere.
        assert set(ask_service(c, 6, url="http://web.dev.svc.cluster.local/")) <= dev_pods
        assert set(ask_service(c, 6, url="http://web.prod.svc.cluster.local/")) <= prod_pods
        dev_ip = c.api.get("services", "web", "dev").spec.cluster_ip
        prod_ip = c.api.get("services", "web", "prod").spec.cluster_ip
        assert dev_ip != prod_ip
        prod_before = objects(c, "prod")
        dev_before = objects(c, "dev")

        t1 = time.monotonic()
        c.kubeling("delete", "namespace", "dev")
        wait_for(lambda: c.api.get("namespaces", "dev", "") is None, 180, "namespace dev to go",
                 lambda: c.kubeling("get", "all", "-n", "dev", ok=False).stdout)
        t_deleted = time.monotonic() - t1
        left = objects(c, "dev")
        assert not left, f"left in dev: {sorted(left)}"
        assert c.kubeling("get", "namespace", "dev", ok=False).returncode != 0
        assert objects(c, "prod") == prod_before
        assert {p.metadata.name for p in wait_web(c, 2, "prod")} == prod_pods
        assert set(ask_service(c, 4, url="http://web.prod.svc.cluster.local/")) <= prod_pods
        failed = ask_service(c, 1, url="http://web.dev.svc.cluster.local/")
        assert failed == ["FAILED"], failed
        say(f"scenario 7 namespaces: the app in dev and prod Ready in {t_ready:.1f}s, each Service "
            f"answering from its own pods; deleting dev removed its {len(dev_before)} objects in "
            f"{t_deleted:.1f}s; prod's {len(prod_before)} objects untouched and still serving")


# ------------------------------------------------------------------ 8

def snapshot(c: Cluster) -> dict[tuple[str, str, str], str]:
    """(kind, namespace, name) -> uid of everything a user made or the cluster runs."""
    kinds = ("namespaces", "nodes", "services", "endpoints", "configmaps", "secrets", "deployments",
             "replicasets", "pods")
    return {(kind, o.metadata.namespace, o.metadata.name): o.metadata.uid
            for kind in kinds for o in c.api.list(kind)}


def containers(c: Cluster) -> dict[str, tuple[str, int]]:
    """pod uid -> (container ids, restart count) of every running pod."""
    return {p.metadata.uid: (",".join(sorted(container_id(p, s.name) for s in p.status.container_statuses)),
                             restart_count(p))
            for p in c.api.list("pods") if p.status.phase == "Running" and not terminating(p)}


def test_8_control_plane_restarts(cluster, request, say):
    c = cluster
    with scenario(request, 8, "control plane restarts"):
        ensure_app(c, 3)
        before = snapshot(c)
        running = containers(c)
        leases = ("kube-controller-manager", "kube-scheduler")
        leaders = {name: c.api.get("leases", name, "kube-system").spec.holder_identity for name in leases}
        # Mid-way: the moment the first new pod is created, all three die at once.
        control_plane = ["apiserver", "controller-manager", "scheduler"]
        killed = c.api.when_added("pods", NS, WEB, c.killer(control_plane))
        t0 = time.monotonic()
        c.kubeling("scale", "deployment", "web", f"--replicas={SCALE_UP}", "-n", NS)
        killed.result(60)
        t_kill = time.monotonic()
        # The API server first: what the others had done when they died.
        c.restart(["apiserver"])
        pods = wait_for(lambda: web_pods(c), 60, "the API server to answer")
        at_kill = (len(pods) - 3, len([p for p in pods if p.spec.node_name]) - 3)
        c.restart(["controller-manager", "scheduler"])
        t_restarted = time.monotonic() - t_kill
        # The new controller manager and scheduler lead once the dead ones' leases run out.
        wait_for(lambda: all(c.api.get("leases", name, "kube-system").spec.holder_identity != leaders[name]
                             for name in leases), 120, "new leaders")
        t_leading = time.monotonic() - t_kill
        pods = wait_web(c, SCALE_UP, timeout=400)
        t_done = time.monotonic() - t0
        # The Service answers from the new pods (DNS and every node's proxy followed the restart).
        answers = ask_service(c, 30)
        assert "FAILED" not in answers, answers

        after = snapshot(c)
        lost = {k: v for k, v in before.items() if after.get(k) != v}
        assert not lost, f"lost or replaced: {sorted(lost)}"
        assert len(web_pods(c)) == SCALE_UP
        now = containers(c)
        changed = {uid: (was, now.get(uid)) for uid, was in running.items() if now.get(uid) != was}
        assert not changed, f"containers restarted or replaced: {changed}"
        say(f"scenario 8 control plane restarts: scale 3 -> {SCALE_UP}; API server, controller manager "
            f"and scheduler SIGKILLed when {at_kill[0]} of {SCALE_UP - 3} new pods were made and "
            f"{at_kill[1]} bound; restarted in {t_restarted:.1f}s, leading again (once the dead ones' "
            f"leases expired) at {t_leading:.1f}s; scale-up complete {t_done:.1f}s after it began; "
            f"{len(before)} objects all kept, {len(running)} running containers unchanged "
            f"(same ids, no restarts); the Service answered {len(answers)}/{len(answers)} requests")
