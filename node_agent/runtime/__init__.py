"""kubeling's container runtime: a CRI runtime.v1 service over conmon and runc.

    python -m node_agent.runtime --listen unix:///run/kubeling/runtime.sock \\
        --state-dir /var/lib/kubeling/runtime [--cgroup-root /kubeling] \\
        [--network-endpoint unix:///run/kubeling/network.sock]

Modules, from the wire down:

    server.py       gRPC servicers (RuntimeService, ImageService, and kubeling's
                    ImageImportService on the same socket); errors -> status codes
    runtime.py      sandboxes and containers: records on disk, lifecycle, status
    images.py       the content store: pull (skopeo), import, unpack, remove
    oci_spec.py     CRI container config -> OCI config.json (pure)
    seccomp.py      the default seccomp profile
    oci_runtime.py  runc and conmon invocations
    network.py      the hand-off to the network service (or loopback only)
    linux.py        mounts, pinned network namespaces, cgroup files
    reference.py    image reference parsing (pure)

Containers run under conmon, not under this process: stopping, killing or
restarting the service never stops a container, and a restarted service
reads exits that happened meanwhile from conmon's exit files.
"""
