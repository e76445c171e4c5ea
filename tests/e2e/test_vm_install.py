"""deploy/vm/install.sh and deploy/systemd/ as an operator uses them on VMs,
proved on one machine where systemd is not PID 1.

- The unit files pass `systemd-analyze verify` (with /opt/kubeling pointed
  at this checkout, whose .venv exists) and say what the guide promises
  (Restart=on-failure, EnvironmentFile=/etc/kubeling/*.env, ordering,
  KillMode=process and Delegate=yes for the runtime).
- install.sh stages each role into a temporary root (`--root DIR`, which
  implies --no-start and --skip-deps): the project copy, the units, the env
  files with the addresses given, the `enable` links, the client
  configuration; a second run changes nothing; a rerun without options keeps
  the configuration; bad options, a non-root user and a non-Debian system
  are refused with a message and nothing written.
- Two "VMs": a network namespace for the control plane and one for a worker,
  joined by a veth pair (10.250.N.1 and 10.250.N.2, N random, inside these
  namespaces only), each with a mount namespace of its own in which the
  staged root's /opt/kubeling, /var/lib/kubeling and /run/kubeling appear at
  those very paths (/opt, /var/lib and /run are fresh tmpfs there; the host
  sees none of it). Each unit's ExecStart is taken from the staged unit file,
  its EnvironmentFile read and substituted as systemd does ($VAR splits,
  ${VAR} is one word), and that exact command line is started in its VM with
  only that environment (User= honoured for etcd). From the worker: the API
  server answers over the veth, the Node registers and is Ready with a pod
  CIDR, the cluster DNS answers; the test images are imported as install.sh
  does, the README's app is applied with a NodePort Service and answers on
  the worker's address from the control plane's namespace; then the node is
  removed as the guide says (cordon, delete its pods, stop its units, delete
  the Node).

Everything (processes, containers, cgroups, namespaces, state) is removed in
a finally, and checked to be gone.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from node_agent.runtime import linux

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "vm" / "install.sh"
UNITS_DIR = ROOT / "deploy" / "systemd"
VENV = ROOT / ".venv"
KUBELING = VENV / "bin" / "kubeling"
if not KUBELING.exists():
    KUBELING = Path(sys.executable).parent / "kubeling"
PREFIX = "/opt/kubeling"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONTROL_PLANE_UNITS = ["kubeling-etcd", "kubeling-apiserver", "kubeling-controller-manager",
                       "kubeling-scheduler", "kubeling-dns"]
WORKER_UNITS = ["kubeling-network", "kubeling-runtime", "kubeling-node-agent", "kubeling-proxy"]
ALL_UNITS = CONTROL_PLANE_UNITS + WORKER_UNITS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


# ------------------------------------------------------------------ unit files


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values...]}} of a unit file, continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def read_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile= as systemd reads it (comments, quotes, backslashes)."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()), f"{path}: bad line {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\(.)', r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def expand_exec(line: str, env: dict[str, str]) -> list[str]:
    """ExecStart= as systemd expands it: a word `$VAR` becomes the value split at
    whitespace (zero or more words), `${VAR}` is replaced in place (one word)."""
    argv = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def one(unit: dict, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def words(unit: dict, section: str, key: str) -> set[str]:
    return {w for v in unit.get(section, {}).get(key, []) for w in v.split()}


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # /opt/kubeling does not exist on this machine; point the units at this
    # checkout (whose .venv exists) so verify can check the executables too.
    for unit in UNITS_DIR.glob("*.service"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(PREFIX, str(ROOT)))
    names = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(names) == len(ALL_UNITS)
    proc = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_units_say_what_the_guide_promises():
    units = {name: parse_unit((UNITS_DIR / f"{name}.service").read_text()) for name in ALL_UNITS}
    assert {p.stem for p in UNITS_DIR.glob("*.service")} == set(ALL_UNITS)
    for name, unit in units.items():
        assert one(unit, "Service", "Restart") == "on-failure", name
        assert one(unit, "Unit", "StartLimitIntervalSec") == "0", name
        assert one(unit, "Install", "WantedBy") == "multi-user.target", name
        env_file = one(unit, "Service", "EnvironmentFile")
        assert re.fullmatch(r"/etc/kubeling/[a-z-]+\.env", env_file), name
        exec_start = one(unit, "Service", "ExecStart")
        if name != "kubeling-etcd":
            assert exec_start.startswith(f"{PREFIX}/.venv/bin/python -m "), name
            assert one(unit, "Service", "WorkingDirectory") == PREFIX
            assert "PYTHONUNBUFFERED=1" in unit["Service"]["Environment"]
        # Every variable used is written by install.sh into that env file.
        example = ROOT / "deploy" / "vm" / (Path(env_file).name + ".example")
        assert example.exists(), f"{name}: no {example}"
        defined = read_env_file(example)
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", exec_start):
            assert var in defined, f"{name}: ${var} not in {example.name}"
        assert one(unit, "Service", "KillMode") == "process" if name == "kubeling-runtime" \
            else "KillMode" not in unit["Service"], name
    runtime = units["kubeling-runtime"]
    assert one(runtime, "Service", "Delegate") == "yes"
    agent = units["kubeling-node-agent"]
    assert {"kubeling-runtime.service", "kubeling-network.service"} <= words(agent, "Unit", "Requires")
    assert {"kubeling-runtime.service", "kubeling-network.service"} <= words(agent, "Unit", "After")
    assert "kubeling-network.service" in words(runtime, "Unit", "After")
    assert "kubeling-etcd.service" in words(units["kubeling-apiserver"], "Unit", "After")
    for name in ("kubeling-scheduler", "kubeling-controller-manager", "kubeling-dns"):
        assert "kubeling-apiserver.service" in words(units[name], "Unit", "After"), name
    assert one(units["kubeling-etcd"], "Service", "Type") == "notify"
    assert one(units["kubeling-etcd"], "Service", "User") == "etcd"


# ------------------------------------------------------------------ install.sh staging


def install(*args: str, env: dict | None = None, ok: bool = True, user: str | None = None
            ) -> subprocess.CompletedProcess:
    argv = ["bash", str(INSTALL), *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})), cwd="/")
    if ok:
        assert proc.returncode == 0, f"install.sh {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def staged_files(root: Path, prefix: str = PREFIX) -> dict[str, bytes]:
    """The files install.sh wrote under root, but the project copy."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file() and not rel.startswith(prefix.lstrip("/") + "/"):
            out[rel] = p.read_bytes()
    return out


