"""Liveness, readiness and startup probes, as the kubelet runs them.

One worker (an asyncio task) per probe of each running container. It waits
`initialDelaySeconds` from the container's start, then probes every
`periodSeconds` with `timeoutSeconds`:

- exec: ExecSync through the runtime; exit code 0 is success.
- httpGet: a GET to host (default: the pod IP) : port (a number or a named
  container port) + path; a status from 200 to 399 is success. HTTPS is
  not verified, as in Kubernetes.
- tcpSocket: a TCP connection that opens is success.

Where the connection starts from: pods are reachable from their node's
network namespace, but the node agent may run elsewhere (in the host's
namespace while its node is a network namespace of its own, as in
`kubeling up` on one machine). So when the sandbox's network namespace is
known (the runtime reports it in PodSandboxStatus' verbose info), the probe
socket is created inside it, by a short-lived thread that enters it with
setns(2) (which changes only that thread); the pod's own IP is reachable
there. Otherwise the socket is made in the agent's own namespace.

`ProbeState` turns attempts into a result with successThreshold and
failureThreshold: the result flips only after that many consecutive
attempts agree. Initial results: readiness Failure (not ready until a probe
passes), liveness Success, startup Unknown. Until a startup probe has
passed, liveness and readiness probes do not run. A liveness or startup
failure is final for that container (the pod sync kills it; its
replacement gets a fresh worker). An attempt that could not be made (the
container stopped meanwhile, the runtime was unreachable) counts for
nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from google.protobuf.message import Message

from node_agent.kubelet.cri_client import CriDeadlineExceeded, CriError, RuntimeClient

log = logging.getLogger(__name__)

SUCCESS, FAILURE, UNKNOWN = "Success", "Failure", "Unknown"
LIVENESS, READINESS, STARTUP = "Liveness", "Readiness", "Startup"
KINDS = ((STARTUP, "startup_probe"), (LIVENESS, "liveness_probe"), (READINESS, "readiness_probe"))
INITIAL = {LIVENESS: SUCCESS, READINESS: FAILURE, STARTUP: UNKNOWN}
USER_AGENT = "kube-probe/kubeling"
_MAX_BODY = 10 * 1024


class ProbeState:
    """Consecutive-attempt thresholds of one probe. Pure."""

    def __init__(self, kind: str, success_threshold: int = 1, failure_threshold: int = 3,
                 initial: str | None = None):
        self.kind = kind
        self.success_threshold = max(1, success_threshold)
        self.failure_threshold = max(1, failure_threshold)
        self.result = initial or INITIAL[kind]
        self._last: str | None = None
        self._run = 0

    def observe(self, outcome: str) -> bool:
        """Fold in one attempt (SUCCESS / FAILURE; UNKNOWN is ignored).
        True when the probe's result changed."""
        if outcome not in (SUCCESS, FAILURE):
            return False
        if outcome == self._last:
            self._run += 1
        else:
            self._last, self._run = outcome, 1
        needed = self.failure_threshold if outcome == FAILURE else self.success_threshold
        if self._run < needed:
            return False
        changed = outcome != self.result
        self.result = outcome
        return changed

    @property
    def final(self) -> bool:
        """Nothing more to probe: a failed liveness or startup probe, a passed startup probe."""
        if self.kind == LIVENESS:
            return self.result == FAILURE
        if self.kind == STARTUP:
            return self.result in (SUCCESS, FAILURE)
        return False


