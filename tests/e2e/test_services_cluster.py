"""Services on a real cluster from `kubeling up --nodes 2`: ClusterIP load
balancing from pods on each node, scaling, readiness, NodePort, hairpin,
session affinity, cluster DNS (A, headless, SRV, NXDOMAIN), deleting a
Service, and a rolling update behind a Service that loses no request.

One cluster serves the whole module (`down --purge` always runs, and the
leftover checks of test_local_cluster_nodes run after it). Each test sets up
what it needs from the shared state (replica counts, endpoints, rules), so
a failure in one does not cascade. Many requests cost one `kubeling exec`:
a loop inside the client pod, whose output the test counts. Only loopback,
the `kubeling-lan` bridge and the cluster's namespaces see any traffic.

The figures (requests, distinct answers, programming delays, the rolling
update's sent / failed) are printed; run with `-s` to see them. Nothing
asserts on wall-clock time.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_local_cluster_nodes import Local, items, leftovers, pytestmark, wait_for  # noqa: F401

NS = "svc-e2e"
DOMAIN = "cluster.local"
DNS_SERVER = "10.250.0.1"  # the cluster DNS listens on the host's LAN address
CLUSTER_DNS_IP = "10.96.0.10"
NODES = ("node-1", "node-2")
NODE_IPS = {"node-1": "10.250.0.11", "node-2": "10.250.0.12"}
GRACE = 10  # terminationGracePeriodSeconds of the web pods
PRESTOP_SLEEP = 3  # seconds the web pods keep serving once deleted (see the rolling update test)

BASE = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-headless, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports:
  - {{name: http, port: 8080, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-sticky, namespace: {NS}}}
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata: {{name: nobody, namespace: {NS}}}
spec:
  selector: {{app: nobody}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: v1
kind: Service
metadata: {{name: lonely, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: lonely}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: v1
kind: Pod
metadata:
  name: lonely-pod
  namespace: {NS}
  labels: {{app: lonely}}
spec:
  nodeSelector: {{kubernetes.io/hostname: node-1}}
  terminationGracePeriodSeconds: 1
  containers:
  - name: http
    image: localhost/kubeling/http:1
    ports:
    - {{name: http, containerPort: 8080}}
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
"""

CLIENT = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: localhost/kubeling/shell:1
    command: [sh, -c, {script}]