def test_install_stages_control_plane(tmp_path):
    root = tmp_path / "cp"
    out = install("control-plane", "--root", str(root), "--node-ip", "10.250.7.1", "--dns-upstream", "none",
                  "--service-cidr", "10.97.0.0/16", "--pod-cidr", "10.245.0.0/16").stdout
    assert "not started" in out
    etc = root / "etc"
    for name in CONTROL_PLANE_UNITS:
        unit = etc / "systemd" / "system" / f"{name}.service"
        assert unit.read_text() == (UNITS_DIR / f"{name}.service").read_text(), name
        link = etc / "systemd" / "system" / "multi-user.target.wants" / f"{name}.service"
        assert os.readlink(link) == f"/etc/systemd/system/{name}.service"
    assert not (etc / "systemd" / "system" / "kubeling-runtime.service").exists()
    env = read_env_file(etc / "kubeling" / "control-plane.env")
    assert env["KUBELING_API_BIND"] == "10.250.7.1:6443"
    assert env["KUBELING_API_SERVER"] == "10.250.7.1:6443"
    assert env["KUBELING_ADVERTISE_ADDRESS"] == "10.250.7.1"
    assert env["KUBELING_ETCD_SERVERS"] == "127.0.0.1:2379" and env["KUBELING_LOCAL_ETCD"] == "yes"
    assert env["KUBELING_SERVICE_CIDR"] == "10.97.0.0/16"
    assert env["KUBELING_CLUSTER_CIDR"] == "10.245.0.0/16"
    assert env["KUBELING_DNS_LISTEN"] == "10.250.7.1:53"
    assert env["KUBELING_DNS_UPSTREAM_ARGS"] == ""
    etcd = read_env_file(etc / "kubeling" / "etcd.env")
    assert etcd["ETCD_DATA_DIR"] == "/var/lib/kubeling/etcd"
    assert etcd["ETCD_LISTEN_CLIENT_URLS"] == "http://127.0.0.1:2379"
    assert "server: 10.250.7.1:6443" in (etc / "kubeling" / "client.config").read_text()
    assert os.readlink(root / "root" / ".kubeling" / "config") == "/etc/kubeling/client.config"
    assert os.readlink(root / "usr" / "local" / "bin" / "kubeling") == f"{PREFIX}/.venv/bin/kubeling"
    # The project: the source and the generated stubs, not .git, .venv or caches.
    copy = root / PREFIX.lstrip("/")
    for rel in ("pyproject.toml", "deploy/install-deps.sh", "services/apiserver/__main__.py",
                "node_agent/kubelet/__main__.py", "kubeling/api/v1/api_pb2.py", "deploy/images/build.py"):
        assert (copy / rel).is_file(), rel
    assert not (copy / ".git").exists() and not (copy / ".venv").exists()
    assert not list(copy.rglob("__pycache__"))
    assert "revision=" in (copy / ".kubeling-install").read_text()

    # Idempotent: the same run again writes nothing.
    before = staged_files(root)
    again = install("control-plane", "--root", str(root), "--node-ip", "10.250.7.1", "--dns-upstream", "none",
                    "--service-cidr", "10.97.0.0/16", "--pod-cidr", "10.245.0.0/16").stdout
    assert "wrote" not in again, again
    assert staged_files(root) == before
    # No options: the configuration stays (an upgrade).
    install("control-plane", "--root", str(root))
    assert staged_files(root) == before
    # A new address moves what derives from it; an external etcd drops the local one.
    install("control-plane", "--root", str(root), "--node-ip", "10.250.7.9",
            "--etcd-servers", "10.0.0.1:2379,10.0.0.2:2379", "--dns-upstream", "10.0.0.53,10.0.0.54:5353")
    env = read_env_file(etc / "kubeling" / "control-plane.env")
    assert env["KUBELING_API_BIND"] == "10.250.7.9:6443" and env["KUBELING_DNS_LISTEN"] == "10.250.7.9:53"
    assert env["KUBELING_SERVICE_CIDR"] == "10.97.0.0/16"  # kept
    assert env["KUBELING_ETCD_SERVERS"] == "10.0.0.1:2379,10.0.0.2:2379" and env["KUBELING_LOCAL_ETCD"] == "no"
    assert env["KUBELING_DNS_UPSTREAM_ARGS"] == "--upstream 10.0.0.53:53 --upstream 10.0.0.54:5353"
    assert not (etc / "systemd" / "system" / "kubeling-etcd.service").exists()
    assert not (etc / "systemd" / "system" / "multi-user.target.wants" / "kubeling-etcd.service").exists()
    install("control-plane", "--root", str(root))
    assert read_env_file(etc / "kubeling" / "control-plane.env")["KUBELING_LOCAL_ETCD"] == "no"
    install("control-plane", "--root", str(root), "--local-etcd")
    assert (etc / "systemd" / "system" / "kubeling-etcd.service").exists()


