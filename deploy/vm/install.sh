#!/bin/bash
# Installs kubeling on a Debian or Ubuntu VM as systemd services.
#
#   deploy/vm/install.sh control-plane [--node-ip IP] [--etcd-servers A,B | (local etcd)] ...
#   deploy/vm/install.sh worker --api-server HOST:PORT [--node-name NAME] [--node-ip IP] ...
#   deploy/vm/install.sh remove [--force] [--purge]
#   deploy/vm/install.sh --help
#
# What it does, in order (every step is idempotent; a second run with the
# same options changes nothing and only starts what is stopped):
#   1. copies this checkout to the prefix (/opt/kubeling; stale files of an
#      older copy are removed, its .venv is kept) and runs
#      deploy/install-deps.sh there: the Debian packages and .venv;
#   2. writes /etc/kubeling/<role>.env (and etcd.env for a local etcd) with
#      the addresses; options not given keep the values of an existing file,
#      so `install.sh worker` alone upgrades a worker without changing its
#      configuration;
#   3. installs the units from deploy/systemd/ into /etc/systemd/system and
#      enables them; writes /etc/kubeling/client.config (the API server's
#      address, for the `kubeling` CLI, linked from /usr/local/bin);
#   4. unless --no-start: starts the units (restarting those whose files
#      changed), waits until they work, and on a worker imports the test
#      images (localhost/kubeling/shell:1, http:1) into the runtime.
#
# --root DIR stages everything under DIR instead of / (nothing is started,
# no package is installed): how the tests check what it writes.
#
# The components speak plain gRPC without TLS or authentication: run them on
# a private network and firewall their ports (deploy/README.md).
set -euo pipefail

PROG=install.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd "$SCRIPT_DIR/../.." && pwd)

CONTROL_PLANE_UNITS="kubeling-apiserver kubeling-controller-manager kubeling-scheduler kubeling-dns"
WORKER_UNITS="kubeling-network kubeling-runtime kubeling-node-agent kubeling-proxy"

usage() {
    cat <<'EOF'
Usage: install.sh ROLE [options]

Roles:
  control-plane   etcd (local, or --etcd-servers), API server, scheduler,
                  controller manager, cluster DNS
  worker          network service, runtime, node agent, proxy
  remove          take kubeling off this machine: stop and disable its
                  units, remove the pod network's links, nftables tables,
                  routes and cgroups, the units, /etc/kubeling and the
                  prefix. Refuses while containers run (drain the node
                  first). Keeps /var/lib/kubeling (etcd data, images)

Options (both roles):
  --node-ip IP              this machine's address on the cluster network
                            (default: the source address of the route to the
                            API server, or of the default route)
  --cluster-cidr CIDR       pod addresses of the whole cluster (default
                            10.244.0.0/16); the same on every machine.
                            --pod-cidr is another name for it
  --prefix DIR              where the project is installed (default /opt/kubeling)
  --root DIR                stage into DIR instead of / (implies --skip-deps
                            and --no-start)
  --no-start                install and enable the units, do not start them
  --skip-deps               do not run deploy/install-deps.sh
  -h, --help                this text

control-plane:
  --api-bind HOST:PORT      where the API server listens (default NODE_IP:6443;
                            0.0.0.0:6443 for every interface)
  --advertise-address IP    the address the `kubernetes` Service points at
                            (default NODE_IP)
  --etcd-servers A,B,...    use this existing etcd cluster (host:port, comma-
                            separated); default: install a local etcd
                            (kubeling-etcd.service on 127.0.0.1:2379)
  --local-etcd              back to a local etcd after --etcd-servers
  --service-cidr CIDR       Service cluster IPs (default 10.96.0.0/16)
  --node-port-range A-B     NodePorts (default 30000-32767)
  --node-cidr-mask-size N   size of each node's pod CIDR (default 24)
  --dns-listen IP:PORT      cluster DNS address (default NODE_IP:53)
  --dns-upstream LIST       resolvers for names outside the cluster: IP[:PORT]
                            comma-separated, or `none` (default: the
                            nameservers of /etc/resolv.conf)
  --cluster-domain DOMAIN   default cluster.local

worker:
  --api-server HOST:PORT    the API server (required the first time)
  --node-name NAME          the Node's name (default: the short hostname)
  --network-mode MODE       host-gw (nodes on one L2 network; default) or
                            vxlan (nodes reach each other only by IP)
  --cluster-dns IP          nameserver for pods (default: the API server's host,
                            where the control plane runs the cluster DNS)
  --cluster-domain DOMAIN   default cluster.local
  --cgroup-root PATH        cgroup under which pods run (default /kubeling)
  --no-test-images          do not build and import the test images

remove:
  --force                   kill the containers still running here
  --purge                   also delete /var/lib/kubeling
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*"; }

# ------------------------------------------------------------------ options
ROLE=""
ROOT=/
PREFIX=/opt/kubeling
NO_START=0
SKIP_DEPS=0
TEST_IMAGES=1
LOCAL_ETCD_OPT=0
FORCE=0
PURGE=0
declare -A OPT=()

[ $# -gt 0 ] || { usage >&2; exit 2; }
case "$1" in
    -h|--help) usage; exit 0 ;;
    control-plane|worker|remove) ROLE=$1; shift ;;
    *) die "unknown role '$1': expected control-plane, worker or remove (see --help)" ;;
