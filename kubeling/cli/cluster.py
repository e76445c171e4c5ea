"""`kubeling up` and `kubeling down`: a local cluster on this machine.

`up` starts every entry of `COMPONENTS`, in order, each detached in a session
of its own (so it outlives the command), on free loopback ports, with its log
in `<state>/logs/<name>.log`. It waits until each one works, records the
processes in `<state>/cluster.json`, and writes the client configuration.
`down` stops them all, newest first (SIGTERM to the process group, SIGKILL
after a timeout), and removes the record.

To add a component (scheduler, controllers, node agents), append a
`Component` whose `command` builds its argv from the `Context` (which knows
the etcd endpoint and the API server address) and, if it needs one, a
`ready` check. Nothing else changes: `down` stops whatever `up` recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from kubeling.client.api_client import ApiClient
from kubeling.client.errors import ApiError
from kubeling.config import config_path, load_config, save_config, ConfigError

from .common import CliError

STATE_ENV = "KUBELING_STATE_DIR"
RECORD = "cluster.json"
API_READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 25


def default_state_dir() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/kubeling")
    return Path.home() / ".kubeling" / "state"


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    up = sub.add_parser("up", parents=parents, help="start a local cluster on this machine",
                        description="Start a local cluster (etcd and the control plane) in the "
                                    "background and point the client configuration at it.")
    up.add_argument("--state-dir", default=None,
                    help=f"where data, logs and the process record live (default: ${STATE_ENV}, "
                         "/var/lib/kubeling as root, else ~/.kubeling/state)")
    up.add_argument("--timeout", type=float, default=API_READY_TIMEOUT,
                    help="seconds to wait for each component to become ready")
    up.add_argument("--hollow-nodes", type=int, default=0, metavar="N",
                    help="also run N simulated nodes (no containers) for trying the control plane")
    up.set_defaults(run=run_up)
    down = sub.add_parser("down", parents=parents, help="stop the local cluster",
                          description="Stop every process `kubeling up` started.")
    down.add_argument("--state-dir", default=None, help="the state directory `up` used")
    down.add_argument("--purge", action="store_true",
                      help="also delete the state directory (etcd data and logs)")
    down.set_defaults(run=run_down)


# ------------------------------------------------------------------ processes

@dataclass
class Context:
    """What components need to know about each other while starting."""

    state_dir: Path
    timeout: float
    python: str = sys.executable
    etcd_endpoint: str = ""
    api_address: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass
class Process:
    """A started process, as recorded in cluster.json."""

    name: str
    pid: int
    pgid: int
    start_ticks: int  # /proc/<pid>/stat starttime: tells our process from a reused pid
    log: str
    detail: str = ""  # shown by `up`: "127.0.0.1:2379"

    def to_json(self) -> dict:
        return {"name": self.name, "pid": self.pid, "pgid": self.pgid,
                "start_ticks": self.start_ticks, "log": self.log, "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict) -> "Process":
        return cls(str(d["name"]), int(d["pid"]), int(d.get("pgid", d["pid"])),
                   int(d.get("start_ticks", 0)), str(d.get("log", "")), str(d.get("detail", "")))

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        return ticks is not None and (not self.start_ticks or ticks == self.start_ticks)


@dataclass(frozen=True)
class Component:
    """One process of the local cluster.

    Either `start` (a custom starter returning the Process) or `command`
    (argv from the Context; the process is spawned detached with its output
    in `<state>/logs/<name>.log`). `prepare` runs first (pick ports, ...);
    `ready` is awaited after the start and raises StartError on failure.
    """

    name: str
    command: Callable[[Context], list[str]] | None = None
    start: Callable[[Context], Process] | None = None
    prepare: Callable[[Context], None] | None = None
    ready: Callable[[Context, Process], Awaitable[None]] | None = None
    describe: Callable[[Context], str] | None = None
    attempts: int = 3  # tries when it dies at once (a port taken since we picked it)
    enabled: Callable[[Context], bool] | None = None  # None: always started


class StartError(Exception):
    """A component did not start; the message includes its log tail."""


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return None
    if rest[0] == b"Z":
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def _log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def spawn(ctx: Context, name: str, argv: list[str]) -> tuple[subprocess.Popen, Process]:
    """Start argv detached (own session and process group), output to its log."""
    ctx.logs.mkdir(parents=True, exist_ok=True)
    log_path = ctx.log_path(name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "ab", buffering=0) as log:
        log.write(f"--- kubeling up: {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd=str(ctx.state_dir),
                                    env=env)
        except OSError as e:
            raise StartError(f"{name}: cannot run {argv[0]}: {e.strerror}") from None
    ticks = _start_ticks(proc.pid) or 0
    return proc, Process(name, proc.pid, proc.pid, ticks, str(log_path))


# ------------------------------------------------------------------ components

def _start_etcd(ctx: Context) -> Process:
    from kubeling.local.etcd_server import EtcdServer, EtcdStartError

    ctx.logs.mkdir(parents=True, exist_ok=True)
    server = EtcdServer(ctx.state_dir / "etcd", log_path=ctx.log_path("etcd"))
    try:
        server.start(detach=True)
    except EtcdStartError as e:
        raise StartError(f"etcd did not start: {e}") from None
    ctx.etcd_endpoint = server.endpoint
    pid = server.pid
    assert pid is not None
    return Process("etcd", pid, pid, _start_ticks(pid) or 0, str(server.log_path),
                   detail=f"{server.endpoint}, data in {server.data_dir}")


def _pick_api_port(ctx: Context) -> None:
    from kubeling.local.etcd_server import find_free_port

    ctx.api_address = f"127.0.0.1:{find_free_port()}"


def _apiserver_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.apiserver", "--etcd-servers", ctx.etcd_endpoint,
            "--bind", ctx.api_address]


async def api_answers(address: str, timeout: float = 2.0) -> bool:
    """True when the API server at address answers a Get of namespace default."""
    client = ApiClient(address, timeout=timeout)
    try:
        await client.get("namespaces", "default")
        return True
    except ApiError:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _wait_api(ctx: Context, proc: Process) -> None:
    deadline = time.monotonic() + ctx.timeout
    while True:
        if not proc.alive():
            raise StartError(f"{proc.name} exited before it was ready")
        if await api_answers(ctx.api_address):
            return
        if time.monotonic() >= deadline:
            raise StartError(f"{proc.name} did not answer on {ctx.api_address} within {ctx.timeout:.0f}s")
        await asyncio.sleep(0.2)


def _scheduler_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.scheduler", "--server", ctx.api_address]


def _controllers_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "services.controllers", "--server", ctx.api_address]


def _hollow_nodes_command(ctx: Context) -> list[str]:
    return [ctx.python, "-m", "node_agent.hollow", "--server", ctx.api_address,
            "--count", str(ctx.values["hollow_nodes"])]


async def _stays_up(ctx: Context, proc: Process) -> None:
    """A client of the API server is ready when it has not died at start."""
    await asyncio.sleep(0.5)
    if not proc.alive():
        raise StartError(f"{proc.name} exited at start")


# Started in this order, stopped in the reverse order.
COMPONENTS: list[Component] = [
    Component("etcd", start=_start_etcd, attempts=1),
    Component("apiserver", prepare=_pick_api_port, command=_apiserver_command, ready=_wait_api,
              describe=lambda ctx: f"listening on {ctx.api_address}"),
    Component("controller-manager", command=_controllers_command, ready=_stays_up, attempts=1),
    Component("scheduler", command=_scheduler_command, ready=_stays_up, attempts=1),
    Component("hollow-nodes", command=_hollow_nodes_command, ready=_stays_up, attempts=1,
              enabled=lambda ctx: ctx.values.get("hollow_nodes", 0) > 0,
              describe=lambda ctx: f"{ctx.values['hollow_nodes']} simulated nodes"),
]


# ------------------------------------------------------------------ state

@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state directory."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another kubeling up/down on {state_dir} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_record(state_dir: Path) -> dict | None:
    path = state_dir / RECORD
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CliError(f"{path} is unreadable ({e}); remove it after checking no cluster "
                       f"processes are left running") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list):
        raise CliError(f"{path} is not a kubeling cluster record")
    return data


def _write_record(state_dir: Path, record: dict) -> None:
    path = state_dir / RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _state_dir(args: argparse.Namespace) -> Path:
    return (Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()).absolute()


# ------------------------------------------------------------------ stopping

def stop_process(p: Process, timeout: float = STOP_TIMEOUT) -> str:
    """SIGTERM the process group, SIGKILL after `timeout`. Returns what happened."""
    if not p.alive():
        return "was not running"
    group = p.pgid if p.pgid > 1 and _pgid(p.pid) == p.pgid else None

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group is not None:
                os.killpg(group, sig)
            else:
                os.kill(p.pid, sig)

    send(signal.SIGTERM)
    if _wait_gone(p, group, timeout):
        return "stopped"
    send(signal.SIGKILL)
    _wait_gone(p, group, 5.0)
    return "killed (it did not stop within %ds of SIGTERM)" % timeout


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _group_alive(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if rest[0] != b"Z" and int(rest[2]) == pgid:
            return True
    return False


def _wait_gone(p: Process, group: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)
        if not p.alive() and (group is None or not _group_alive(group)):
            return True
        time.sleep(0.05)
    return False


def _stop_all(processes: list[Process], report: bool) -> None:
    for p in reversed(processes):
        outcome = stop_process(p)
        if report:
            print(f"{p.name} (pid {p.pid}) {outcome}", flush=True)


# ------------------------------------------------------------------ up

async def run_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    config_file = config_path(args.config)
    with _locked(state_dir):
        record = _read_record(state_dir)
        if record is not None:
            processes = [Process.from_json(p) for p in record["processes"]]
            server = record.get("server", "")
            if (processes and all(p.alive() for p in processes) and server
                    and await api_answers(server)):
                save_config(server=server, path=config_file)
                print(f"a local cluster from {state_dir} is already running; "
                      f"API server at {server}")
                print(f"client configuration: {config_file}")
                return 0
            print(f"found a local cluster in {state_dir} that is not working; restarting it",
                  file=sys.stderr)
            _stop_all(processes, report=False)
            (state_dir / RECORD).unlink(missing_ok=True)

        ctx = Context(state_dir=state_dir, timeout=args.timeout)
        if args.hollow_nodes < 0:
            raise CliError("--hollow-nodes must be 0 or more")
        ctx.values["hollow_nodes"] = args.hollow_nodes
        ctx.logs.mkdir(parents=True, exist_ok=True)
        record = {"state_dir": str(state_dir), "server": "", "config": str(config_file),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "processes": []}
        started: list[Process] = []
        try:
            for component in COMPONENTS:
                if component.enabled is not None and not component.enabled(ctx):
                    continue
                proc = await _start_component(ctx, component)
                started.append(proc)
                record["processes"] = [p.to_json() for p in started]
                record["server"] = ctx.api_address
                _write_record(state_dir, record)
                detail = component.describe(ctx) if component.describe else proc.detail
                print(f"{component.name} started (pid {proc.pid}{', ' + detail if detail else ''})",
                      flush=True)
        except BaseException as e:
            _stop_all(started, report=False)
            (state_dir / RECORD).unlink(missing_ok=True)
            if isinstance(e, StartError):
                raise CliError(f"{e}\n(nothing is left running; logs are in {ctx.logs})") from None
            raise
        path = save_config(server=ctx.api_address, path=config_file)
    print()
    print(f"kubeling is running: API server at {ctx.api_address}")
    print(f"  state (etcd data, logs):  {state_dir}")
    print(f"  client configuration:     {path}")
    print()
    print("Try:")
    print("  kubeling get nodes")
    print("  kubeling apply -f app.yaml")
    print("  kubeling down            # stop it (add --purge to delete its data)")
    return 0


async def _start_component(ctx: Context, component: Component) -> Process:
    last_error = None
    for attempt in range(max(1, component.attempts)):
        if component.prepare is not None:
            component.prepare(ctx)
        if component.start is not None:
            proc = await asyncio.to_thread(component.start, ctx)
            popen = None
        else:
            assert component.command is not None
            popen, proc = spawn(ctx, component.name, component.command(ctx))
        try:
            if component.ready is not None:
                await component.ready(ctx, proc)
            return proc
        except StartError as e:
            stop_process(proc, timeout=3.0)
            if popen is not None:
                with contextlib.suppress(Exception):
                    popen.wait(1)
            tail = _log_tail(proc.log)
            last_error = StartError(f"{e}\n--- tail of {proc.log}:\n{tail}")
            if "address already in use" not in tail.lower() and "failed to bind" not in tail.lower():
                break
        except BaseException:
            stop_process(proc, timeout=3.0)
            raise
    assert last_error is not None
    raise last_error


# ------------------------------------------------------------------ down

async def run_down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if not state_dir.exists():
        print(f"no local cluster is running (no state in {state_dir})")
        return 0
    with _locked(state_dir):
        record = _read_record(state_dir)
        if record is None:
            print(f"no local cluster is running (state dir {state_dir})")
        else:
            processes = [Process.from_json(p) for p in record["processes"]]
            _stop_all(processes, report=True)
            (state_dir / RECORD).unlink(missing_ok=True)
            _forget_config(record)
        if args.purge:
            shutil.rmtree(state_dir, ignore_errors=True)
            print(f"deleted {state_dir}")
        elif record is not None:
            print(f"data kept in {state_dir} (use --purge to delete it)")
    return 0


def _forget_config(record: dict) -> None:
    """Remove the client configuration `up` wrote, if it still names this cluster."""
    path = record.get("config")
    server = record.get("server")
    if not path or not server:
        return
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    if cfg.server == server:
        with contextlib.suppress(OSError):
            Path(path).unlink()
            print(f"removed client configuration {path}")