def test_install_stages_worker(tmp_path):
    root = tmp_path / "w"
    install("worker", "--root", str(root), "--api-server", "10.250.7.1:6443", "--node-name", "worker-1",
            "--node-ip", "10.250.7.2", "--network-mode", "vxlan", "--prefix", "/srv/kl")
    etc = root / "etc"
    for name in WORKER_UNITS:
        text = (etc / "systemd" / "system" / f"{name}.service").read_text()
        assert text == (UNITS_DIR / f"{name}.service").read_text().replace(PREFIX, "/srv/kl"), name
        assert (etc / "systemd" / "system" / "multi-user.target.wants" / f"{name}.service").is_symlink()
    assert (root / "srv" / "kl" / "services" / "apiserver" / "__main__.py").exists()
    env = read_env_file(etc / "kubeling" / "worker.env")
    assert env["KUBELING_NODE_NAME"] == "worker-1"
    assert env["KUBELING_NODE_IP"] == "10.250.7.2"
    assert env["KUBELING_API_SERVER"] == "10.250.7.1:6443"
    assert env["KUBELING_NETWORK_MODE"] == "vxlan"
    assert env["KUBELING_CLUSTER_CIDR"] == "10.244.0.0/16"
    assert env["KUBELING_CLUSTER_DNS"] == "10.250.7.1"  # the control plane runs the DNS
    assert env["KUBELING_RUNTIME_ENDPOINT"] == "unix:///run/kubeling/runtime.sock"
    assert "server: 10.250.7.1:6443" in (etc / "kubeling" / "client.config").read_text()
    before = staged_files(root, "/srv/kl")
    assert "wrote" not in install("worker", "--root", str(root), "--prefix", "/srv/kl").stdout
    assert staged_files(root, "/srv/kl") == before
    # Edited extra flags survive a rerun that changes something else.
    worker_env = etc / "kubeling" / "worker.env"
    worker_env.write_text(worker_env.read_text().replace(
        "KUBELING_NODE_AGENT_ARGS=", 'KUBELING_NODE_AGENT_ARGS="--node-labels disk=ssd --max-pods 50"'))
    install("worker", "--root", str(root), "--prefix", "/srv/kl", "--network-mode", "host-gw")
    env = read_env_file(worker_env)
    assert env["KUBELING_NETWORK_MODE"] == "host-gw"
    assert env["KUBELING_NODE_AGENT_ARGS"] == "--node-labels disk=ssd --max-pods 50"
    agent = parse_unit((etc / "systemd" / "system" / "kubeling-node-agent.service").read_text())
    argv = expand_exec(one(agent, "Service", "ExecStart"), env)
    assert argv[-4:] == ["--node-labels", "disk=ssd", "--max-pods", "50"]

    # remove takes the files away again; /var/lib/kubeling only with --purge.
    (root / "var" / "lib" / "kubeling" / "runtime").mkdir(parents=True)
    assert "kept /var/lib/kubeling" in install("remove", "--root", str(root), "--prefix", "/srv/kl").stdout
    left = {k for k in staged_files(root, "/srv/kl")}
    assert not left, left
    assert not (root / "srv" / "kl").exists() and (root / "var" / "lib" / "kubeling").exists()
    install("remove", "--root", str(root), "--purge")
    assert not (root / "var" / "lib" / "kubeling").exists()


