"""CRI configurations from the pod spec: PodSandboxConfig and ContainerConfig.

Pure functions; what they put where:

- Identity: sandbox metadata (name, uid, namespace, attempt) and container
  metadata (name, attempt = the restart count); CRI labels from
  `runtime_pods` so the node agent can find everything again after a
  restart; the pod's own labels and annotations on the sandbox.
- Logs: the sandbox's log_directory is given by the caller (one directory
  per pod under the node agent's state dir); each container logs to
  `<container name>/<attempt>.log` below it, as Kubernetes lays out
  /var/log/pods.
- DNS: dnsPolicy ClusterFirst with a cluster DNS server configured gives
  that server and the `<ns>.svc.<domain>` search path with ndots:5;
  otherwise (Default, or no cluster DNS) the node's resolv.conf.
- Resources: CPU limit -> CFS quota (period 100 ms), CPU request -> shares,
  memory limit -> memory limit, QoS class -> OOM score adjustment, as the
  kubelet computes them.
- Security: runAsUser / runAsGroup (container over pod), read-only root
  filesystem, capabilities, privileged (passed on; kubeling's runtime
  refuses it), allowPrivilegeEscalation: false -> no_new_privs.
"""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from kubeling.cri.v1 import api_pb2
from kubeling.quantity import QuantityError, parse_quantity
from node_agent.kubelet import runtime_pods as rl

CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1000
MIN_SHARES = 2
GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000


def container_hash(container: Message) -> str:
    """A stable hash of the container's spec; a change (a new image) restarts it."""
    return hashlib.sha256(container.SerializeToString(deterministic=True)).hexdigest()[:16]


def hostname(pod: Message) -> str:
    return (pod.spec.hostname or pod.metadata.name)[:63].rstrip("-.")


def pod_labels(pod: Message) -> dict[str, str]:
    return {rl.POD_NAME: pod.metadata.name, rl.POD_NAMESPACE: pod.metadata.namespace,
            rl.POD_UID: pod.metadata.uid}


def dns_config(pod: Message, cluster_dns: list[str], cluster_domain: str) -> api_pb2.DNSConfig | None:
    policy = pod.spec.dns_policy or "ClusterFirst"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster_dns:
        ns = pod.metadata.namespace
        return api_pb2.DNSConfig(servers=cluster_dns,
                                 searches=[f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain],
                                 options=["ndots:5"])
    return None


def port_mappings(pod: Message) -> list[api_pb2.PortMapping]:
    out = []
    for c in pod.spec.containers:
        for p in c.ports:
            if p.host_port:
                proto = {"UDP": api_pb2.UDP, "SCTP": api_pb2.SCTP}.get(p.protocol.upper(), api_pb2.TCP)
                out.append(api_pb2.PortMapping(protocol=proto, container_port=p.container_port,
                                               host_port=p.host_port, host_ip=p.host_ip))
    return out


def sandbox_config(pod: Message, attempt: int, log_directory: str, cgroup_parent: str = "",
                   cluster_dns: list[str] | None = None, cluster_domain: str = "cluster.local") -> api_pb2.PodSandboxConfig:
    md = pod.metadata
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=md.name, uid=md.uid, namespace=md.namespace, attempt=attempt),
        hostname=hostname(pod), log_directory=log_directory, port_mappings=port_mappings(pod))
    dns = dns_config(pod, cluster_dns or [], cluster_domain)
    if dns is not None:
        cfg.dns_config.CopyFrom(dns)
    cfg.labels.update(dict(md.labels))
    cfg.labels.update(pod_labels(pod))
    cfg.annotations.update(dict(md.annotations))
    if cgroup_parent:
        cfg.linux.cgroup_parent = cgroup_parent
    ns_opts = cfg.linux.security_context.namespace_options
    ns_opts.network = api_pb2.NODE if pod.spec.host_network else api_pb2.POD
    ns_opts.pid = api_pb2.POD if pod.spec.share_process_namespace else api_pb2.CONTAINER
    ns_opts.ipc = api_pb2.NODE if pod.spec.host_ipc else api_pb2.POD
    return cfg


def _quantity(values, name: str):
    if name not in values:
        return None
    v = values[name]
    raw = v.string_value if v.HasField("string_value") else v.number_value
    try:
        return parse_quantity(raw)
    except QuantityError:
        return None


