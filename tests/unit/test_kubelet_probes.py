"""Probe thresholds, handlers and workers (node_agent/kubelet/probes.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kubeling.objects import from_dict
from node_agent.kubelet.probes import (FAILURE, LIVENESS, READINESS, STARTUP, SUCCESS, UNKNOWN, Prober,
                                       ProbeManager, ProbeState, ProbeTarget, http_get, resolve_port,
                                       tcp_check)

S, F, U = SUCCESS, FAILURE, UNKNOWN


@pytest.mark.parametrize("kind, success, failure, attempts, results", [
    # readiness starts not ready; one success makes it ready, three failures unready
    (READINESS, 1, 3, [S, F, F, F, S], [S, S, S, F, S]),
    # successThreshold 2: two in a row are needed
    (READINESS, 2, 1, [S, F, S, S], [F, F, F, S]),
    # liveness starts healthy; failures must be consecutive
    (LIVENESS, 1, 3, [F, F, S, F, F, F], [S, S, S, S, S, F]),
    (LIVENESS, 1, 1, [F], [F]),
    # attempts that could not be made count for nothing, and do not break a run
    (LIVENESS, 1, 2, [F, U, F], [S, S, F]),
    (STARTUP, 1, 2, [U, F, S], [U, U, S]),
], ids=["readiness", "success-threshold", "liveness-consecutive", "liveness-threshold-1", "unknown-ignored",
        "startup"])
def test_results_flip_after_threshold_consecutive_attempts(kind, success, failure, attempts, results):
    state = ProbeState(kind, success, failure)
    seen = []
    for a in attempts:
        state.observe(a)
        seen.append(state.result)
    assert seen == results


@pytest.mark.parametrize("kind, result, final", [
    (LIVENESS, F, True), (LIVENESS, S, False), (STARTUP, S, True), (STARTUP, F, True), (STARTUP, U, False),
    (READINESS, F, False)])
def test_which_results_end_probing(kind, result, final):
    assert ProbeState(kind, initial=result).final is final


def test_observe_reports_changes_only():
    state = ProbeState(READINESS, 1, 1)
    assert [state.observe(x) for x in (S, S, F, F, S)] == [True, False, True, False, True]


def container(ports=()):
    return from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]}}).spec.containers[0]


@pytest.mark.parametrize("value, expected", [({"port": 8080}, 8080), ({"port": "8081"}, 8081),
                                             ({"port": "http"}, 80)], ids=["number", "numeric-string", "named"])
def test_ports_by_number_or_name(value, expected):
    probe = from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i", "livenessProbe": {"tcpSocket": value}}]}}).spec.containers[0].liveness_probe
    assert resolve_port(probe.tcp_socket.port, container([("http", 80)])) == expected


def test_an_unknown_port_name_is_a_failure_message():
    probe = from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i", "livenessProbe": {"tcpSocket": {"port": "web"}}}]}}).spec.containers[0]
    with pytest.raises(ValueError, match="not a named port"):
        resolve_port(probe.liveness_probe.tcp_socket.port, container())


# -- real sockets, in this process's namespace -----------------------------------------------------


@pytest.fixture
async def http_server():
    """Answers /ok 200, /redirect 302, /bad 500 (with a body), /slow after 3 s."""
    async def handle(reader, writer):
        line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        path = line.split()[1]
        if path == "/slow":
            await asyncio.sleep(3)
        code, body = {"/ok": (200, "fine"), "/redirect": (302, ""), "/bad": (500, "broken")}.get(path, (404, ""))
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.mark.parametrize("path, outcome, message", [
    ("/ok", S, ""), ("/redirect", S, ""), ("/bad", F, "HTTP probe failed with statuscode: 500: broken"),
    ("/missing", F, "HTTP probe failed with statuscode: 404"),
], ids=["200", "302", "500", "404"])
async def test_http_get_success_is_200_to_399(http_server, path, outcome, message):
    result = await http_get("127.0.0.1", http_server, path, "HTTP", [], None, 2)
    assert result == (outcome, message)


async def test_http_get_times_out(http_server):
    outcome, message = await http_get("127.0.0.1", http_server, "/slow", "HTTP", [], None, 0.5)
    assert outcome == F and "context deadline exceeded" in message


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connections_refused_fail_with_go_words(http_server):
    port = closed_port()
    assert await tcp_check("127.0.0.1", port, None, 1) == (F, f"dial tcp 127.0.0.1:{port}: connect: connection refused")
    assert await tcp_check("127.0.0.1", http_server, None, 1) == (S, "")
    outcome, message = await http_get("127.0.0.1", port, "/", "HTTP", [], None, 1)
    assert outcome == F and message.endswith("connect: connection refused")


# -- workers ------------------------------------------------------------------------------------


class ScriptedProber(Prober):
    """Answers each probe kind from a script (then repeats the last answer)."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.calls: list[str] = []

    async def run(self, handler, spec, target, timeout):
        kind = next(k for k, attr in (("startup", "startup_probe"), ("liveness", "liveness_probe"),
                                      ("readiness", "readiness_probe"))
                    if spec.HasField(attr) and getattr(spec, attr) is handler)
        self.calls.append(kind)
        answers = self.script[kind]
        return (answers.pop(0) if len(answers) > 1 else answers[0]), f"{kind} said so"