def test_install_copies_a_new_tree_over_an_old_one(tmp_path):
    """An upgrade: changed and new files arrive, files gone upstream go, the
    virtual environment stays."""
    src = tmp_path / "src"
    src.mkdir()
    sh("sh", "-c", f"tar -C {ROOT} --exclude=./.git --exclude=./.venv --exclude=__pycache__ "
                   f"--exclude=./tests/node/node_modules -cf - . | tar -C {src} -xf -")
    root = tmp_path / "r"
    args = ("worker", "--root", str(root), "--api-server", "10.0.0.1:6443", "--node-name", "w")
    run = lambda: subprocess.run(["bash", str(src / "deploy/vm/install.sh"), *args], capture_output=True,
                                 text=True, timeout=120, check=True).stdout
    run()
    copy = root / PREFIX.lstrip("/")
    (copy / ".venv").mkdir()
    (copy / ".venv" / "marker").write_text("kept")
    assert "up to date" in run()
    (src / "README.md").write_text("new readme\n")
    (src / "NEWFILE").write_text("new\n")
    (src / "Makefile").unlink()
    assert "installed" in run()
    assert (copy / "README.md").read_text() == "new readme\n" and (copy / "NEWFILE").exists()
    assert not (copy / "Makefile").exists()
    assert (copy / ".venv" / "marker").read_text() == "kept"
    assert "up to date" in run()


def test_install_refuses_bad_input_non_root_and_non_debian(tmp_path):
    root = tmp_path / "r"

    def refused(*args, env=None, user=None) -> str:
        proc = install(*args, env=env, ok=False, user=user)
        assert proc.returncode != 0, proc.stdout
        assert not root.exists(), f"install.sh {args} wrote before refusing"
        assert "Traceback" not in proc.stderr
        return proc.stderr

    assert "worker needs --api-server" in refused("worker", "--root", str(root))
    assert "unknown role" in refused("master", "--root", str(root))
    assert "--api-server is an option of the worker role" in refused(
        "control-plane", "--root", str(root), "--api-server", "1.2.3.4:6443")
    assert "not an IPv4 address" in refused("control-plane", "--root", str(root), "--node-ip", "10.0.0.300")
    assert "host-gw or vxlan" in refused("worker", "--root", str(root), "--api-server", "10.0.0.1:6443",
                                         "--network-mode", "flannel")
    assert "DNS-1123" in refused("worker", "--root", str(root), "--api-server", "10.0.0.1:6443",
                                 "--node-name", "Worker_1")
    assert "not a CIDR" in refused("worker", "--root", str(root), "--api-server", "10.0.0.1:6443",
                                   "--pod-cidr", "10.244.0.0")
    fake = tmp_path / "os-release"
    fake.write_text('ID=fedora\nPRETTY_NAME="Fedora Linux 40"\n')
    err = refused("worker", "--root", str(root), "--api-server", "10.0.0.1:6443",
                  env={"KUBELING_OS_RELEASE": str(fake)})
    assert "Debian and Ubuntu only" in err and "Fedora Linux 40" in err
    fake.write_text('ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04"\n')
    install("worker", "--root", str(root), "--api-server", "10.0.0.1:6443", "--node-name", "w",
            env={"KUBELING_OS_RELEASE": str(fake)})
    shutil.rmtree(root)
    os.chmod(tmp_path, 0o755)
    assert "must run as root" in refused("worker", "--root", str(root), "--api-server", "10.0.0.1:6443",
                                         user="65534")


# ------------------------------------------------------------------ VMs in namespaces


