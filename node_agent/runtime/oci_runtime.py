"""runc and conmon, as the runtime drives them.

Each container runs under its own conmon, which calls `runc create`, stays
the parent of the container's first process, copies its stdout/stderr into
the CRI log file and writes the exit code to `<exit-dir>/<id>` when it ends.
conmon daemonizes (init becomes its parent), so containers outlive the
runtime service.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from node_agent.runtime.errors import Internal, InvalidArgument


class Runc:
    """runc with its state under one root directory."""

    def __init__(self, root: Path, binary: str = "runc"):
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "--root", str(self.root), *args], capture_output=True,
                              text=True, input=input, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def start(self, cid: str) -> None:
        proc = self._run("start", cid)
        if proc.returncode != 0:
            raise Internal(f"runc start {cid}: {_last_error(proc.stderr)}")

    def kill(self, cid: str, sig: int, all_processes: bool = False) -> bool:
        """Signals the container; False when it is not running (nothing to signal)."""
        args = ["kill"] + (["--all"] if all_processes else []) + [cid, str(sig)]
        proc = self._run(*args)
        if proc.returncode == 0:
            return True
        err = proc.stderr.lower()
        if "not running" in err or "does not exist" in err or "no such process" in err:
            return False
        raise Internal(f"runc kill {cid} {sig}: {_last_error(proc.stderr)}")

    def delete(self, cid: str) -> None:
        """Deletes the container, killing it if needed; idempotent."""
        proc = self._run("delete", "--force", cid)
        if proc.returncode != 0 and "does not exist" not in proc.stderr:
            raise Internal(f"runc delete {cid}: {_last_error(proc.stderr)}")

    def state(self, cid: str) -> dict | None:
        """runc's state of `cid` (status: created, running, paused, stopped) or None."""
        proc = self._run("state", cid)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return None

    def list(self) -> list[dict]:
        proc = self._run("list", "--format", "json")
        if proc.returncode != 0:
            raise Internal(f"runc list: {_last_error(proc.stderr)}")
        return json.loads(proc.stdout or "null") or []

    def update(self, cid: str, resources: dict) -> None:
        proc = self._run("update", "--resources", "-", cid, input=json.dumps(resources))
        if proc.returncode != 0:
            raise InvalidArgument(f"updating resources of {cid}: {_last_error(proc.stderr)}")

    def exec_command(self, cid: str, cmd: list[str], pid_file: Path) -> list[str]:
        return [self.binary, "--root", str(self.root), "exec", "--pid-file", str(pid_file), cid, *cmd]


def _last_error(stderr: str) -> str:
    """runc's error line without its logrus decoration."""
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    if not lines:
        return "failed"
    line = lines[-1]
    for prefix in ("time=", "level="):
        if line.startswith(prefix) and 'msg="' in line:
            line = line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return line


def launch_conmon(*, conmon: str, runc: Runc, cid: str, name: str, bundle: Path, log_path: Path,
                  exit_dir: Path, persist_dir: Path, socket_dir: Path, timeout: float = 30) -> int:
    """Runs conmon, which runs `runc create`; returns the container's pid.

    conmon reports the pid, or runc's error, as one JSON line on the sync
    pipe (`{"data": <pid>, "message": ...}`). A negative pid is a failed
    create; InvalidArgument when the command is not in the image."""
    persist_dir.mkdir(parents=True, exist_ok=True)
    socket_dir.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    args = [conmon, "--api-version", "1", "-c", cid, "-u", cid, "-n", name,
            "-r", runc.binary, "-b", str(bundle),
            "-p", str(bundle / "pidfile"), "-P", str(bundle / "conmon.pid"),
            "-l", f"k8s-file:{log_path}", "--exit-dir", str(exit_dir),
            "--persist-dir", str(persist_dir), "--socket-dir-path", str(socket_dir),
            "--runtime-arg", f"--root={runc.root}", "--log-level", "error"]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(w)}
    try:
        proc = subprocess.Popen(args, pass_fds=(w,), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, cwd=bundle)  # conmon drops its "oom" file in its cwd
    except OSError as e:
        os.close(r)
        os.close(w)
        raise Internal(f"starting conmon: {e}") from None
    os.close(w)
    try:
        # The first conmon process exits once it has forked the one that stays.
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise Internal(f"conmon for {cid} exited {proc.returncode}: {err.decode().strip()}")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Internal(f"conmon for {cid}: no answer from runc create within {timeout:.0f}s")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    try:
        msg = json.loads(data.split(b"\n", 1)[0] or b"{}")
    except ValueError:
        raise Internal(f"conmon for {cid}: unreadable answer {data[:200]!r}") from None
    pid = int(msg.get("data", -1))
    if pid <= 0:
        text = _last_error(msg.get("message", "") or "runc create failed")
        if "executable file not found" in text or "no such file or directory" in text:
            raise InvalidArgument(f"command: {text}")
        raise Internal(f"creating container: {text}")
    return pid


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


SIGNALS = {name: getattr(signal, name) for name in dir(signal)
           if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signal, name), int)}
