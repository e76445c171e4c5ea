"""Run a real single-member etcd server on loopback.

Test fixtures use it to get a throwaway etcd; ``kubeling up`` uses it with
``detach=True`` so the server outlives the command that started it.

The server is the Debian ``etcd`` binary (3.4). Compaction is left manual
(``--auto-compaction-retention=0``) so tests and the apiserver decide when
history goes away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Optional

__all__ = ["EtcdServer", "EtcdStartError", "find_free_port", "terminate_pid"]

ETCD_BINARY = "etcd"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 3


class EtcdStartError(RuntimeError):
    """etcd did not start or did not become healthy; the message carries its log tail."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def terminate_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process we may not be the parent of (e.g. a detached etcd).

    Sends SIGTERM, waits up to ``timeout`` seconds, then SIGKILL. Returns
    quietly if the process is already gone. Idempotent.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    # Reap it if it is our child; otherwise look at /proc (a zombie counts as gone).
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (Linux /proc).

    Where /proc cannot tell, assume it does.
    """
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    listening = state == "0A" and inode in inodes
                    if listening and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return False


class EtcdServer:
    """A single-member etcd on ``host`` with its data in ``data_dir``.

    Ports default to free loopback ports picked at the first ``start()`` and
    kept afterwards, so ``stop()`` then ``start()`` restarts the same member
    on the same endpoint with the same data (useful to test reconnects).

    The log (etcd's stdout and stderr) goes to ``log_path``, by default
    ``<data_dir>.log`` next to the data directory. Nothing here deletes
    ``data_dir``: the caller owns it.

    Usage::

        with EtcdServer(tmp / "etcd") as etcd:
            storage = Storage([etcd.endpoint])
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        host: str = "127.0.0.1",
        client_port: Optional[int] = None,
        peer_port: Optional[int] = None,
        log_path: Optional[str | os.PathLike] = None,
        *,
        name: str = "kubeling",
        binary: str = ETCD_BINARY,
        start_timeout: float = START_TIMEOUT,
        extra_args: tuple[str, ...] = (),
    ):
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        # Ports the caller chose are kept; the others are picked at start.
        self._auto_client_port = client_port is None
        self._auto_peer_port = peer_port is None
        self.log_path = os.path.abspath(
            os.fspath(log_path) if log_path is not None else self.data_dir.rstrip("/") + ".log"
        )
        self.name = name
        self.binary = binary
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self._proc: Optional[subprocess.Popen] = None

    # -- properties -------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL, the form ``Storage`` takes."""
        if self.client_port is None:
            raise RuntimeError("etcd has not been started yet")
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        if self.peer_port is None:
            raise RuntimeError("etcd has not been started yet")
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------

    def start(self, detach: bool = False) -> "EtcdServer":
        """Start etcd and wait (up to ``start_timeout`` s) until it is healthy.

        With ``detach=True`` the server runs in a session of its own, so it
        survives the exit of this process (``kubeling up``); stop it later
        with ``stop()`` or ``terminate_pid(pid)``. Without it, the server is
        tied to this process: it gets SIGTERM if the thread that started it
        dies (via ``setpriv --pdeathsig`` when available), so a killed test
        run does not leave etcd behind.

        Raises ``EtcdStartError`` with the tail of the etcd log on failure;
        the half-started process is killed first. Calling ``start()`` on a
        running server is an error.
        """
        if self.running:
            raise RuntimeError(f"etcd is already running (pid {self.pid})")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)

        for attempt in range(_PORT_ATTEMPTS):
            repick = attempt > 0
            if self.client_port is None or (repick and self._auto_client_port):
                self.client_port = find_free_port(self.host)
            if self.peer_port is None or (repick and self._auto_peer_port):
                self.peer_port = find_free_port(self.host)
                while self.peer_port == self.client_port:
                    self.peer_port = find_free_port(self.host)
            # A port in use would let another etcd answer our health check.
            busy = [p for p in (self.client_port, self.peer_port) if not _port_free(self.host, p)]
            if busy:
                if attempt + 1 < _PORT_ATTEMPTS and all(
                    (p == self.client_port and self._auto_client_port)
                    or (p == self.peer_port and self._auto_peer_port)
                    for p in busy
                ):
                    continue
                raise EtcdStartError(
                    f"cannot start etcd: port(s) {busy} on {self.host} already in use"
                )
            log_offset = self._log_size()
            self._spawn(detach)
            try:
                self._wait_healthy()
                return self
            except EtcdStartError as error:
                self._kill()
                # Free ports are only free "a moment ago": someone may have
                # taken one. Pick new ones and try again.
                if (
                    (self._auto_client_port or self._auto_peer_port)
                    and attempt + 1 < _PORT_ATTEMPTS
                    and "address already in use" in self._log_since(log_offset)
                ):
                    continue
                raise error
        raise EtcdStartError(f"cannot start etcd: no free ports on {self.host}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop etcd: SIGTERM, wait up to ``timeout`` s, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> "EtcdServer":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        port = self.client_port if self.client_port is not None else "?"
        return f"EtcdServer({self.host}:{port}, {state}, data_dir={self.data_dir!r})"

    # -- internals --------------------------------------------------------

    def command(self) -> list[str]:
        """The etcd command line (without any wrapper)."""
        client_url = self.client_url
        peer_url = self.peer_url
        return [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={self.name}={peer_url}",
            "--initial-cluster-state=new",
            # Compaction is manual: the apiserver (and tests) decide.
            "--auto-compaction-retention=0",
            "--logger=zap",
            "--log-outputs=stderr",
            *self.extra_args,
        ]

    def _spawn(self, detach: bool) -> None:
        argv = self.command()
        if shutil.which(self.binary) is None and not os.path.exists(self.binary):
            raise EtcdStartError(f"etcd binary {self.binary!r} not found (install etcd-server)")
        if not detach:
            setpriv = shutil.which("setpriv")
            if setpriv is not None and threading.current_thread() is threading.main_thread():
                argv = [setpriv, "--pdeathsig=TERM", "--", *argv]
        with open(self.log_path, "ab", buffering=0) as log:
            log.write(f"--- kubeling: starting {' '.join(argv)}\n".encode())
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=detach,
                close_fds=True,
            )

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.client_url}/health"
        last_problem = "no answer yet"
        while True:
            code = self._proc.poll() if self._proc is not None else -1
            if code is not None:
                raise EtcdStartError(
                    f"etcd exited with code {code} before becoming healthy on {self.endpoint}"
                    f"\n--- tail of {self.log_path}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    body = json.loads(response.read() or b"{}")
                if str(body.get("health")).lower() == "true":
                    if _listens_on(self._proc.pid, self.client_port):
                        return
                    last_problem = f"another process answers on port {self.client_port}"
                else:
                    last_problem = f"/health answered {body}"
            except (OSError, ValueError, urllib.error.URLError) as error:
                last_problem = str(error)
            if time.monotonic() >= deadline:
                raise EtcdStartError(
                    f"etcd on {self.endpoint} not healthy after {self.start_timeout:.0f}s"
                    f" ({last_problem})\n--- tail of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError as error:
            return f"(log unreadable: {error})"
        return "\n".join(text.splitlines()[-lines:])
