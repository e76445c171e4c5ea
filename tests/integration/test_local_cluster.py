"""`kubeling up` / `kubeling down` with a temporary state directory: the
cluster comes up detached, answers, is idempotent, and goes away leaving no
process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBELING = ROOT / ".venv" / "bin" / "kubeling"
if not KUBELING.exists():
    KUBELING = Path(sys.executable).parent / "kubeling"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
def local(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "config"
    env = dict(os.environ, KUBELING_CONFIG=str(config), KUBELING_STATE_DIR=str(state))

    def run(*args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(KUBELING), *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, f"kubeling {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run.state = state
    run.config = config
    return run


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _alive(int(entry)):
            found.append(int(entry))
    return found


def _pids(state: Path) -> dict[str, int]:
    record = json.loads((state / "cluster.json").read_text())
    return {p["name"]: p["pid"] for p in record["processes"]}


def test_up_get_up_again_down(local):
    pids: dict[str, int] = {}
    try:
        up = local("up", "--nodes", "0")
        pids = _pids(local.state)
        assert set(pids) >= {"etcd", "apiserver"}
        assert all(_alive(pid) for pid in pids.values())
        assert "kubeling get nodes" in up.stdout and "kubeling down" in up.stdout
        assert str(local.config) in up.stdout
        server = json.loads((local.state / "cluster.json").read_text())["server"]
        assert local.config.read_text().strip() == f"server: {server}"
        assert (local.state / "logs" / "apiserver.log").exists()
        assert (local.state / "etcd").is_dir()

        ns = local("get", "ns").stdout.splitlines()
        assert ns[0].split() == ["NAME", "STATUS", "AGE"]
        assert "default" in [line.split()[0] for line in ns[1:]]
        local("create", "namespace", "kept")

        again = local("up", "--nodes", "0")
        assert "already running" in again.stdout
        assert _pids(local.state) == pids  # nothing new was started
        assert local("version").stdout.splitlines()[1] == f"Server Address: {server}"
    finally:
        down = local("down", ok=False)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still running after down"
        assert f"{name} (pid {pid}) stopped" in down.stdout
    assert _processes_mentioning(str(local.state)) == []
    assert not (local.state / "cluster.json").exists()
    assert (local.state / "etcd").is_dir()  # data kept without --purge
    assert not local.config.exists()

    nothing = local("down")
    assert "no local cluster is running" in nothing.stdout
    gone = local("get", "ns", ok=False)
    assert gone.returncode == 1 and gone.stderr.startswith("error: no cluster configured")

    # Data survives a restart; --purge removes it.
    try:
        local("up", "--nodes", "0")
        pids = _pids(local.state)
        assert "kept" in local("get", "ns", "kept", "-o", "name").stdout
    finally:
        purge = local("down", "--purge", ok=False)
    assert purge.returncode == 0, purge.stderr
    assert all(not _alive(pid) for pid in pids.values())
    assert not local.state.exists()


def test_up_restarts_a_cluster_whose_processes_died(local):
    pids: dict[str, int] = {}
    try:
        local("up", "--nodes", "0")
        pids = _pids(local.state)
        os.kill(pids["apiserver"], 9)
        for _ in range(100):
            if not _alive(pids["apiserver"]):
                break
            time.sleep(0.05)
        out = local("up", "--nodes", "0")
        assert "not working; restarting it" in out.stderr
        new = _pids(local.state)
        assert new["apiserver"] != pids["apiserver"]
        assert not _alive(pids["etcd"]) or new["etcd"] == pids["etcd"]
        pids.update({f"new-{k}": v for k, v in new.items()})
        local("get", "ns", "default")
    finally:
        local("down", "--purge", ok=False)
    assert all(not _alive(pid) for pid in pids.values())


def test_failed_up_leaves_nothing_running(tmp_path, monkeypatch, capsys):
    """A component that dies at start: up fails with its log tail and stops what it started."""
    from kubeling.cli import cluster, main

    broken = cluster.Component(
        "broken", command=lambda ctx: [sys.executable, "-c", "import sys; print('cannot start: no widgets'); sys.exit(3)"],
        ready=cluster._wait_api, prepare=cluster._pick_api_port)
    monkeypatch.setattr(cluster, "COMPONENTS", [cluster.COMPONENTS[0], broken])
    monkeypatch.setenv("KUBELING_CONFIG", str(tmp_path / "config"))
    state = tmp_path / "state"
    assert main.main(["up", "--nodes", "0", "--state-dir", str(state), "--timeout", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: broken exited before it was ready")
    assert "cannot start: no widgets" in err
    assert "nothing is left running" in err
    assert not (state / "cluster.json").exists()
    assert not (tmp_path / "config").exists()
    etcd_log = (state / "logs" / "etcd.log").read_text()
    assert "starting" in etcd_log
    # the etcd that was started has been stopped
    assert _processes_mentioning(f"--data-dir={state}/etcd") == []
    assert main.main(["down", "--state-dir", str(state)]) == 0
    assert "no local cluster is running" in capsys.readouterr().out