esac

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    opt=$1
    case "$opt" in
        --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    esac
    case "$opt" in
        -h|--help) usage; exit 0 ;;
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
        --no-start) NO_START=1; shift ;;
        --skip-deps) SKIP_DEPS=1; shift ;;
        --no-test-images) TEST_IMAGES=0; shift ;;
        --local-etcd) LOCAL_ETCD_OPT=1; shift ;;
        --force) FORCE=1; shift ;;
        --purge) PURGE=1; shift ;;
        --pod-cidr) need_value "$@"; OPT[cluster-cidr]=$2; shift 2 ;;
        --node-ip|--cluster-cidr|--api-bind|--advertise-address|--etcd-servers|--service-cidr|\
        --node-port-range|--node-cidr-mask-size|--dns-listen|--dns-upstream|--cluster-domain|\
        --api-server|--node-name|--network-mode|--cluster-dns|--cgroup-root)
            need_value "$@"; OPT[${opt#--}]=$2; shift 2 ;;
        *) die "unknown option '$opt' (see --help)" ;;
    esac
done

only_for() {  # only_for ROLE OPTION...: refuse options of the other role
    local role=$1; shift
    local o
    for o in "$@"; do
        [ -z "${OPT[$o]+x}" ] || [ "$ROLE" = "$role" ] || die "--$o is an option of the $role role"
    done
}
only_for control-plane api-bind advertise-address etcd-servers service-cidr node-port-range \
    node-cidr-mask-size dns-listen dns-upstream
only_for worker api-server node-name network-mode cluster-dns cgroup-root
[ "$ROLE" = worker ] || [ "$TEST_IMAGES" = 1 ] || die "--no-test-images is an option of the worker role"
[ "$ROLE" = control-plane ] || [ "$LOCAL_ETCD_OPT" = 0 ] || die "--local-etcd is an option of the control-plane role"
if [ "$ROLE" = remove ]; then
    [ ${#OPT[@]} = 0 ] || die "remove takes only --force, --purge, --prefix and --root"
else
    [ "$FORCE" = 0 ] && [ "$PURGE" = 0 ] || die "--force and --purge are options of remove"
fi
[ "$LOCAL_ETCD_OPT" = 0 ] || [ -z "${OPT[etcd-servers]+x}" ] || die "--local-etcd and --etcd-servers exclude each other"

# ------------------------------------------------------------------ checks
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages, systemd units and /etc/kubeling); try: sudo $0 $ROLE ..."

OS_RELEASE=${KUBELING_OS_RELEASE:-/etc/os-release}  # a test hook: another os-release file
os_id=""; os_like=""; os_name="an unknown system (no $OS_RELEASE)"
if [ -r "$OS_RELEASE" ]; then
    os_id=$(. "$OS_RELEASE" && echo "${ID:-}")
    os_like=$(. "$OS_RELEASE" && echo "${ID_LIKE:-}")
    os_name=$(. "$OS_RELEASE" && echo "${PRETTY_NAME:-${ID:-unknown}}")
fi
case " $os_id $os_like " in
    *" debian "*|*" ubuntu "*) ;;
    *) die "this installer supports Debian and Ubuntu only (it uses apt, dpkg and Debian's packages of etcd, runc, conmon, nftables); this is $os_name" ;;
esac
[ "$ROLE" = remove ] || command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
[ "$ROLE" = remove ] || python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "kubeling needs Python 3.11 or later; python3 here is $(python3 -V 2>&1 | cut -d' ' -f2) (Debian 12 has 3.11; Ubuntu 24.04 has 3.12)"

