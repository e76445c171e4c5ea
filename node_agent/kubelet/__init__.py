"""The node agent ("kubelet"): makes the pods bound to its node real, and reports back.

    python -m node_agent.kubelet --server API --node-name NAME --node-ip IP \\
        --container-runtime-endpoint unix:///run/kubeling/runtime.sock \\
        --network-endpoint unix:///run/kubeling/network.sock --state-dir DIR

It talks to the API server (kubeling.client), to any CRI runtime over its
unix socket (cri_client.py), and to the network service (network_client.py)
when the runtime leaves sandboxes without an address. One module per concept:

    agent.py          wiring and start-up order; __main__.py the flags
    node_status.py    registration: capacity, allocatable, addresses, conditions
    lease.py          the node's Lease in kube-node-lease
    pod_workers.py    which pod (by UID) is synced when; one sync per pod at a time
    pleg.py           relists the runtime every second to notice exits
    pod_sync.py       the level-triggered, idempotent sync of one pod
    runtime_pods.py   a pod's sandboxes and containers, found by CRI labels
    cri_config.py     PodSandboxConfig / ContainerConfig from the pod spec
    image_manager.py  imagePullPolicy, pull backoff
    container_env.py  env, envFrom, ConfigMap / Secret keys, downward API
    volumes.py        emptyDir, hostPath, configMap, secret
    probes.py         liveness, readiness, startup (exec, httpGet, tcpSocket)
    backoff.py        CrashLoopBackOff (10 s doubling to 5 min, reset after 10 min)
    status.py         pod phase, conditions and container statuses
    termination.py    graceful stop, teardown, the final delete
    pod_state.py      per-pod record on disk

State directory (`--state-dir`, mode 0700):

    pods/<uid>/pod.json              the pod's record (pod_state.py): sandbox, pod IP,
                                     current and previous container ids and log paths
    pods/<uid>/volumes/<name>/       its volumes
    logs/<ns>_<pod>_<uid>/<container>/<attempt>.log
                                     container logs (CRI format), the sandbox's log_directory

Logs and exec: the agent starts the node's `kubeling.node.v1.Node` service
(node_agent.node_service) on `--address:--port` and publishes the port in
the Node's daemonEndpoints; it finds containers by their CRI labels
(io.kubernetes.pod.namespace / name / uid, io.kubernetes.container.name;
newest attempt = current, the one before = previous) and runs ExecSync.
In process, `NodeAgent.container_location(ns, pod, container, previous)`
answers the same question.
"""