# ---- sockets in a network namespace ----------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in_netns(netns: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A non-blocking TCP socket created inside the network namespace at path
    `netns` (None or "": the caller's own). Raises OSError."""
    if not netns:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        return s
    box: dict = {}

    def target() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            box["sock"] = s
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    # A thread of its own that ends right after: the namespace switch never
    # leaks to a thread anything else uses.
    t = threading.Thread(target=target, name="probe-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


async def _connect(host: str, port: int, netns: str | None, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = await asyncio.to_thread(socket_in_netns, netns, family)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _os_error(e: OSError) -> str:
    """"connection refused", as Go words it."""
    return os.strerror(e.errno).lower() if e.errno else str(e)


def resolve_port(port_value: Message, container: Message) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if port_value.HasField("number_value"):
        return int(port_value.number_value)
    text = port_value.string_value
    if text.isdigit():
        return int(text)
    for p in container.ports:
        if p.name == text:
            return p.container_port
    raise ValueError(f"port {text!r} is not a named port of container {container.name}")


async def http_get(host: str, port: int, path: str, scheme: str, headers: list[tuple[str, str]],
                   netns: str | None, timeout: float) -> tuple[str, str]:
    """(outcome, message) of one HTTP GET."""
    target = f"{scheme.lower()}://{host}:{port}{path}"
    deadline = time.monotonic() + timeout
    try:
        sock = await _connect(host, port, netns, timeout)
    except asyncio.TimeoutError:
        return FAILURE, f'Get "{target}": dial tcp {host}:{port}: i/o timeout'
    except OSError as e:
        return FAILURE, f'Get "{target}": dial tcp {host}:{port}: connect: {_os_error(e)}'
    writer = None
    try:
        ctx = None
        if scheme.upper() == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        left = max(0.01, deadline - time.monotonic())
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=host if ctx else None), left)
        names = {k.lower() for k, _ in headers}
        lines = [f"GET {path or '/'} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host}:{port}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept" not in names:
            lines.append("Accept: */*")
        lines += [f"{k}: {v}" for k, v in headers] + ["Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        await writer.drain()
        left = max(0.01, deadline - time.monotonic())
        status_line = await asyncio.wait_for(reader.readline(), left)
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return FAILURE, f'Get "{target}": malformed HTTP response {status_line[:80]!r}'
        code = int(parts[1])
        if 200 <= code < 400:
            return SUCCESS, ""
        body = b""
        try:
            left = max(0.01, deadline - time.monotonic())
            rest = await asyncio.wait_for(reader.read(_MAX_BODY + 4096), left)
            body = rest.split(b"\r\n\r\n", 1)[-1][:_MAX_BODY]
        except (asyncio.TimeoutError, OSError):
            pass
        return FAILURE, f"HTTP probe failed with statuscode: {code}" + \
            (f": {body.decode('utf-8', 'replace').strip()}" if body.strip() else "")
    except asyncio.TimeoutError:
        return FAILURE, f'Get "{target}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as e:
        return FAILURE, f'Get "{target}": {e}'
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()


async def tcp_check(host: str, port: int, netns: str | None, timeout: float) -> tuple[str, str]:
    try:
        sock = await _connect(host, port, netns, timeout)
    except asyncio.TimeoutError:
        return FAILURE, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as e:
        return FAILURE, f"dial tcp {host}:{port}: connect: {_os_error(e)}"
    sock.close()
    return SUCCESS, ""


@dataclass
class ProbeTarget:
    """Where a container's probes go."""

    container_id: str
    pod_ip: str = ""
    netns: str | None = None  # the sandbox's network namespace, when known


class Prober:
    """Runs one attempt of a probe (or of a lifecycle handler)."""

    def __init__(self, runtime: RuntimeClient):
        self.runtime = runtime

    async def run(self, handler: Message, container: Message, target: ProbeTarget,
                  timeout: float) -> tuple[str, str]:
        """(SUCCESS / FAILURE / UNKNOWN, message). `handler` is a Probe or a LifecycleHandler."""
        try:
            if handler.HasField("exec"):
                return await self._exec(list(handler.exec.command), target.container_id, timeout)
            if handler.HasField("http_get"):
                h = handler.http_get
                port = resolve_port(h.port, container)
                host = h.host or target.pod_ip or "127.0.0.1"
                return await http_get(host, port, h.path or "/", h.scheme or "HTTP",
                                      [(x.name, x.value) for x in h.http_headers], target.netns, timeout)
            if handler.HasField("tcp_socket"):
                t = handler.tcp_socket
                port = resolve_port(t.port, container)
                return await tcp_check(t.host or target.pod_ip or "127.0.0.1", port, target.netns, timeout)
        except ValueError as e:
            return FAILURE, str(e)
        except OSError as e:
            return UNKNOWN, f"probe could not be made: {e}"
        return UNKNOWN, "the probe has no handler"

    async def _exec(self, cmd: list[str], container_id: str, timeout: float) -> tuple[str, str]:
        if not cmd:
            return FAILURE, "exec probe has no command"
        try:
            resp = await self.runtime.exec_sync(container_id, cmd, max(1, int(round(timeout))))
        except CriDeadlineExceeded:
            return FAILURE, f"command {cmd!r} timed out"
        except CriError as e:
            return UNKNOWN, str(e)
        if resp.exit_code == 0:
            return SUCCESS, ""
        output = (resp.stdout + resp.stderr).decode("utf-8", "replace").strip()
        return FAILURE, output or f"command {cmd!r} exited with {resp.exit_code}"


# ---- workers ------------------------------------------------------------------------------

@dataclass
class _Worker:
    uid: str
    container_name: str
    kind: str
    state: ProbeState
    task: asyncio.Task | None = None


@dataclass
class _ContainerProbes:
    uid: str
    container_id: str
    workers: dict[str, _Worker] = field(default_factory=dict)


ProbeEvent = Callable[[str, str, str, str], Awaitable[None]]  # (uid, container, kind, message)


class ProbeManager:
    """Probe workers of every running container, and their current results.

    `on_change(uid)` is called whenever a result flips (the pod worker then
    syncs the pod); `on_failure(uid, container name, kind, message)` for
    each failed attempt (an Unhealthy event).
    """

    def __init__(self, prober: Prober, on_change: Callable[[str], None],
                 on_failure: ProbeEvent | None = None, clock: Callable[[], float] = time.time):
        self.prober = prober
        self.on_change = on_change
        self.on_failure = on_failure
        self.clock = clock
        self._containers: dict[str, _ContainerProbes] = {}  # container id ->

    # --- results ---

    def result(self, container_id: str, kind: str) -> str | None:
        """The probe's current result; None when the container has no such probe."""
        cp = self._containers.get(container_id)
        w = cp.workers.get(kind) if cp else None
        return w.state.result if w else None

    def started(self, container_id: str) -> bool:
        """Whether the container has passed its startup probe (True when it has none)."""
        r = self.result(container_id, STARTUP)
        return r is None or r == SUCCESS

    def ready(self, container_id: str) -> bool:
        """Readiness: started, and the readiness probe (if any) passes."""
        if not self.started(container_id):
            return False
        r = self.result(container_id, READINESS)
        return r is None or r == SUCCESS

    def liveness_failed(self, container_id: str) -> str | None:
        """"Liveness" or "Startup" when that probe has failed for the container."""
        if self.result(container_id, STARTUP) == FAILURE:
            return STARTUP
        if self.result(container_id, LIVENESS) == FAILURE:
            return LIVENESS
        return None

    # --- workers ---

    def ensure(self, uid: str, spec: Message, container_id: str, started_at_ns: int,
               target: ProbeTarget, seed: dict[str, str] | None = None) -> None:
        """Start the workers of a running container's probes (once).
        `seed` gives initial results (kind -> result) for a container adopted
        after a restart of the node agent, from the pod's last status."""
        if container_id in self._containers:
            return
        cp = _ContainerProbes(uid, container_id)
        self._containers[container_id] = cp
        for kind, attr in KINDS:
            if not spec.HasField(attr):
                continue
            probe = getattr(spec, attr)
            state = ProbeState(kind, probe.success_threshold or 1, probe.failure_threshold or 3,
                               (seed or {}).get(kind))
            w = _Worker(uid, spec.name, kind, state)
            cp.workers[kind] = w
            if not state.final:
                w.task = asyncio.create_task(self._run(w, cp, probe, spec, started_at_ns, target),
                                             name=f"probe-{kind}-{spec.name}-{container_id[:12]}")

    def containers_of(self, uid: str) -> list[str]:
        return [cid for cid, cp in self._containers.items() if cp.uid == uid]

    def remove(self, container_id: str) -> None:
        cp = self._containers.pop(container_id, None)
        if cp:
            for w in cp.workers.values():
                if w.task:
                    w.task.cancel()

    def keep_only(self, uid: str, container_ids: set[str]) -> None:
        """Stop the workers of the pod's containers that are not in `container_ids`."""
        for cid in self.containers_of(uid):
            if cid not in container_ids:
                self.remove(cid)

    def remove_pod(self, uid: str) -> None:
        self.keep_only(uid, set())

    async def close(self) -> None:
        tasks = [w.task for cp in self._containers.values() for w in cp.workers.values() if w.task]
        self._containers.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, w: _Worker, cp: _ContainerProbes, probe: Message, spec: Message,
                   started_at_ns: int, target: ProbeTarget) -> None:
        period = max(1, probe.period_seconds or 10)
        timeout = max(1, probe.timeout_seconds or 1)
        try:
            delay = probe.initial_delay_seconds - (self.clock() - started_at_ns / 1e9)
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                if w.kind == STARTUP or self.started(cp.container_id):
                    outcome, message = await self.prober.run(probe, spec, target, timeout)
                    if self._containers.get(cp.container_id) is not cp:
                        return  # removed while probing
                    if outcome == FAILURE and self.on_failure is not None:
                        asyncio.create_task(self.on_failure(w.uid, w.container_name, w.kind, message))
                    if outcome == UNKNOWN:
                        log.debug("%s probe of %s: %s", w.kind, w.container_name, message)
                    if w.state.observe(outcome):
                        log.info("%s probe of %s (%s): %s", w.kind, w.container_name,
                                 cp.container_id[:12], w.state.result)
                        self.on_change(w.uid)
                    if w.state.final:
                        return
                await asyncio.sleep(period)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a probe bug must not kill the agent
            log.exception("%s probe worker of %s failed", w.kind, w.container_name)