case "$ROOT" in /*) ;; *) ROOT=$(pwd)/$ROOT ;; esac
ROOT=${ROOT%/}
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
PREFIX=${PREFIX%/}
if [ -n "$ROOT" ]; then  # staging
    SKIP_DEPS=1
    NO_START=1
fi
r() { echo "$ROOT$1"; }  # a target path, under --root

# ------------------------------------------------------------------ validation
is_ipv4() {
    local ip=$1 part
    [[ $ip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    IFS=. read -r -a parts <<<"$ip"
    for part in "${parts[@]}"; do [ "$part" -le 255 ] || return 1; done
}
is_cidr() {
    [[ $1 =~ ^([0-9.]+)/([0-9]+)$ ]] || return 1
    local prefix=${BASH_REMATCH[2]}
    is_ipv4 "${BASH_REMATCH[1]}" && [ "$prefix" -le 32 ]
}
is_hostport() {  # host:port, host a name or an IPv4 address
    [[ $1 =~ ^([A-Za-z0-9.-]+):([0-9]+)$ ]] && [ "${BASH_REMATCH[2]}" -ge 1 ] && [ "${BASH_REMATCH[2]}" -le 65535 ]
}
is_dns_name() { [[ $1 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ ]] && [ ${#1} -le 253 ]; }
check() {  # check KEY VALUE PREDICATE WHAT
    "$3" "$2" || die "--$1 '$2' is not $4"
}

# ------------------------------------------------------------------ existing configuration
# Values of an existing env file are the defaults, so a rerun keeps them.
declare -A OLD=()
read_env() {
    local file=$1 line key value
    [ -f "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}; value=${BASH_REMATCH[2]}
        if [[ $value =~ ^\"(.*)\"$ ]] || [[ $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
        OLD[$key]=$value
    done <"$file"
}
# pick OPTION ENV_KEY DEFAULT: the option, else the existing file's value, else DEFAULT
pick() {
    if [ -n "${OPT[$1]+x}" ]; then echo "${OPT[$1]}"
    elif [ -n "${OLD[$2]+x}" ]; then echo "${OLD[$2]}"
    else echo "$3"; fi
}
old() { echo "${OLD[$1]:-}"; }

route_source() {  # the source address this machine uses towards $1 (no packet is sent)
    ip -4 route get "$1" 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1
}
default_node_ip() {  # towards $1 if given, else the default route's
    local ip=""
    if [ -n "${1:-}" ] && is_ipv4 "$1"; then ip=$(route_source "$1"); fi
    if [ -z "$ip" ]; then ip=$(route_source 192.0.2.1); fi  # TEST-NET-1: only a route lookup
    echo "$ip"
}
resolv_upstreams() {  # nameservers of /etc/resolv.conf as --upstream flags
    local ns out=""
    for ns in $(sed -n 's/^[[:space:]]*nameserver[[:space:]]\+\([0-9.]*\)[[:space:]]*$/\1/p' /etc/resolv.conf 2>/dev/null); do
        out="$out --upstream $ns:53"
    done
    echo "${out# }"
}
upstream_args() {  # --dns-upstream LIST -> flags
    local list=$1 item out=""
    [ "$list" = none ] && { echo ""; return; }
    IFS=, read -r -a items <<<"$list"
    for item in "${items[@]}"; do
        [[ $item == *:* ]] || item=$item:53
        is_hostport "$item" || die "--dns-upstream: '$item' is not IP[:PORT]"
        out="$out --upstream $item"
    done
    echo "${out# }"
}
quote_env() {  # a value as systemd's EnvironmentFile reads it back
    case "$1" in
        *[[:space:]]*|*\#*|*\'*) printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')" ;;
        *) printf '%s' "$1" ;;
    esac
}

# ------------------------------------------------------------------ files
mounts_under() {  # mount points at or below $1 (absolute), from /proc/self/mountinfo
    local dir=${1%/}
    awk -v d="$dir" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print p }' \
        /proc/self/mountinfo
}
# rm -rf that never reaches through a mount: a file system mounted below
# the directory (a bind mount of something precious, a container's rootfs)
# stops it with a message instead of being emptied.
safe_rm_rf() {
    local target found
    for target in "$@"; do
        [ -e "$target" ] || [ -L "$target" ] || continue
        found=$(mounts_under "$(cd "$target" 2>/dev/null && pwd -P || echo "$target")")
        [ -z "$found" ] || die "not removing $target: something is mounted there ($(echo $found)); unmount it first"
        rm -rf --one-file-system "$target"
    done
}
CHANGED=()     # units whose unit or env file changed in this run
ENV_CHANGED=0
changed_file=0
# put_file TARGET MODE < content: writes when different; sets changed_file
put_file() {
    local target=$1 mode=$2 tmp
    mkdir -p "$(dirname "$target")"
    tmp=$(mktemp "$target.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"; changed_file=0
    else
        mv -f "$tmp" "$target"; changed_file=1
        note "wrote ${target#"$ROOT"}"
    fi
}

# The project as copied: the checkout without .git, .venv, caches and outputs.
# Extra arguments go to tar (the hash below ignores times: importing a
# module for the first time touches its directory).
project_tar() {
    tar -C "$SOURCE" "$@" --exclude=./.git --exclude=./.venv --exclude=./tests/node/node_modules \
        --exclude=__pycache__ --exclude='*.pyc' --exclude=./.pytest_cache --exclude=./deploy/images/out \
        --exclude=./tests/bench/results.json --exclude=./.kubeling-install --exclude=./kubeling.egg-info \
        --sort=name --owner=0 --group=0 --numeric-owner -cf - .
}

CODE_CHANGED=0
copy_project() {
    local dest tree previous=""
    dest=$(r "$PREFIX")
    [ -f "$SOURCE/pyproject.toml" ] && [ -d "$SOURCE/services" ] && [ -f "$SOURCE/deploy/install-deps.sh" ] \
        || die "$SOURCE does not look like a kubeling checkout"
    mkdir -p "$dest"
    if [ -n "$(ls -A "$dest" | grep -vx .venv)" ] && [ ! -f "$dest/.kubeling-install" ] \
        && [ "$(cd "$SOURCE" && pwd -P)" != "$(cd "$dest" && pwd -P)" ]; then
        die "$PREFIX exists and was not made by this installer (no .kubeling-install in it); move it away or choose --prefix"
    fi
    tree=$(project_tar --mtime=@0 | sha256sum | cut -d' ' -f1)
    [ -f "$dest/.kubeling-install" ] && previous=$(sed -n 's/^tree=//p' "$dest/.kubeling-install")
    if [ "$tree" = "$previous" ]; then
        note "$PREFIX is up to date with $SOURCE"
        return
    fi
    CODE_CHANGED=1
    if [ "$(cd "$SOURCE" && pwd -P)" != "$(cd "$dest" && pwd -P)" ]; then
        # Replace everything but the virtual environment (install-deps.sh keeps
        # it up to date), so files removed upstream go away here too.
        local entry
        for entry in "$dest"/* "$dest"/.[!.]*; do
            [ "$(basename "$entry")" = .venv ] || safe_rm_rf "$entry"
        done
        project_tar | tar -C "$dest" -xf -
    fi
    local rev=""
    rev=$(git -C "$SOURCE" rev-parse --short HEAD 2>/dev/null || true)
    printf 'source=%s\nrevision=%s\ntree=%s\ninstalled=%s\n' "$SOURCE" "${rev:-unknown}" "$tree" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dest/.kubeling-install"
    note "installed $SOURCE in ${dest#"$ROOT"}${rev:+ (revision $rev)}"
}

install_deps() {
    if [ "$SKIP_DEPS" = 1 ]; then
        note "skipping deploy/install-deps.sh (Debian packages, $PREFIX/.venv)"
        return
    fi
    local had_registry=0
    dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q "ok installed" && had_registry=1
    # install-deps.sh makes the venv with python3 -m venv, which on Debian
    # and Ubuntu needs python3-venv.
    if [ "$(readlink -f "$(command -v python3)")" = "$(readlink -f /usr/bin/python3)" ] \
        && ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "ok installed"; then
        note "installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    fi
    note "running $PREFIX/deploy/install-deps.sh (Debian packages and $PREFIX/.venv)"
    "$PREFIX/deploy/install-deps.sh"
    # install-deps.sh serves the tests too: Debian's docker-registry package
    # starts a registry on every interface (:5000). A VM needs none; stop one
    # this run brought in.
    if [ "$had_registry" = 0 ] && [ -d /run/systemd/system ] && systemctl is-enabled -q docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
        note "disabled docker-registry.service (installed with the test dependencies; not needed on a VM)"
    fi
}

unit_text() {  # the unit file for this prefix
    sed "s#/opt/kubeling#$PREFIX#g" "$SOURCE/deploy/systemd/$1.service"
}

install_unit() {
    local unit=$1
    [ -f "$SOURCE/deploy/systemd/$unit.service" ] || die "missing deploy/systemd/$unit.service"
    unit_text "$unit" | put_file "$(r /etc/systemd/system/$unit.service)" 0644
    [ "$changed_file" = 0 ] || CHANGED+=("$unit")
}

systemctl_root() {
    if [ -n "$ROOT" ]; then systemctl --root="$ROOT" "$@"; else systemctl "$@"; fi
}

enable_units() {
    local unit
    if command -v systemctl >/dev/null; then
        systemctl_root enable -q "${@/%/.service}"
    else  # no systemctl (a bare staging host): the links `enable` makes
        for unit in "$@"; do
            mkdir -p "$(r /etc/systemd/system/multi-user.target.wants)"
            ln -sfn "/etc/systemd/system/$unit.service" "$(r /etc/systemd/system/multi-user.target.wants/$unit.service)"
        done
    fi
    note "enabled: $*"
}

write_client_config() {  # write_client_config API_ADDRESS
    put_file "$(r /etc/kubeling/client.config)" 0644 <<EOF
# The kubeling CLI's configuration: written by deploy/vm/install.sh $ROLE.
# No TLS or token yet: the API server is plain gRPC on the private network.
server: $1
EOF
    local home_config
    home_config=$(r /root/.kubeling/config)
    if [ ! -e "$home_config" ] && [ ! -L "$home_config" ]; then
        mkdir -p "$(dirname "$home_config")"
        ln -s /etc/kubeling/client.config "$home_config"
        note "linked /root/.kubeling/config -> /etc/kubeling/client.config"
    fi
    mkdir -p "$(r /usr/local/bin)"
    ln -sfn "$PREFIX/.venv/bin/kubeling" "$(r /usr/local/bin/kubeling)"
}

# ------------------------------------------------------------------ control plane
configure_control_plane() {
    read_env "$(r /etc/kubeling/control-plane.env)"
    local node_ip api_bind advertise api_server etcd_servers local_etcd service_cidr node_ports
    local cluster_cidr mask dns_listen domain dns_upstream_args
    node_ip=$(pick node-ip KUBELING_NODE_IP "")
    [ -n "$node_ip" ] || node_ip=$(default_node_ip)
    [ -n "$node_ip" ] || die "cannot tell this machine's address: give --node-ip"
    check node-ip "$node_ip" is_ipv4 "an IPv4 address"
    # Derived addresses follow a new --node-ip unless given themselves.
    local derive=""
    [ -n "${OPT[node-ip]+x}" ] && [ "${OPT[node-ip]}" != "$(old KUBELING_NODE_IP)" ] && derive=1
    d() { if [ -n "$derive" ] && [ -z "${OPT[$1]+x}" ]; then echo "$3"; else pick "$1" "$2" "$3"; fi; }
    api_bind=$(d api-bind KUBELING_API_BIND "$node_ip:6443")
    check api-bind "$api_bind" is_hostport "HOST:PORT"
    advertise=$(d advertise-address KUBELING_ADVERTISE_ADDRESS "$node_ip")
    check advertise-address "$advertise" is_ipv4 "an IPv4 address"
    local api_host=${api_bind%:*}
    [ "$api_host" != 0.0.0.0 ] || api_host=$node_ip
    api_server="$api_host:${api_bind##*:}"

    etcd_servers=$(pick etcd-servers KUBELING_ETCD_SERVERS "127.0.0.1:2379")
    local e
    IFS=, read -r -a etcd_list <<<"$etcd_servers"
    for e in "${etcd_list[@]}"; do check etcd-servers "$e" is_hostport "a list of HOST:PORT"; done
    local_etcd=0
    if [ "$LOCAL_ETCD_OPT" = 1 ] || { [ -z "${OPT[etcd-servers]+x}" ] && { [ -z "$(old KUBELING_ETCD_SERVERS)" ] || [ "$(old KUBELING_LOCAL_ETCD)" = yes ]; }; }; then
        local_etcd=1; etcd_servers=127.0.0.1:2379
    fi

    service_cidr=$(pick service-cidr KUBELING_SERVICE_CIDR 10.96.0.0/16)
    check service-cidr "$service_cidr" is_cidr "a CIDR"
    node_ports=$(pick node-port-range KUBELING_NODE_PORT_RANGE 30000-32767)
    [[ $node_ports =~ ^[0-9]+-[0-9]+$ ]] || die "--node-port-range '$node_ports' is not FIRST-LAST"
    cluster_cidr=$(pick cluster-cidr KUBELING_CLUSTER_CIDR 10.244.0.0/16)
    check cluster-cidr "$cluster_cidr" is_cidr "a CIDR"
    mask=$(pick node-cidr-mask-size KUBELING_NODE_CIDR_MASK_SIZE 24)
    [[ $mask =~ ^[0-9]+$ ]] && [ "$mask" -ge "${cluster_cidr#*/}" ] && [ "$mask" -le 30 ] \
        || die "--node-cidr-mask-size '$mask' must be between the cluster CIDR's prefix (${cluster_cidr#*/}) and 30"
    dns_listen=$(d dns-listen KUBELING_DNS_LISTEN "$node_ip:53")
    check dns-listen "$dns_listen" is_hostport "IP:PORT"
    domain=$(pick cluster-domain KUBELING_CLUSTER_DOMAIN cluster.local)
    check cluster-domain "$domain" is_dns_name "a domain name"
    if [ -n "${OPT[dns-upstream]+x}" ]; then
        dns_upstream_args=$(upstream_args "${OPT[dns-upstream]}")
    elif [ -n "${OLD[KUBELING_DNS_UPSTREAM_ARGS]+x}" ]; then
        dns_upstream_args=$(old KUBELING_DNS_UPSTREAM_ARGS)
    else
        dns_upstream_args=$(resolv_upstreams)
    fi

    CP_ENV=$(cat <<EOF
# /etc/kubeling/control-plane.env: the control plane's configuration, read
# by kubeling-apiserver, kubeling-scheduler, kubeling-controller-manager and
# kubeling-dns (EnvironmentFile=). Written by deploy/vm/install.sh
# control-plane; rerunning it keeps every value its options do not change.
# After editing: systemctl restart kubeling-apiserver kubeling-scheduler \\
#   kubeling-controller-manager kubeling-dns
# No TLS or authentication yet: keep these addresses on a private network.

# This machine's address on the cluster network.
KUBELING_NODE_IP=$node_ip
# Where the API server listens, and the address the \`kubernetes\` Service
# points at.
KUBELING_API_BIND=$api_bind
KUBELING_ADVERTISE_ADDRESS=$advertise
# How the scheduler, controller manager and DNS reach the API server.
KUBELING_API_SERVER=$api_server
# etcd client endpoints (host:port, comma-separated; the API server fails
# over between them). KUBELING_LOCAL_ETCD=yes: kubeling-etcd.service on this
# machine (configured in etcd.env).
KUBELING_ETCD_SERVERS=$etcd_servers
KUBELING_LOCAL_ETCD=$([ "$local_etcd" = 1 ] && echo yes || echo no)
# Service cluster IPs and NodePorts.
KUBELING_SERVICE_CIDR=$service_cidr
KUBELING_NODE_PORT_RANGE=$node_ports
# Pod addresses of the whole cluster; each node gets a /MASK of them. Workers
# must use the same KUBELING_CLUSTER_CIDR.
KUBELING_CLUSTER_CIDR=$cluster_cidr
KUBELING_NODE_CIDR_MASK_SIZE=$mask
# The cluster DNS: its address (workers give it to pods), its domain, and
# the resolvers it forwards other names to (none: it refuses them).
KUBELING_DNS_LISTEN=$dns_listen
KUBELING_CLUSTER_DOMAIN=$domain
KUBELING_DNS_UPSTREAM_ARGS=$(quote_env "$dns_upstream_args")
# Extra flags per component (see python -m services.<component> --help),
# e.g. KUBELING_CONTROLLER_MANAGER_ARGS="--node-monitor-grace-period 20".
KUBELING_APISERVER_ARGS=$(quote_env "$(old KUBELING_APISERVER_ARGS)")
KUBELING_SCHEDULER_ARGS=$(quote_env "$(old KUBELING_SCHEDULER_ARGS)")
KUBELING_CONTROLLER_MANAGER_ARGS=$(quote_env "$(old KUBELING_CONTROLLER_MANAGER_ARGS)")
KUBELING_DNS_ARGS=$(quote_env "$(old KUBELING_DNS_ARGS)")
EOF
)
    ETCD_ENV=""
    if [ "$local_etcd" = 1 ]; then
        read_env "$(r /etc/kubeling/etcd.env)"
        local name
        name=$(pick _ ETCD_NAME "$(hostname -s 2>/dev/null | tr 'A-Z' 'a-z')")
        [ -n "$name" ] || name=kubeling
        ETCD_ENV=$(cat <<EOF
# /etc/kubeling/etcd.env: kubeling-etcd.service's configuration, as the
# environment variables etcd reads itself (ETCD_<FLAG>; see
# https://etcd.io/docs/v3.4/op-guide/configuration/). Written by
# deploy/vm/install.sh control-plane. One member on loopback: only the API
# server on this machine talks to it.
ETCD_NAME=$name
ETCD_DATA_DIR=/var/lib/kubeling/etcd
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=$name=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=kubeling
# Nothing else compacts etcd's history: keep one hour of it (watchers that
# fall further behind relist).
ETCD_AUTO_COMPACTION_MODE=periodic
ETCD_AUTO_COMPACTION_RETENTION=1h
ETCD_LOGGER=zap
ETCD_LOG_OUTPUTS=stderr
EOF
)
    fi
    API_SERVER=$api_server
    ETCD_SERVERS=$etcd_servers
}