"""

# PID 1 of a client pod must reap orphans: busybox `timeout` leaves its
# watchdog process to the container's init, so under `sleep` as PID 1 every
# `timeout 5 wget` would leave a zombie (thousands of them: the machine's
# pid_max is shared).
IDLE = "trap 'exit 0' TERM; while :; do sleep 1; done"

# The rolling update's client: waits for /tmp/go, then sends requests one
# after another until /tmp/stop, logging each answer ("ok <host>") or failure
# ("FAIL <uptime> rc=<exit code> <message>") and finally "sent=N failed=M".
ROLLOUT_CLIENT = r"""
until [ -e /tmp/go ]; do sleep 1; done
sent=0; failed=0
while [ ! -e /tmp/stop ]; do
  sent=$((sent + 1))
  out=$(timeout 5 wget -qO- http://web/ 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ -n "$out" ]; then
    echo "ok $out"
  else
    failed=$((failed + 1)); read up _ < /proc/uptime
    echo "FAIL $up rc=$rc $out" | tr '\n' ' '; echo
  fi
done
echo "sent=$sent failed=$failed"
""" + IDLE


def web_deployment(replicas: int, version: str = "1", prestop: bool = True) -> str:
    lifecycle = f"""\
        lifecycle:
          preStop:
            exec: {{command: [sleep, "{PRESTOP_SLEEP}"]}}
""" if prestop else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: {GRACE}
      containers:
      - name: http
        image: localhost/kubeling/http:1
        env:
        - {{name: VERSION, value: "{version}"}}
        ports:
        - {{name: http, containerPort: 8080}}
        resources:
          requests: {{cpu: 10m, memory: 16Mi}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 1
{lifecycle}"""


def client_pod(name: str, node: str, script: str = IDLE) -> str:
    return CLIENT.format(name=name, ns=NS, node=node, script=json.dumps(script))


# ------------------------------------------------------------------ the cluster


class Cluster(Local):
    """The CLI against the module's cluster, and ways to look at it."""

    def k(self, *args: str, ok: bool = True, timeout: float = 120, input: str | None = None):
        cut = args.index("--") if "--" in args else len(args)
        return self(*args[:cut], "-n", NS, *args[cut:], ok=ok, timeout=timeout, input=input)

    def apply(self, manifest: str) -> None:
        self("apply", "-f", "-", input=manifest)

    def exec(self, pod: str, *cmd: str, ok: bool = True, timeout: float = 60):
        return self.k("exec", pod, "--", *cmd, ok=ok, timeout=timeout)

    def get(self, *args: str) -> dict:
        return json.loads(self.k("get", *args, "-o", "json").stdout)

    def service(self, name: str) -> dict:
        return self.get("service", name)

    def endpoints(self, name: str) -> tuple[set[str], set[str]]:
        """(ready, not ready) addresses of a Service's Endpoints."""
        proc = self.k("get", "endpoints", name, "-o", "json", ok=False)
        if proc.returncode != 0:
            return set(), set()
        doc = json.loads(proc.stdout)
        ready, not_ready = set(), set()
        for subset in doc.get("subsets", []):
            ready |= {a["ip"] for a in subset.get("addresses", [])}
            not_ready |= {a["ip"] for a in subset.get("notReadyAddresses", [])}
        return ready, not_ready

    def pods(self, selector: str) -> list[dict]:
        return items(self.get("pods", "-l", selector))

    def ready_pods(self, selector: str) -> dict[str, dict]:
        """Running, ready, not terminating pods by name."""
        out = {}
        for p in self.pods(selector):
            status = p.get("status", {})
            if (status.get("phase") == "Running" and status.get("podIP")
                    and not p["metadata"].get("deletionTimestamp")
                    and any(c["type"] == "Ready" and c["status"] == "True"
                            for c in status.get("conditions", []))):
                out[p["metadata"]["name"]] = p
        return out

    def wait_pods(self, selector: str, count: int, timeout: float = 180) -> dict[str, dict]:
        """Exactly `count` pods match, all ready; returns them by name."""
        def settled():
            all_pods = self.pods(selector)
            ready = self.ready_pods(selector)
            return ready if len(ready) == count and len(all_pods) == count else None
        return wait_for(settled, timeout, f"{count} ready pods {selector}", self.details)

    def details(self) -> str:
        return (self.k("get", "pods", "-o", "wide", ok=False).stdout
                + self.k("get", "endpoints", ok=False).stdout + self.logs_tail())

    def rules(self, node: str) -> str:
        proc = subprocess.run(["ip", "netns", "exec", f"kubeling-{node}", "nft", "list", "table", "ip",
                               "kubeling"], capture_output=True, text=True, timeout=30)
        return proc.stdout if proc.returncode == 0 else ""

    def programmed(self, node: str, service: str, port: str = "http") -> set[str]:
        """The endpoint addresses the node's proxy has rules for, for one service port."""
        pattern = re.compile(rf"chain \"?ep-{re.escape(NS)}/{re.escape(service)}/tcp/{port}__"
                             rf"(\d+\.\d+\.\d+\.\d+)/\d+\"? \{{")
        return set(pattern.findall(self.rules(node)))

    def wait_programmed(self, service: str, ips: set[str], timeout: float = 60) -> float:
        """Until every node's rules send `service` to exactly `ips`; the seconds it took."""
        start = time.monotonic()
        wait_for(lambda: all(self.programmed(n, service) == ips for n in NODES), timeout,
                 f"rules for {service} -> {sorted(ips)} on every node",
                 lambda: "\n".join(f"{n}: {sorted(self.programmed(n, service))}" for n in NODES)
                 + "\n" + self.details())
        return time.monotonic() - start

    def fetch_many(self, pod: str, url: str, count: int) -> Counter:
        """`count` requests from inside `pod`, one connection each: answers by host."""
        script = f"for i in $(seq {count}); do timeout 5 wget -qO- {url} || echo FAILED; done"
        out = self.exec(pod, "sh", "-c", script, timeout=90).stdout.split()
        return Counter(out)


def wait_lan_free(timeout: float = 900) -> None:
    """Another local cluster with nodes (test_scenarios, a user's) owns the
    node namespaces and addresses; there is room for one at a time."""
    def free():
        return not any(Path(f"/run/netns/kubeling-{n}").exists() for n in NODES)
    if not free():
        print("waiting for another local cluster to go down", flush=True)
        deadline = time.monotonic() + timeout
        while not free() and time.monotonic() < deadline:
            time.sleep(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("services"))
    try:
        wait_lan_free()
        started = time.monotonic()
        up = c("up", "--nodes", "2", timeout=600)
        assert "node-1" in up.stdout and "node-2" in up.stdout, up.stdout
        print(f"\nkubeling up --nodes 2: {time.monotonic() - started:.1f}s", flush=True)
        c.apply(BASE)
        c.apply(web_deployment(3))
        c.apply("---\n".join([client_pod("client-1", "node-1"), client_pod("client-2", "node-2"),
                              client_pod("roller-1", "node-1", ROLLOUT_CLIENT),
                              client_pod("roller-2", "node-2", ROLLOUT_CLIENT)]))
        clients = ("client-1", "client-2", "roller-1", "roller-2")
        wait_for(lambda: all(c.get("pod", n).get("status", {}).get("phase") == "Running" for n in clients),
                 180, "the client pods", c.details)
        c.wait_pods("app=lonely", 1)
        c.wait_pods("app=web", 3)
        print(f"cluster and workloads ready: {time.monotonic() - started:.1f}s", flush=True)
        yield c
    finally:
        down = c("down", "--purge", ok=False, timeout=300)
        left = leftovers(c.state)
        assert down.returncode == 0, f"kubeling down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, "kubeling down left behind:\n" + "\n".join(left)


def scale_web(c: Cluster, replicas: int) -> dict[str, dict]:
    """Scale, then wait for the pods, the Endpoints and every node's rules."""
    started = time.monotonic()
    c.k("scale", "deployment", "web", f"--replicas={replicas}")
    pods = c.wait_pods("app=web", replicas)
    ips = {p["status"]["podIP"] for p in pods.values()}
    wait_for(lambda: c.endpoints("web")[0] == ips, 60, f"Endpoints web = {sorted(ips)}", c.details)
    c.wait_programmed("web", ips)
    print(f"scale to {replicas}: pods, Endpoints and rules on both nodes in "
          f"{time.monotonic() - started:.1f}s", flush=True)
    return pods


def names(pods: dict[str, dict]) -> set[str]:
    return set(pods)


# ------------------------------------------------------------------ tests


def test_cluster_ip_reaches_every_replica_from_each_node(cluster):
    c = cluster
    pods = scale_web(c, 3)
    svc = c.service("web")
    cluster_ip = svc["spec"]["clusterIP"]
    assert re.fullmatch(r"10\.96\.\d+\.\d+", cluster_ip), cluster_ip
    on = {p["spec"]["nodeName"] for p in pods.values()}
    print(f"web: ClusterIP {cluster_ip}, replicas on {sorted(on)}")
    for client, node in (("client-1", "node-1"), ("client-2", "node-2")):
        pod = c.get("pod", client)
        assert pod["spec"]["nodeName"] == node
        for url in ("http://web/", f"http://web.{NS}.svc.{DOMAIN}/", f"http://{cluster_ip}/"):
            answers = c.fetch_many(client, url, 30)
            print(f"{client} ({node}) -> {url}: {dict(answers)}")
            assert "FAILED" not in answers, answers
            assert set(answers) == names(pods), (answers, names(pods))


def test_scaling_changes_the_answering_pods(cluster):
    c = cluster
    five = scale_web(c, 5)
    answers = c.fetch_many("client-1", "http://web/", 60)
    print(f"5 replicas, 60 requests: {len(answers)} distinct: {dict(answers)}")
    assert "FAILED" not in answers
    assert set(answers) == names(five) and len(answers) == 5

    one = scale_web(c, 1)
    for client in ("client-1", "client-2"):
        answers = c.fetch_many(client, "http://web/", 20)
        print(f"1 replica, 20 requests from {client}: {dict(answers)}")
        assert set(answers) == names(one), answers
    scale_web(c, 3)


def test_a_pod_failing_readiness_stops_receiving_traffic(cluster):
    c = cluster
    pods = scale_web(c, 3)
    victim, *others = sorted(pods)
    victim_ip = pods[victim]["status"]["podIP"]
    other_ips = {pods[n]["status"]["podIP"] for n in others}

    started = time.monotonic()
    c.exec(victim, "rm", "/www/healthz")  # its readiness probe now gets 404
    wait_for(lambda: c.endpoints("web") == (other_ips, {victim_ip}), 60,
             f"{victim} in notReadyAddresses only", c.details)
    left_endpoints = time.monotonic() - started
    c.wait_programmed("web", other_ips)
    print(f"unready {victim}: out of Endpoints after {left_endpoints:.1f}s, out of both nodes' "
          f"rules after {time.monotonic() - started:.1f}s")
    for client in ("client-1", "client-2"):
        answers = c.fetch_many(client, "http://web/", 30)
        print(f"{client} with {victim} unready: {dict(answers)}")
        assert "FAILED" not in answers
        assert set(answers) == set(others), answers
    # The pod still serves; only the Service no longer sends it anything.
    direct = c.exec("client-1", "timeout", "5", "wget", "-qO-", f"http://{victim_ip}:8080/")
    assert direct.stdout.strip() == victim

    c.exec(victim, "sh", "-c", "echo ok > /www/healthz")
    wait_for(lambda: c.endpoints("web") == (other_ips | {victim_ip}, set()), 60,
             f"{victim} ready again", c.details)
    c.wait_programmed("web", other_ips | {victim_ip})
    answers = c.fetch_many("client-2", "http://web/", 30)
    print(f"{victim} ready again: {dict(answers)}")
    assert set(answers) == names(pods), answers


def test_node_port_answers_on_every_node_address(cluster):
    c = cluster
    lonely = c.wait_pods("app=lonely", 1)["lonely-pod"]
    assert lonely["spec"]["nodeName"] == "node-1"
    assert not [p for p in c.pods("app=lonely") if p["spec"]["nodeName"] == "node-2"]
    c.wait_programmed("lonely", {lonely["status"]["podIP"]})
    svc = c.service("lonely")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767, svc["spec"]
    print(f"lonely: NodePort {node_port}, its one pod on node-1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP proxy
    for node, ip in NODE_IPS.items():
        got = Counter()
        for _ in range(5):
            with opener.open(f"http://{ip}:{node_port}/", timeout=10) as answer:
                got[answer.read().decode().strip()] += 1
        print(f"host -> {node} {ip}:{node_port}: {dict(got)}")
        assert set(got) == {"lonely-pod"}, got
    # And from a pod, to the other node's address.
    answers = c.fetch_many("client-1", f"http://{NODE_IPS['node-2']}:{node_port}/", 5)
    assert set(answers) == {"lonely-pod"}, answers


def test_a_pod_reaches_itself_through_its_service(cluster):
    c = cluster
    # (The pod is not named like its Service: a pod's own name resolves to
    # its own address through /etc/hosts, as in Kubernetes.)
    c.wait_pods("app=lonely", 1)
    cluster_ip = c.service("lonely")["spec"]["clusterIP"]
    for url in ("http://lonely/", f"http://lonely.{NS}.svc.{DOMAIN}/", f"http://{cluster_ip}/"):
        answers = c.fetch_many("lonely-pod", url, 5)
        print(f"lonely-pod -> {url} (itself): {dict(answers)}")
        assert set(answers) == {"lonely-pod"}, answers


def test_service_without_endpoints_is_refused_at_once(cluster):
    c = cluster
    cluster_ip = c.service("nobody")["spec"]["clusterIP"]
    wait_for(lambda: all(cluster_ip in c.rules(n) for n in NODES), 60, "the nobody reject rule")
    started = time.monotonic()
    proc = c.exec("client-1", "timeout", "5", "wget", "-qO-", "http://nobody/", ok=False)
    print(f"nobody (no endpoints): exit {proc.returncode} after {time.monotonic() - started:.1f}s: "
          f"{proc.stderr.strip()}")
    assert proc.returncode != 0
    assert "refused" in proc.stderr.lower(), proc.stderr  # an ICMP port unreachable, no timeout


def test_session_affinity_client_ip_keeps_one_backend(cluster):
    c = cluster
    pods = scale_web(c, 3)
    c.wait_programmed("web-sticky", {p["status"]["podIP"] for p in pods.values()})
    for client in ("client-1", "client-2"):
        answers = c.fetch_many(client, "http://web-sticky/", 20)
        print(f"{client} -> web-sticky (ClientIP affinity): {dict(answers)}")
        assert len(answers) == 1 and set(answers) <= names(pods), answers


def _dns(qname: str, rdtype: str):
    import dns.message
    import dns.query
    query = dns.message.make_query(qname, rdtype)
    return dns.query.udp(query, DNS_SERVER, timeout=5)


def test_cluster_dns_answers(cluster):
    import dns.rcode
    import dns.rdatatype
    c = cluster
    pods = scale_web(c, 3)
    pod_ips = {p["status"]["podIP"] for p in pods.values()}
    web_ip = c.service("web")["spec"]["clusterIP"]
    fqdn = f"web.{NS}.svc.{DOMAIN}"

    # From the host, straight to the DNS server.
    a = _dns(fqdn, "A")
    assert a.rcode() == dns.rcode.NOERROR
    assert {r.address for rrset in a.answer for r in rrset} == {web_ip}

    headless = f"web-headless.{NS}.svc.{DOMAIN}"
    wait_for(lambda: {r.address for rrset in _dns(headless, "A").answer for r in rrset} == pod_ips, 30,
             f"headless A records = {sorted(pod_ips)}")

    srv = _dns(f"_http._tcp.{fqdn}", "SRV")
    records = [r for rrset in srv.answer for r in rrset if r.rdtype == dns.rdatatype.SRV]
    assert [(r.port, r.target.to_text()) for r in records] == [(80, fqdn + ".")], srv
    srv = _dns(f"_http._tcp.{headless}", "SRV")
    records = [r for rrset in srv.answer for r in rrset if r.rdtype == dns.rdatatype.SRV]
    assert {r.port for r in records} == {8080} and len(records) == 3, srv
    extra = {r.address for rrset in srv.additional for r in rrset}
    assert extra == pod_ips, srv

    for missing in (f"nope.{NS}.svc.{DOMAIN}", f"web.no-such-ns.svc.{DOMAIN}",
                    f"_nope._tcp.{fqdn}"):
        assert _dns(missing, "A").rcode() == dns.rcode.NXDOMAIN, missing
    print(f"DNS (host): {fqdn} A {web_ip}; {headless} A {sorted(pod_ips)}; SRV port 80 -> {fqdn}; "
          "NXDOMAIN for missing names")

    # From a pod: through its resolv.conf, the kube-dns Service and the proxy.
    resolv = c.exec("client-2", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {CLUSTER_DNS_IP}" in resolv
    assert f"search {NS}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}" in resolv
    out = c.exec("client-2", "nslookup", "-type=a", fqdn).stdout
    assert web_ip in out, out
    out = c.exec("client-2", "nslookup", "-type=a", headless).stdout
    assert all(ip in out for ip in pod_ips), out
    out = c.exec("client-2", "nslookup", "-type=srv", f"_http._tcp.{fqdn}").stdout
    assert re.search(rf"\b80 {re.escape(fqdn)}", out), out
    missing = c.exec("client-2", "nslookup", "-type=a", f"nope.{NS}.svc.{DOMAIN}", ok=False)
    assert missing.returncode != 0 and "NXDOMAIN" in missing.stdout + missing.stderr, missing
    print("DNS (pod, busybox nslookup via 10.96.0.10): A, headless A, SRV, NXDOMAIN")


def test_rolling_update_behind_a_service_loses_no_request(cluster):
    """Two clients (one per node) send requests back to back through the
    Service name while the Deployment rolls (maxSurge 1, maxUnavailable 0,
    readiness on /healthz every second).

    The web pods have a preStop `sleep`, as Kubernetes users give theirs: a
    deleted pod leaves the Endpoints at once, but the proxies on the nodes
    drop it from their rules only some 0.1-0.3 s later, and without the
    sleep the node agent stops the container (and removes the pod's
    network) faster than that: a few requests are refused or hang on the
    gone address (measured: 3-5 failures in ~7500 requests per rollout).
    """
    c = cluster
    before = scale_web(c, 3)
    for roller in ("roller-1", "roller-2"):
        c.exec(roller, "touch", "/tmp/go")
    time.sleep(3)  # both clients are sending
    started = time.monotonic()
    c.apply(web_deployment(3, version="2"))
    c.k("rollout", "status", "deployment/web", "--timeout", "240s", timeout=260)
    rolled = time.monotonic() - started
    after = c.wait_pods("app=web", 3, timeout=120)  # the old pods are gone
    time.sleep(3)
    for roller in ("roller-1", "roller-2"):
        c.exec(roller, "touch", "/tmp/stop")

    assert not names(before) & names(after)
    total_sent = total_failed = 0
    for roller in ("roller-1", "roller-2"):
        log = wait_for(lambda: (out := c.k("logs", roller, ok=False).stdout) and "sent=" in out and out,
                       60, f"{roller}'s summary")
        sent, failed = map(int, re.search(r"sent=(\d+) failed=(\d+)", log).groups())
        hosts = Counter(line.split()[1] for line in log.splitlines() if line.startswith("ok "))
        failures = [line for line in log.splitlines() if line.startswith("FAIL")]
        print(f"rolling update, {roller}: sent={sent} failed={failed}; old pods answered "
              f"{sum(hosts[n] for n in before)}, new pods {sum(hosts[n] for n in after)}")
        for line in failures[:20]:
            print(f"  {line}")
        assert sum(hosts[n] for n in after) > 0 and sum(hosts[n] for n in before) > 0, hosts
        total_sent += sent
        total_failed += failed
    print(f"rolling update of 3 replicas (maxSurge 1, maxUnavailable 0, preStop sleep {PRESTOP_SLEEP}s): "
          f"{rolled:.1f}s; requests sent={total_sent} failed={total_failed}")
    assert total_failed == 0


def test_deleting_a_service_removes_its_rules_and_dns_names(cluster):
    import dns.rcode
    c = cluster
    svc = c.service("lonely")
    cluster_ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    web_ip = c.service("web")["spec"]["clusterIP"]
    for node in NODES:
        assert cluster_ip in c.rules(node) and web_ip in c.rules(node)
    assert _dns(f"lonely.{NS}.svc.{DOMAIN}", "A").rcode() == dns.rcode.NOERROR

    started = time.monotonic()
    c.k("delete", "service", "lonely", "web")

    def gone():
        return all(cluster_ip not in (r := c.rules(n)) and web_ip not in r
                   and "/lonely/" not in r and str(node_port) not in r for n in NODES)
    wait_for(gone, 60, "the Services' rules gone from both nodes",
             lambda: "\n".join(c.rules(n) for n in NODES))
    rules_gone = time.monotonic() - started
    for name in ("lonely", "web"):
        wait_for(lambda: _dns(f"{name}.{NS}.svc.{DOMAIN}", "A").rcode() == dns.rcode.NXDOMAIN, 30,
                 f"NXDOMAIN for {name}")
    print(f"delete services lonely, web: rules gone from both nodes after {rules_gone:.1f}s, "
          f"DNS NXDOMAIN after {time.monotonic() - started:.1f}s")
    # Nothing answers on the NodePort any more, and the pods' names no longer resolve.
    with pytest.raises(OSError):
        socket.create_connection((NODE_IPS["node-2"], node_port), timeout=5).close()
    proc = c.exec("client-1", "timeout", "5", "wget", "-qO-", "http://web/", ok=False)
    assert proc.returncode != 0 and "bad address" in proc.stderr, proc.stderr
    # The other Services are untouched.
    assert c.fetch_many("client-2", "http://web-sticky/", 3)["FAILED"] == 0