def probed_container(*kinds: str, failure_threshold: int = 1):
    c = {"name": "c", "image": "i"}
    for k in kinds:
        c[f"{k}Probe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1,
                          "failureThreshold": failure_threshold}
    return from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                      "spec": {"containers": [c]}}).spec.containers[0]


async def test_startup_holds_readiness_and_liveness_until_it_passes(monkeypatch):
    prober = ScriptedProber({"startup": [F, S], "liveness": [S], "readiness": [S]})
    changes, failures = [], []

    async def on_failure(uid, name, kind, message):
        failures.append((kind, message))
    manager = ProbeManager(prober, changes.append, on_failure)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s: real_sleep(min(s, 0.01)))
    spec = probed_container("startup", "liveness", "readiness", failure_threshold=3)
    manager.ensure("uid", spec, "cid", 0, ProbeTarget("cid"))
    assert not manager.started("cid") and not manager.ready("cid")
    for _ in range(100):
        if manager.ready("cid"):
            break
        await real_sleep(0.01)
    assert manager.started("cid") and manager.ready("cid")
    assert prober.calls[:2] == ["startup", "startup"]  # nothing else ran before startup passed
    assert failures == [("Startup", "startup said so")]
    assert changes and set(changes) == {"uid"}
    await manager.close()


async def test_a_failed_liveness_probe_is_reported_and_ends_its_worker(monkeypatch):
    prober = ScriptedProber({"liveness": [F]})
    manager = ProbeManager(prober, lambda uid: None)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s: real_sleep(min(s, 0.01)))
    manager.ensure("uid", probed_container("liveness"), "cid", 0, ProbeTarget("cid"))
    for _ in range(100):
        if manager.liveness_failed("cid"):
            break
        await real_sleep(0.01)
    assert manager.liveness_failed("cid") == LIVENESS
    await real_sleep(0.05)
    assert prober.calls == ["liveness"]  # no further attempts on a container about to be killed
    manager.keep_only("uid", set())
    assert manager.result("cid", LIVENESS) is None
    await manager.close()


async def test_seeded_results_survive_a_restart_of_the_agent():
    manager = ProbeManager(ScriptedProber({"readiness": [F], "startup": [F]}), lambda uid: None)
    manager.ensure("uid", probed_container("startup", "readiness"), "cid", 0, ProbeTarget("cid"),
                   seed={STARTUP: S, READINESS: S})
    assert manager.started("cid") and manager.ready("cid")
    await manager.close()