write_control_plane() {
    printf '%s\n' "$CP_ENV" | put_file "$(r /etc/kubeling/control-plane.env)" 0644
    ENV_CHANGED=$changed_file
    UNITS=()
    if [ -n "$ETCD_ENV" ]; then
        printf '%s\n' "$ETCD_ENV" | put_file "$(r /etc/kubeling/etcd.env)" 0644
        local etcd_env_changed=$changed_file
        install_unit kubeling-etcd
        [ "$etcd_env_changed" = 0 ] || CHANGED+=(kubeling-etcd)
        UNITS+=(kubeling-etcd)
    elif [ -f "$(r /etc/systemd/system/kubeling-etcd.service)" ]; then
        # Switched to an external etcd: the local one goes (its data stays).
        if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
            systemctl disable --now -q kubeling-etcd.service || true
        else
            systemctl_root disable -q kubeling-etcd.service 2>/dev/null || true
        fi
        rm -f "$(r /etc/systemd/system/kubeling-etcd.service)"
        note "removed kubeling-etcd.service (now using $ETCD_SERVERS); its data stays in /var/lib/kubeling/etcd"
    fi
    local u
    for u in $CONTROL_PLANE_UNITS; do install_unit "$u"; UNITS+=("$u"); done
    if [ "$ENV_CHANGED" = 1 ]; then
        for u in $CONTROL_PLANE_UNITS; do CHANGED+=("$u"); done
    fi
    write_client_config "$API_SERVER"
}

