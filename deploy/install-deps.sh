#!/bin/sh
# Installs every system package kubeling uses, then the Python virtual
# environment at .venv with kubeling in it. Idempotent: a second run only
# checks. Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."

# One list for the whole project; later components add their packages here.
DEBIAN_PACKAGES="python3-venv etcd-server etcd-client nodejs npm runc conmon skopeo busybox-static docker-registry nftables iproute2 containernetworking-plugins"

missing=""
for pkg in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
# The machine may carry its own Node.js outside Debian's packages; use it.
case " $missing " in *" nodejs "*) command -v node >/dev/null && missing=$(echo "$missing" | sed 's/ nodejs//') ;; esac
case " $missing " in *" npm "*) command -v npm >/dev/null && missing=$(echo "$missing" | sed 's/ npm//') ;; esac
if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
# Debian's etcd-server and docker-registry packages enable system services;
# kubeling starts its own etcd, and tests start their own registry on loopback.
if command -v systemctl >/dev/null; then
    for unit in etcd docker-registry; do
        if systemctl is-enabled -q "$unit" 2>/dev/null || systemctl is-active -q "$unit" 2>/dev/null; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    done
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi
