"""kubeling's default seccomp profile: allow everything except a deny list.

The denied calls are those Docker's and containerd's default profiles keep
from unprivileged containers: kernel modules and kexec, clocks, mounts and
namespaces, keyrings, tracing of other processes, BPF and perf, swap, reboot,
NUMA policy and a few obsolete calls. They fail with EPERM rather than
killing the process, so programs that probe for them keep working.
"""

from __future__ import annotations

import errno
import platform

DENIED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
    "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
    "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "syslog", "_sysctl", "sysfs", "umount", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
)

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def default_profile() -> dict:
    """The OCI `linux.seccomp` object for RuntimeDefault."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHES.get(platform.machine(), []),
        "syscalls": [{
            "names": list(DENIED_SYSCALLS),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
        }],
    }