# ------------------------------------------------------------------ worker
configure_worker() {
    read_env "$(r /etc/kubeling/worker.env)"
    local api_server node_name node_ip mode cluster_cidr cluster_dns domain cgroup_root
    api_server=$(pick api-server KUBELING_API_SERVER "")
    [ -n "$api_server" ] || die "a worker needs --api-server HOST:PORT (the control plane's API server, e.g. 10.0.0.10:6443)"
    check api-server "$api_server" is_hostport "HOST:PORT"
    local api_host=${api_server%:*}
    node_name=$(pick node-name KUBELING_NODE_NAME "$(hostname -s 2>/dev/null | tr 'A-Z' 'a-z')")
    is_dns_name "$node_name" && [ ${#node_name} -le 63 ] \
        || die "node name '$node_name' is not a DNS-1123 label (lower case letters, digits, '-'): give --node-name"
    node_ip=$(pick node-ip KUBELING_NODE_IP "")
    [ -n "$node_ip" ] || node_ip=$(default_node_ip "$api_host")
    [ -n "$node_ip" ] || die "cannot tell this machine's address: give --node-ip"
    check node-ip "$node_ip" is_ipv4 "an IPv4 address"
    mode=$(pick network-mode KUBELING_NETWORK_MODE host-gw)
    case "$mode" in host-gw|vxlan) ;; *) die "--network-mode '$mode' must be host-gw or vxlan" ;; esac
    cluster_cidr=$(pick cluster-cidr KUBELING_CLUSTER_CIDR 10.244.0.0/16)
    check cluster-cidr "$cluster_cidr" is_cidr "a CIDR"
    if is_ipv4 "$api_host"; then dns_default=$api_host; else dns_default=""; fi
    cluster_dns=$(pick cluster-dns KUBELING_CLUSTER_DNS "$dns_default")
    [ -z "$cluster_dns" ] || check cluster-dns "$cluster_dns" is_ipv4 "an IPv4 address"
    domain=$(pick cluster-domain KUBELING_CLUSTER_DOMAIN cluster.local)
    check cluster-domain "$domain" is_dns_name "a domain name"
    cgroup_root=$(pick cgroup-root KUBELING_CGROUP_ROOT /kubeling)
    [[ $cgroup_root =~ ^/[A-Za-z0-9._/-]+$ ]] || die "--cgroup-root '$cgroup_root' is not an absolute cgroup path"

    WORKER_ENV=$(cat <<EOF
# /etc/kubeling/worker.env: this worker's configuration, read by
# kubeling-network, kubeling-runtime, kubeling-node-agent and kubeling-proxy
# (EnvironmentFile=). Written by deploy/vm/install.sh worker; rerunning it
# keeps every value its options do not change.
# After editing: systemctl restart kubeling-network kubeling-runtime \\
#   kubeling-node-agent kubeling-proxy
# No TLS or authentication yet: keep these addresses on a private network.

# The Node's name and its address on the cluster network (other nodes route
# pod traffic to it; the API server reaches its logs/exec port 10250 there).
KUBELING_NODE_NAME=$node_name
KUBELING_NODE_IP=$node_ip
# The API server (host:port).
KUBELING_API_SERVER=$api_server
# How pods on other nodes are reached: host-gw (one L2 network) or vxlan.
KUBELING_NETWORK_MODE=$mode
# Pod addresses of the whole cluster: the control plane's KUBELING_CLUSTER_CIDR.
KUBELING_CLUSTER_CIDR=$cluster_cidr
# The nameserver pods get (the control plane's cluster DNS), and the domain.
KUBELING_CLUSTER_DNS=$cluster_dns
KUBELING_CLUSTER_DOMAIN=$domain
# The runtime's and the network service's sockets, and the pods' cgroup.
KUBELING_RUNTIME_ENDPOINT=unix:///run/kubeling/runtime.sock
KUBELING_NETWORK_ENDPOINT=unix:///run/kubeling/network.sock
KUBELING_CGROUP_ROOT=$cgroup_root
# Extra flags per component (see python -m node_agent.<component> --help),
# e.g. KUBELING_NODE_AGENT_ARGS="--node-labels disk=ssd --system-reserved cpu=200m,memory=512Mi".
KUBELING_NETWORK_ARGS=$(quote_env "$(old KUBELING_NETWORK_ARGS)")
KUBELING_RUNTIME_ARGS=$(quote_env "$(old KUBELING_RUNTIME_ARGS)")
KUBELING_NODE_AGENT_ARGS=$(quote_env "$(old KUBELING_NODE_AGENT_ARGS)")
KUBELING_PROXY_ARGS=$(quote_env "$(old KUBELING_PROXY_ARGS)")
EOF
)
    API_SERVER=$api_server
    NODE_NAME=$node_name
}