def linux_resources(container: Message, qos_class: str, memory_capacity: int) -> api_pb2.LinuxContainerResources:
    r = api_pb2.LinuxContainerResources()
    limits, requests = container.resources.limits, container.resources.requests
    cpu_limit = _quantity(limits, "cpu")
    cpu_request = _quantity(requests, "cpu") or cpu_limit
    mem_limit = _quantity(limits, "memory")
    mem_request = _quantity(requests, "memory") or mem_limit
    if cpu_request is not None and cpu_request.milli_value() > 0:
        r.cpu_shares = max(MIN_SHARES, cpu_request.milli_value() * 1024 // 1000)
    else:
        r.cpu_shares = MIN_SHARES
    if cpu_limit is not None and cpu_limit.milli_value() > 0:
        r.cpu_period = CPU_PERIOD_US
        r.cpu_quota = max(MIN_QUOTA_US, cpu_limit.milli_value() * CPU_PERIOD_US // 1000)
    if mem_limit is not None and mem_limit.value() > 0:
        r.memory_limit_in_bytes = mem_limit.value()
    r.oom_score_adj = oom_score_adj(qos_class, mem_request.value() if mem_request else 0, memory_capacity)
    return r


def oom_score_adj(qos_class: str, memory_request: int, memory_capacity: int) -> int:
    """Kubernetes' policy: Guaranteed -997, BestEffort 1000, Burstable by request share."""
    if qos_class == "Guaranteed":
        return GUARANTEED_OOM_SCORE_ADJ
    if qos_class == "BestEffort" or memory_capacity <= 0:
        return BEST_EFFORT_OOM_SCORE_ADJ
    adj = 1000 - (1000 * memory_request) // memory_capacity
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if adj == BEST_EFFORT_OOM_SCORE_ADJ:
        return adj - 1
    return adj


def _security(pod: Message, container: Message) -> api_pb2.LinuxContainerSecurityContext:
    sc = api_pb2.LinuxContainerSecurityContext()
    psc, csc = pod.spec.security_context, container.security_context
    if csc.HasField("run_as_user"):
        sc.run_as_user.value = csc.run_as_user
    elif psc.HasField("run_as_user"):
        sc.run_as_user.value = psc.run_as_user
    if csc.HasField("run_as_group"):
        sc.run_as_group.value = csc.run_as_group
    elif psc.HasField("run_as_group"):
        sc.run_as_group.value = psc.run_as_group
    sc.supplemental_groups.extend(psc.supplemental_groups)
    if psc.HasField("fs_group"):
        sc.supplemental_groups.append(psc.fs_group)
    sc.readonly_rootfs = csc.read_only_root_filesystem if csc.HasField("read_only_root_filesystem") else False
    sc.privileged = csc.privileged if csc.HasField("privileged") else False
    if csc.HasField("allow_privilege_escalation") and not csc.allow_privilege_escalation:
        sc.no_new_privs = True
    if csc.HasField("capabilities"):
        sc.capabilities.add_capabilities.extend(csc.capabilities.add)
        sc.capabilities.drop_capabilities.extend(csc.capabilities.drop)
    sc.namespace_options.network = api_pb2.NODE if pod.spec.host_network else api_pb2.POD
    sc.namespace_options.pid = api_pb2.POD if pod.spec.share_process_namespace else api_pb2.CONTAINER
    sc.namespace_options.ipc = api_pb2.NODE if pod.spec.host_ipc else api_pb2.POD
    return sc


def log_path(name: str, attempt: int) -> str:
    """A container's log, relative to the sandbox's log directory."""
    return f"{name}/{attempt}.log"


def container_config(pod: Message, container: Message, *, kind: str, attempt: int, image_ref: str,
                     command: list[str], args: list[str], env: list[tuple[str, str]],
                     mounts: list[api_pb2.Mount], memory_capacity: int = 0) -> api_pb2.ContainerConfig:
    """The ContainerConfig of one attempt of a container; `command` and `args`
    are already expanded against `env`."""
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=container.name, attempt=attempt),
        image=api_pb2.ImageSpec(image=image_ref or container.image, user_specified_image=container.image),
        command=command, args=args, working_dir=container.working_dir,
        envs=[api_pb2.KeyValue(key=k, value=v) for k, v in env], mounts=mounts,
        log_path=log_path(container.name, attempt))
    cfg.labels.update(pod_labels(pod))
    cfg.labels[rl.CONTAINER_NAME] = container.name
    cfg.labels[rl.CONTAINER_KIND] = kind
    cfg.annotations[rl.CONTAINER_HASH] = container_hash(container)
    cfg.annotations[rl.RESTART_COUNT] = str(attempt)
    cfg.annotations[rl.TERMINATION_GRACE] = str(pod.spec.termination_grace_period_seconds
                                                 if pod.spec.HasField("termination_grace_period_seconds") else 30)
    if container.termination_message_path:
        cfg.annotations[rl.TERMINATION_MESSAGE_PATH] = container.termination_message_path
    cfg.linux.resources.CopyFrom(linux_resources(container, pod.status.qos_class, memory_capacity))
    cfg.linux.security_context.CopyFrom(_security(pod, container))
    return cfg