def sh(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout: float, what: str, details=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")
        time.sleep(0.2)


class Vm:
    """A machine standing in for a VM: a network namespace, and a mount
    namespace (held by an anchor process) in which /etc, /root and /usr/local
    are copy-on-write overlays of the host's (their changes land in
    <stage>/upper, the host sees none), /opt and /run are empty tmpfs, and
    /var/lib is a tmpfs with <stage>/var/lib/kubeling at /var/lib/kubeling.
    install.sh runs in it as on a VM, at the real paths."""

    OVERLAYS = {"/etc": "etc", "/root": "root", "/usr/local": "usr-local"}

    def __init__(self, name: str, netns: str, stage: Path):
        self.name = name
        self.netns = netns
        self.stage = stage
        self.etc = stage / "upper" / "etc"  # what install.sh wrote to /etc
        self.anchor: subprocess.Popen | None = None
        self.mnt_ns = ""
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = stage / "logs"

    # --- the machine

    def boot(self) -> None:
        lines = ["set -e"]
        for target, name in self.OVERLAYS.items():
            upper, work = self.stage / "upper" / name, self.stage / "work" / name
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            lines.append(f"mount -t overlay vm-{name} -o lowerdir={target},upperdir={upper},workdir={work} {target}")
        for d in ("var/lib/kubeling", "run/kubeling"):
            (self.stage / d).mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        lines += [
            "mount -t tmpfs -o mode=0755 vm-opt /opt",
            # install-deps.sh would make the venv; this checkout's stands in.
            f"mkdir -p {PREFIX}/.venv",
            # Read-only: nothing in the VM may change this checkout's venv.
            f"mount --bind {VENV} {PREFIX}/.venv",
            f"mount -o remount,bind,ro {PREFIX}/.venv",
            "mount -t tmpfs -o mode=0755 vm-var-lib /var/lib",
            "mkdir -p /var/lib/kubeling",
            f"mount --bind {self.stage}/var/lib/kubeling /var/lib/kubeling",
            "mount -t tmpfs -o mode=0755 vm-run /run",
            "echo booted",
            "exec sleep infinity",
        ]
        self.anchor = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "--", "unshare", "--mount", "--propagation", "slave",
             "--", "sh", "-c", "\n".join(lines)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        line = self.anchor.stdout.readline()
        assert line.strip() == "booted", f"{self.name} did not boot: {line}{self.anchor.stderr.read()}"
        self.mnt_ns = os.readlink(f"/proc/{self.anchor.pid}/ns/mnt")

    def install(self, *args: str, path: str = SYSTEMD_PATH) -> str:
        """deploy/vm/install.sh in this VM, as root on a Debian machine."""
        proc = self.run("bash", str(INSTALL), *args, env={"PATH": path}, check=False, timeout=180)
        assert proc.returncode == 0, f"{self.name}: install.sh {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def run(self, *argv: str, env: dict | None = None, timeout: float = 60, check: bool = True,
            cwd: str = "/") -> subprocess.CompletedProcess:
        """A command inside this VM (its mounts and its network)."""
        return sh("nsenter", f"--target={self.anchor.pid}", "--mount", "--net", "--",
                  "sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv, env=env or os.environ, timeout=timeout,
                  check=check)

    # --- units

    def unit(self, name: str) -> dict:
        return parse_unit((self.etc / "systemd" / "system" / f"{name}.service").read_text())

    def command(self, name: str) -> tuple[list[str], dict[str, str], str, str | None]:
        """argv, environment, working directory and user of a unit, as systemd would run it."""
        unit = self.unit(name)
        env = {"PATH": SYSTEMD_PATH}
        for assignment in unit["Service"].get("Environment", []):
            for word in shlex.split(assignment):
                key, _, value = word.partition("=")
                env[key] = value
        for path in unit["Service"].get("EnvironmentFile", []):
            optional = path.startswith("-")
            path = path.lstrip("-")
            assert path.startswith("/etc/kubeling/"), path
            written = self.etc / path.removeprefix("/etc/")
            if written.exists() or not optional:
                env.update(read_env_file(written))
        argv = expand_exec(one(unit, "Service", "ExecStart"), env)
        workdir = unit["Service"].get("WorkingDirectory", ["/"])[0]
        user = unit["Service"].get("User", [None])[0]
        for state in unit["Service"].get("StateDirectory", []):
            d = self.stage / "var" / "lib" / state
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(int(one(unit, "Service", "StateDirectoryMode"), 8)
                    if "StateDirectoryMode" in unit["Service"] else 0o755)
            if user:
                shutil.chown(d, user, user)
        return argv, env, workdir, user

    def start(self, name: str, ready: str | None = None, timeout: float = 45) -> None:
        """Starts the unit's command; waits for READY=1 on $NOTIFY_SOCKET for a
        Type=notify unit (as systemd does), and for `ready` in its log if given."""
        argv, env, workdir, user = self.command(name)
        if user:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
        notify = None
        if self.unit(name)["Service"].get("Type") == ["notify"]:
            path = self.stage / f"{name}.notify"
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(path))
            os.chmod(path, 0o777)
            notify.settimeout(0.2)
            env["NOTIFY_SOCKET"] = str(path)
        log = self.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as f:
            f.write(f"--- {' '.join(argv)}\n".encode())
            f.flush()
            self.procs[name] = subprocess.Popen(
                ["nsenter", f"--target={self.anchor.pid}", "--mount", "--net", "--",
                 "sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv],
                env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        if notify is not None:
            def notified():
                assert self.procs[name].poll() is None, f"{name} exited:\n{self.tail(name)}"
                try:
                    return b"READY=1" in notify.recv(4096)
                except socket.timeout:
                    return False
            try:
                wait_for(notified, timeout, f"{self.name}: {name} to notify READY=1", lambda: self.tail(name))
            finally:
                notify.close()
        if ready:
            def seen():
                assert self.procs[name].poll() is None, f"{name} exited:\n{self.tail(name)}"
                with open(log, "rb") as f:
                    f.seek(offset)
                    return ready.encode() in f.read()
            wait_for(seen, timeout, f"{self.name}: {name} to log {ready!r}", lambda: self.tail(name))

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        # systemd's stop: SIGTERM to the main process (KillMode=process) or to
        # every process of the unit (control-group: here its process group).
        if "KillMode" in self.unit(name)["Service"]:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def tail(self, name: str | None = None, lines: int = 40) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            if name and log.stem != name:
                continue
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {self.name}/{log.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- teardown

    def processes(self) -> list[int]:
        """Every process in this VM's mount namespace (the units and what they started)."""
        ns = self.mnt_ns
        if not ns:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == ns and \
                            Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def describe(self, pids: list[int]) -> str:
        out = []
        for pid in pids:
            try:
                out.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ').decode()[:100]}")
            except OSError:
                pass
        return ", ".join(out)

    def shutdown(self) -> None:
        for name in reversed(list(self.procs)):
            try:
                self.stop(name)
            except Exception:  # noqa: BLE001 - go on with the rest
                pass
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.anchor is not None and self.anchor.poll() is None:
            os.killpg(self.anchor.pid, signal.SIGKILL)
            self.anchor.wait(10)
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def cgroup_pids(root: str) -> list[int]:
    pids = set()
    for top in cgroup_dirs(root):
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    return sorted(pids)


# The runtime's own helpers: every v1 hierarchy (and the hybrid "unified"
# mount on removal), or the one v2 directory.
cgroup_dirs = linux.cgroup_dirs
remove_cgroups = linux.remove_cgroup


# The guide's commands (deploy/README.md, "Removing a node"), for a node
# named worker-2; the test runs them as written.
GUIDE_CORDON = """\
kubeling get node worker-2 -o json \\
  | python3 -c 'import json, sys; n = json.load(sys.stdin); n["spec"]["unschedulable"] = True; print(json.dumps(n))' \\
  | kubeling apply -f -
"""
GUIDE_DRAIN = """\
kubeling get pods -A --field-selector spec.nodeName=worker-2 \\
  | awk 'NR > 1 {print $1, $2}' \\
  | while read -r ns pod; do kubeling delete pod "$pod" -n "$ns" --wait; done
"""
GUIDE_DELETE_NODE = """\
kubeling delete node worker-2
"""
GUIDE_REMOVE = """\
/opt/kubeling/deploy/vm/install.sh remove
"""

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: localhost/kubeling/http:1
        ports:
        - {name: http, containerPort: 8080}
        resources:
          requests: {cpu: 100m, memory: 32Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: http, nodePort: 30080}
"""


@pytest.mark.skipif(not all(shutil.which(t) for t in ("ip", "nsenter", "unshare", "setpriv", "etcd", "runc",
                                                          "conmon", "nft", "busybox")),
                    reason="needs ip, nsenter, unshare, setpriv, etcd, runc, conmon, nft and busybox")
def test_units_run_a_cluster_across_network_namespaces():
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    subnet = random.randint(100, 249)
    cp_ip, worker_ip = f"10.250.{subnet}.1", f"10.250.{subnet}.2"
    cp_ns, worker_ns = f"kvt-cp-{run}", f"kvt-w1-{run}"
    cgroup_root = f"/kubeling-vmtest-{run}"
    node = f"vm-worker-{run}"
    tmp = Path(tempfile.mkdtemp(prefix="kvt-", dir="/tmp"))  # short: unix socket paths live under it
    tmp.chmod(0o755)  # etcd runs as its own user
    cp = Vm("control-plane", cp_ns, tmp / "cp")
    worker = Vm("worker", worker_ns, tmp / "w1")
    made_netns: list[str] = []

    def details() -> str:
        return cp.tail(lines=25) + "\n" + worker.tail(lines=25)

    def kubeling(*args: str, vm: Vm = cp, ok: bool = True, input: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
        """The CLI with the staged client configuration, from inside `vm`'s network."""
        config = vm.etc / "kubeling" / "client.config"
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{vm.netns}", "--", str(KUBELING),
                               "--config", str(config), *args], capture_output=True, text=True,
                              input=input, timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, f"kubeling {' '.join(args)}:\n{proc.stdout}{proc.stderr}\n{details()}"
        return proc

    def get_json(*args: str) -> dict:
        return json.loads(kubeling("get", *args, "-o", "json").stdout)

    try:
        # Two empty "VMs" on a private link.
        for ns in (cp_ns, worker_ns):
            sh("ip", "netns", "add", ns)
            made_netns.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", cp_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", worker_ns)
        for ns, ip in ((cp_ns, cp_ip), (worker_ns, worker_ip)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

        # install.sh on each, as on a VM but for the packages (--skip-deps) and
        # systemd (not PID 1 here: --no-start; it enables the units).
        cp.boot()
        worker.boot()
        out = cp.install("control-plane", "--skip-deps", "--no-start", "--node-ip", cp_ip, "--dns-upstream", "none")
        assert "enabled: kubeling-etcd kubeling-apiserver" in out, out
        out = worker.install("worker", "--skip-deps", "--no-start", "--api-server", f"{cp_ip}:6443",
                             "--node-name", node, "--cgroup-root", cgroup_root)  # its address: from the route
        assert "enabled: kubeling-network kubeling-runtime kubeling-node-agent kubeling-proxy" in out, out
        assert read_env_file(worker.etc / "kubeling" / "worker.env")["KUBELING_NODE_IP"] == worker_ip
        for vm, names in ((cp, CONTROL_PLANE_UNITS), (worker, WORKER_UNITS)):
            for name in names:
                assert (vm.etc / "systemd" / "system" / "multi-user.target.wants" / f"{name}.service").is_symlink()

        # Start the control plane: the units' exact command lines, in unit order.
        cp.start("kubeling-etcd")  # Type=notify: READY=1
        cp.start("kubeling-apiserver", ready=f"apiserver listening on {cp_ip}:6443")
        cp.start("kubeling-controller-manager", ready="controller-manager")
        cp.start("kubeling-scheduler", ready="scheduler")
        cp.start("kubeling-dns", ready=f"dns listening on {cp_ip}:53")

        # The API server answers over the veth, from the worker's network.
        assert "default" in kubeling("get", "namespace", "default", vm=worker).stdout
        # ... and only there: it listens on the control plane's private address.
        host = subprocess.run([str(KUBELING), "--config", str(cp.etc / "kubeling" / "client.config"),
                               "get", "ns"], capture_output=True, text=True, timeout=60)
        assert host.returncode != 0

        # Start the worker.
        worker.start("kubeling-network", ready="listening on")
        worker.start("kubeling-runtime", ready="serving CRI on")
        worker.start("kubeling-node-agent", ready="node agent ready")
        worker.start("kubeling-proxy", ready="proxy started")

        def node_ready():
            n = json.loads(kubeling("get", "node", node, "-o", "json", ok=False).stdout or "{}")
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
            return n if conds.get("Ready") == "True" and n.get("spec", {}).get("podCIDR") else None
        n = wait_for(node_ready, 30, f"node {node} Ready with a pod CIDR", details)
        addresses = {a["type"]: a["address"] for a in n["status"]["addresses"]}
        assert addresses["InternalIP"] == worker_ip
        assert n["spec"]["podCIDR"].startswith("10.244.")

        # The cluster DNS answers the worker (what pods there are told to ask).
        kubernetes_ip = get_json("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
        query = ("import dns.resolver as r; res = r.Resolver(configure=False); "
                 f"res.nameservers = ['{cp_ip}']; "
                 "print(res.resolve('kubernetes.default.svc.cluster.local', 'A')[0].address)")
        answer = sh("nsenter", f"--net=/run/netns/{worker_ns}", "--", str(VENV / "bin" / "python"), "-c", query)
        assert answer.stdout.strip() == kubernetes_ip

        # install.sh again on both, now as on a running systemd (the units are
        # up; a stand-in systemctl records what it is asked): nothing changed,
        # so nothing restarts; it waits for the API server, and on the worker
        # for the runtime, imports the test images into it, and waits for the Node.
        for vm, role in ((cp, "control-plane"), (worker, "worker")):
            fake = vm.stage / "bin" / "systemctl"
            fake.parent.mkdir()
            fake.write_text(f"#!/bin/sh\necho \"$*\" >> {vm.stage}/systemctl.log\nexit 0\n")
            fake.chmod(0o755)
            vm.run("mkdir", "-p", "/run/systemd/system")  # "systemd is running" (the VM's own /run)
            out = vm.install(role, "--skip-deps", path=f"{fake.parent}:{SYSTEMD_PATH}")
            assert "up to date" in out and "wrote" not in out, out
            calls = (vm.stage / "systemctl.log").read_text().splitlines()
            names = CONTROL_PLANE_UNITS if role == "control-plane" else WORKER_UNITS
            assert calls == [f"enable -q {' '.join(n + '.service' for n in names)}", "daemon-reload",
                             *(f"start {n}" for n in names)], calls
        assert f"worker {node} joined the cluster at {cp_ip}:6443" in out, out
        # An upgrade (an older tree installed): the new one is copied and
        # every unit of the role restarts.
        worker.run("sed", "-i", "s/^tree=.*/tree=older/", f"{PREFIX}/.kubeling-install")
        before = len((worker.stage / "systemctl.log").read_text().splitlines())
        out = worker.install("worker", "--skip-deps", path=f"{worker.stage / 'bin'}:{SYSTEMD_PATH}")
        assert f"installed {ROOT} in {PREFIX}" in out, out
        calls = (worker.stage / "systemctl.log").read_text().splitlines()[before:]
        assert [c for c in calls if c.startswith(("start", "restart"))] == [f"restart {n}" for n in WORKER_UNITS]
        images = worker.run(f"{PREFIX}/.venv/bin/kubeling", "images", "ls").stdout
        assert "localhost/kubeling/http" in images and "localhost/kubeling/shell" in images, images

        # The README's app with a NodePort Service, reached on the worker's address.
        kubeling("apply", "-f", "-", input=APP)
        kubeling("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "90s", timeout=120)

        def via_node_port():
            fetch = f"import urllib.request as u; print(u.urlopen('http://{worker_ip}:30080/', timeout=2).read().decode())"
            proc = subprocess.run(["nsenter", f"--net=/run/netns/{cp_ns}", "--", str(VENV / "bin" / "python"), "-c",
                                   fetch], capture_output=True, text=True, timeout=10)
            return proc.returncode == 0 and proc.stdout.strip()
        hostname = wait_for(via_node_port, 30, f"the app on {worker_ip}:30080", details)
        assert hostname.startswith("web-"), hostname
        # kubeling exec (API server -> node agent on the worker's :10250), and
        # from the pod: the cluster DNS on the control plane, the Service's ClusterIP.
        pod = get_json("pods", "-n", "shop")["items"][0]["metadata"]["name"]
        # (busybox wget -T crashes: bounded with timeout instead)
        answer = kubeling("exec", "-n", "shop", pod, "--", "timeout", "10", "wget", "-qO-", "http://web.shop/").stdout
        assert answer.strip().startswith("web-"), answer

        # Restarting the runtime as systemd does with KillMode=process (SIGTERM to
        # its main process only), and the node agent with it (Requires=), keeps
        # every container: same ids, no restart, the app still answers.
        def containers() -> dict[str, list]:
            return {p["metadata"]["name"]: sorted((c["containerID"], c.get("restartCount", 0))
                                                  for c in p["status"]["containerStatuses"])
                    for p in get_json("pods", "-n", "shop")["items"]}
        before = containers()
        conmons = cgroup_pids(cgroup_root)
        worker.stop("kubeling-node-agent")
        worker.stop("kubeling-runtime")
        assert set(conmons) <= set(cgroup_pids(cgroup_root)), "a container process died with the runtime"
        worker.start("kubeling-runtime", ready="serving CRI on")
        worker.start("kubeling-node-agent", ready="node agent ready")
        assert wait_for(via_node_port, 30, "the app after the restart", details).startswith("web-")
        assert containers() == before

        # Remove the node with the guide's commands (deploy/README.md), run as
        # written on the control plane (kubeling from /usr/local/bin, its
        # configuration from ~/.kubeling/config).
        def guide(vm: Vm, script: str, path: str = SYSTEMD_PATH) -> str:
            proc = vm.run("sh", "-ec", script.replace("worker-2", node),
                          env={"PATH": path, "HOME": "/root"}, check=False, timeout=120)
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
                f"{script}\n{proc.stdout}\n{proc.stderr}\n{details()}"
            return proc.stdout
        def flat(text: str) -> str:  # the guide indents its steps' code
            return "\n".join(line.strip() for line in text.splitlines())
        readme = flat((ROOT / "deploy" / "README.md").read_text())
        for script in (GUIDE_CORDON, GUIDE_DRAIN, GUIDE_DELETE_NODE, GUIDE_REMOVE):
            assert flat(script) in readme, f"deploy/README.md no longer says:\n{script}"
        guide(cp, GUIDE_CORDON)
        assert get_json("node", node)["spec"].get("unschedulable") is True
        assert len(get_json("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]) == 2
        # (busybox httpd as PID 1 ignores SIGTERM: a short grace period keeps the test short)
        guide(cp, GUIDE_DRAIN.replace("--wait", "--wait --grace-period 2"))
        assert not get_json("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]
        wait_for(lambda: not cgroup_pids(cgroup_root), 30, "the node's containers to stop", details)
        for name in ("kubeling-node-agent", "kubeling-proxy", "kubeling-runtime", "kubeling-network"):
            worker.stop(name)  # systemctl disable --now, as systemd stops them
        guide(cp, GUIDE_DELETE_NODE)
        assert kubeling("get", "node", node, ok=False).returncode != 0
        # The venv standing in for install-deps.sh's is a mount, which remove
        # refuses to delete through; a real one is a plain directory.
        worker.run("umount", f"{PREFIX}/.venv")
        out = guide(worker, GUIDE_REMOVE, path=f"{worker.stage / 'bin'}:{SYSTEMD_PATH}")
        assert "kubeling removed from this machine" in out, out
        calls = (worker.stage / "systemctl.log").read_text().splitlines()
        assert calls[-2:] == ["disable --now -q " + " ".join(sorted(n + ".service" for n in WORKER_UNITS)),
                              "daemon-reload"], calls
        assert "kubeling0" not in sh("ip", "-n", worker_ns, "link").stdout
        assert "kubeling" not in sh("ip", "netns", "exec", worker_ns, "nft", "list", "tables").stdout
        assert not list((worker.etc / "systemd" / "system").glob("kubeling-*"))
        assert not (worker.etc / "kubeling").exists()
        assert not any(d.exists() for d in cgroup_dirs(cgroup_root))
        # The replacements wait for a node.
        pending = get_json("pods", "-n", "shop")["items"]
        assert pending and all(not p["spec"].get("nodeName") for p in pending)
        for name in cp.procs:
            assert cp.alive(name), f"{name} died:\n{cp.tail(name)}"
        assert time.monotonic() - started < 120, "the VM test should stay under two minutes"
    except BaseException:
        # KVT_PAUSE=SECONDS: after a failure, keep the VMs up that long to look
        # around (their names and paths are written to /tmp/kvt-debug).
        if os.environ.get("KVT_PAUSE"):
            Path("/tmp/kvt-debug").write_text(f"{tmp} {cp_ns} {worker_ns} {cp.anchor.pid} {worker.anchor.pid if worker.anchor else 0} {worker_ip}\n")
            time.sleep(float(os.environ["KVT_PAUSE"]))
        raise
    finally:
        problems = []
        for vm in (worker, cp):
            vm.shutdown()
        for pid in cgroup_pids(cgroup_root):  # containers, if a step above failed
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
        problems += remove_cgroups(cgroup_root)
        for ns in made_netns:
            if sh("ip", "netns", "delete", ns, check=False).returncode != 0:
                problems.append(f"netns {ns}")
        for vm in (worker, cp):
            try:
                wait_for(lambda: not vm.processes(), 10, f"{vm.name}'s processes to end")
            except AssertionError:
                problems.append(f"{vm.name}: processes {vm.describe(vm.processes())}")
        with open("/proc/mounts") as f:
            problems += [f"mount {line.split()[1]}" for line in f if str(tmp) in line]
        shutil.rmtree(tmp, ignore_errors=True)
        assert not problems, "left behind: " + "; ".join(problems)