write_worker() {
    printf '%s\n' "$WORKER_ENV" | put_file "$(r /etc/kubeling/worker.env)" 0644
    ENV_CHANGED=$changed_file
    UNITS=()
    local u
    for u in $WORKER_UNITS; do install_unit "$u"; UNITS+=("$u"); done
    if [ "$ENV_CHANGED" = 1 ]; then
        for u in $WORKER_UNITS; do CHANGED+=("$u"); done
    fi
    write_client_config "$API_SERVER"
}

# ------------------------------------------------------------------ starting
was_changed() { local u; for u in "${CHANGED[@]}"; do [ "$u" = "$1" ] && return 0; done; return 1; }

start_units() {
    systemctl daemon-reload
    local u
    for u in "${UNITS[@]}"; do
        if { [ "$CODE_CHANGED" = 1 ] || was_changed "$u"; } && systemctl is-active -q "$u"; then
            note "restarting $u (its code or configuration changed)"
            systemctl restart "$u"
        else
            systemctl start "$u"
        fi
    done
}

kubeling_cli() { "$PREFIX/.venv/bin/kubeling" --config /etc/kubeling/client.config "$@"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$PROG: $what did not happen within ${seconds}s; see: journalctl -u 'kubeling-*' -n 50" >&2
            return 1
        fi
        sleep 1
    done
}

import_test_images() {
    local out=/var/lib/kubeling/images busybox
    busybox=$(command -v busybox || echo /bin/busybox)
    [ -x "$busybox" ] || { note "no busybox: test images skipped"; return 0; }
    mkdir -p "$out"
    "$PREFIX/.venv/bin/python" "$PREFIX/deploy/images/build.py" --out "$out" --tar --busybox "$busybox" >/dev/null
    "$PREFIX/.venv/bin/kubeling" images --runtime-endpoint unix:///run/kubeling/runtime.sock import \
        "$out/shell.tar" "$out/http.tar"
}

start_and_check() {
    if [ "$NO_START" = 1 ]; then
        note "not started (--no-start${ROOT:+ / --root}); start with: systemctl start ${UNITS[*]}"
        return
    fi
    if [ ! -d /run/systemd/system ]; then
        note "systemd is not running here (not PID 1): units installed and enabled, they start at the next boot"
        return
    fi
    start_units
    if [ "$ROLE" = control-plane ]; then
        wait_for 90 "the API server answering on $API_SERVER" kubeling_cli get namespace default
        note "control plane ready: kubeling get nodes  (API server $API_SERVER)"
    else
        wait_for 60 "the runtime's socket" test -S /run/kubeling/runtime.sock
        if [ "$TEST_IMAGES" = 1 ]; then import_test_images; fi
        wait_for 60 "node $NODE_NAME registering" kubeling_cli get node "$NODE_NAME"
        note "worker $NODE_NAME joined the cluster at $API_SERVER"
    fi
}

# ------------------------------------------------------------------ remove
# Takes kubeling off this machine. With --root, only the files under it.
remove_machine() {
    local units=() f u d
    for d in "$(r "$PREFIX")" "$(r /etc/kubeling)" "$(r /run/kubeling)"; do
        [ -d "$d" ] || continue
        [ -z "$(mounts_under "$(cd "$d" && pwd -P)")" ] \
            || die "something is mounted under $d ($(echo $(mounts_under "$(cd "$d" && pwd -P)"))): unmount it first"
    done
    for f in "$(r /etc/systemd/system)"/kubeling-*.service; do
        [ -e "$f" ] || continue
        u=$(basename "$f" .service); units+=("$u")
    done
    local live=0
    [ -z "$ROOT" ] && [ -d /run/systemd/system ] && live=1
    # Containers still here: refuse (their pods would vanish without the
    # control plane knowing why), or with --force kill them.
    local runc_root ids=""
    runc_root=$(r /var/lib/kubeling/runtime/runc)
    if [ -d "$runc_root" ] && command -v runc >/dev/null; then
        ids=$(runc --root "$runc_root" list -q 2>/dev/null || true)
    fi
    if [ -n "$ids" ] && [ "$FORCE" = 0 ]; then
        die "$(echo "$ids" | wc -l) container(s) still run here: drain the node first (deploy/README.md, \"Removing a node\"), or pass --force to kill them"
    fi
    if [ ${#units[@]} -gt 0 ]; then
        if [ "$live" = 1 ]; then
            systemctl disable --now -q "${units[@]/%/.service}" || true
        elif command -v systemctl >/dev/null; then
            systemctl_root disable -q "${units[@]/%/.service}" 2>/dev/null || true
        fi
        note "$([ "$live" = 1 ] && echo "stopped and disabled" || echo disabled): ${units[*]}"
    fi
    local id
    for id in $ids; do
        runc --root "$runc_root" kill "$id" KILL >/dev/null 2>&1 || true
        runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1 || true
        note "killed container $id"
    done
    if [ -z "$ROOT" ]; then
        # What the runtime and the network service leave when stopped: mounts
        # of containers (--force), the pod bridge, the VXLAN device, the
        # nftables tables, the routes to other nodes' pods, the pods' cgroups.
        local m
        for m in $(awk '$2 ~ "^/var/lib/kubeling/" {print $2}' /proc/mounts | sort -r); do
            umount -l "$m" 2>/dev/null && note "unmounted $m"
        done
        for link in kubeling0 kubeling.vxlan; do
            ip link delete "$link" 2>/dev/null && note "deleted link $link"
        done
        if command -v nft >/dev/null; then
            for table in kubeling kubeling_masq kubeling_hostport; do
                nft delete table ip "$table" 2>/dev/null && note "deleted nftables table ip $table"
            done
        fi
        ip route flush proto 108 2>/dev/null || true
        local cgroup_root=/kubeling
        read_env /etc/kubeling/worker.env
        [ -n "${OLD[KUBELING_CGROUP_ROOT]:-}" ] && cgroup_root=${OLD[KUBELING_CGROUP_ROOT]}
        local top
        for top in /sys/fs/cgroup"$cgroup_root" /sys/fs/cgroup/*"$cgroup_root"; do
            [ -d "$top" ] || continue
            find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [ -d "$top" ] && echo "$PROG: warning: could not remove cgroup $top (processes left in it?)" >&2
        done
    fi
    for u in "${units[@]}"; do rm -f "$(r /etc/systemd/system/$u.service)"; done
    [ "$live" = 0 ] || systemctl daemon-reload || true
    safe_rm_rf "$(r /etc/kubeling)" "$(r /run/kubeling)"
    [ "$(readlink "$(r /usr/local/bin/kubeling)" 2>/dev/null)" = "$PREFIX/.venv/bin/kubeling" ] && rm -f "$(r /usr/local/bin/kubeling)"
    [ "$(readlink "$(r /root/.kubeling/config)" 2>/dev/null)" = /etc/kubeling/client.config ] && rm -f "$(r /root/.kubeling/config)"
    if [ -f "$(r "$PREFIX")/.kubeling-install" ]; then
        safe_rm_rf "$(r "$PREFIX")"
    fi
    if [ "$PURGE" = 1 ]; then
        safe_rm_rf "$(r /var/lib/kubeling)"
        note "removed /var/lib/kubeling"
    else
        [ -d "$(r /var/lib/kubeling)" ] && note "kept /var/lib/kubeling (etcd data, images, state): --purge deletes it"
    fi
    note "kubeling removed from this machine"
}

# ------------------------------------------------------------------ main
if [ "$ROLE" = remove ]; then
    remove_machine
    exit 0
fi
# Every option is checked before anything is touched.
if [ "$ROLE" = control-plane ]; then configure_control_plane; else configure_worker; fi
copy_project
install_deps
mkdir -p "$(r /etc/kubeling)"
if [ "$ROLE" = control-plane ]; then write_control_plane; else write_worker; fi
mkdir -p "$(r /var/lib/kubeling)"
chmod 0755 "$(r /var/lib/kubeling)"
enable_units "${UNITS[@]}"
start_and_check
