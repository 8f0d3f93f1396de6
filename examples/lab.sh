#!/usr/bin/env bash
# hoptrace lab: a Docker-like network built from network namespaces alone (no Docker engine).
#
#   PREFIX-c1     eth0 172.17.0.2/16 ──┐
#                                      ├─ vethXXXXXXX ─ docker0 172.17.0.1/16 ─┐  PREFIX-host
#   PREFIX-c2     eth0 172.17.0.3/16 ──┘                (MASQUERADE 172.17/16)  eth0 192.168.43.116/24
#                                                                                │
#   PREFIX-router eth0 192.168.43.1/24, eth1 198.51.100.1/24 ────────────────────┘
#   PREFIX-server eth0 198.51.100.10/24
#
# With --usernet (or HOPTRACE_LAB_USERNET=1), `up` also adds a user-defined network the way
# `docker network create` does: a second bridge br-<12 hex> 172.18.0.1/16 in PREFIX-host and
#   PREFIX-c3     eth0 172.18.0.2/16 ── vethXXXXXXX ─ br-XXXXXXXXXXXX 172.18.0.1/16 (MASQUERADE 172.18/16)
# (no Docker-style isolation between the two networks).
#
# Usage: lab.sh up|down|status|env [PREFIX] [--usernet]
#   PREFIX defaults to $HOPTRACE_LAB_PREFIX, else "hoptrace"; [a-z0-9-], at most 10 characters.
#   up      builds the lab; refuses (exit 1) if any of its namespaces already exists.
#           A failed `up` removes what it had made.
#           --usernet / HOPTRACE_LAB_USERNET=1: also the user-defined network and PREFIX-c3.
#   down    removes the namespaces (and with them every interface, route, nat rule and conntrack
#           entry in them; PREFIX-c3 too, with or without --usernet); processes still running
#           inside them are sent SIGTERM first. Safe to run twice.
#   status  prints namespaces, interfaces, addresses, routes and nat rules.
#   env     prints the lab's names and addresses as shell assignments (no root needed), the
#           user-defined network's (NS_C3, USERNET_BRIDGE, ...) included whether it is up or not;
#           tests/e2e/lablib.py reads them so the names live in one place.
#
# IPv6 is disabled in the lab's namespaces (link-local addresses, router solicitations and MLD
# reports would otherwise add traffic nobody sent); HOPTRACE_LAB_IPV6=1 keeps it on.
# The router knows only its two connected subnets: without the MASQUERADE rule in the host
# namespace, replies to 172.17.0.0/16 are unroutable there.
set -euo pipefail

readonly prog=lab.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $prog up|down|status|env [PREFIX] [--usernet]" >&2
    exit 2
}

# Docker-like host-side veth name: "veth" + 7 hex chars, stable for a given prefix and container.
veth_name() {
    local hash
    hash=$(printf '%s' "$1" | sha256sum)
    echo "veth${hash:0:7}"
}

# Docker gives docker0 a random 02:42:xx:xx:xx:xx address; without a fixed one the bridge
# would take the lowest port MAC and change it as containers come and go.
bridge_mac() {
    local h
    h=$(printf '%s' "$1" | sha256sum)
    echo "02:42:${h:0:2}:${h:2:2}:${h:4:2}:${h:6:2}"
}

# Docker names a user-defined network's bridge "br-" + the first 12 hex characters of the
# network id; here the id is sha256 of the network's name, stable for a prefix.
usernet_bridge_name() {
    local hash
    hash=$(printf '%s' "$1" | sha256sum)
    echo "br-${hash:0:12}"
}

set_names() {
    local prefix=$1
    NS_HOST=$prefix-host
    NS_C1=$prefix-c1
    NS_C2=$prefix-c2
    NS_ROUTER=$prefix-router
    NS_SERVER=$prefix-server
    NS_C3=$prefix-c3
    # The namespaces `up` builds; `down` removes ALL_NS, the user-defined network's c3 included.
    UP_NS=("$NS_HOST" "$NS_C1" "$NS_C2" "$NS_ROUTER" "$NS_SERVER")
    ALL_NS=("${UP_NS[@]}" "$NS_C3")
    if ((USERNET)); then
        UP_NS+=("$NS_C3")
    fi
    BRIDGE=docker0
    BRIDGE_MAC=$(bridge_mac "$prefix-docker0")
    C1_VETH=$(veth_name "$prefix-c1")
    C2_VETH=$(veth_name "$prefix-c2")
    C1_IP=172.17.0.2
    C2_IP=172.17.0.3
    C1_MAC=02:42:ac:11:00:02
    C2_MAC=02:42:ac:11:00:03
    BRIDGE_IP=172.17.0.1
    HOST_UPLINK=eth0
    HOST_IP=192.168.43.116
    ROUTER_UPLINK=eth0
    ROUTER_IP=192.168.43.1
    ROUTER_DOWNLINK=eth1
    ROUTER_SERVER_IP=198.51.100.1
    SERVER_IF=eth0
    SERVER_IP=198.51.100.10
    # The user-defined network (--usernet), from Docker's second default pool.
    USERNET_NAME=$prefix-usernet
    USERNET_BRIDGE=$(usernet_bridge_name "$USERNET_NAME")
    USERNET_BRIDGE_MAC=$(bridge_mac "$prefix-$USERNET_BRIDGE")
    USERNET_BRIDGE_IP=172.18.0.1
    USERNET_SUBNET=172.18.0.0/16
    C3_VETH=$(veth_name "$prefix-c3")
    C3_IP=172.18.0.2
    C3_MAC=02:42:ac:12:00:02
}

print_env() {
    cat <<EOF
PREFIX=$PREFIX
NS_HOST=$NS_HOST
NS_C1=$NS_C1
NS_C2=$NS_C2
NS_ROUTER=$NS_ROUTER
NS_SERVER=$NS_SERVER
BRIDGE=$BRIDGE
BRIDGE_IP=$BRIDGE_IP
BRIDGE_MAC=$BRIDGE_MAC
C1_VETH=$C1_VETH
C2_VETH=$C2_VETH
C1_IF=eth0
C2_IF=eth0
C1_IP=$C1_IP
C2_IP=$C2_IP
C1_MAC=$C1_MAC
C2_MAC=$C2_MAC
HOST_UPLINK=$HOST_UPLINK
HOST_IP=$HOST_IP
ROUTER_UPLINK=$ROUTER_UPLINK
ROUTER_IP=$ROUTER_IP
ROUTER_DOWNLINK=$ROUTER_DOWNLINK
ROUTER_SERVER_IP=$ROUTER_SERVER_IP
SERVER_IF=$SERVER_IF
SERVER_IP=$SERVER_IP
USERNET=$USERNET
USERNET_NAME=$USERNET_NAME
USERNET_BRIDGE=$USERNET_BRIDGE
USERNET_BRIDGE_IP=$USERNET_BRIDGE_IP
USERNET_BRIDGE_MAC=$USERNET_BRIDGE_MAC
USERNET_SUBNET=$USERNET_SUBNET
NS_C3=$NS_C3
C3_VETH=$C3_VETH
C3_IF=eth0
C3_IP=$C3_IP
C3_MAC=$C3_MAC
EOF
}

require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (creates network namespaces, veths and iptables rules)"
    local tool
    for tool in ip iptables sysctl sha256sum; do
        command -v "$tool" >/dev/null || die "'$tool' not found in PATH"
    done
    ip netns list >/dev/null 2>&1 || die "'ip netns list' failed: network namespaces are not usable here"
}

ns_exists() {
    [[ -e /run/netns/$1 ]]
}

# Runs a command, turning a failure into one clear line.
step() {
    local out
    if ! out=$("$@" 2>&1); then
        die "failed: $* -- ${out//$'\n'/ }"
    fi
}

in_ns() {
    local ns=$1
    shift
    step ip netns exec "$ns" "$@"
}

# Removes the lab's namespaces. Processes still inside them (a tcpdump or socat left behind)
# would keep a namespace alive after `ip netns del`, so they get SIGTERM (then SIGKILL) first.
teardown() {
    local ns pids removed=0
    for ns in "${ALL_NS[@]}"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                pids=$(ip netns pids "$ns" 2>/dev/null || true)
                [[ -z $pids ]] && break
                sleep 0.1
            done
            if [[ -n $pids ]]; then
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null || true
            fi
        fi
        ip netns del "$ns" 2>/dev/null || echo "$prog: warning: could not delete namespace $ns" >&2
        removed=$((removed + 1))
    done
    return $((removed == 0 ? 1 : 0))
}

new_ns() {
    local ns=$1
    step ip netns add "$ns"
    if [[ ${HOPTRACE_LAB_IPV6:-0} != 1 ]]; then
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        in_ns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    fi
    step ip -n "$ns" link set lo up
}

attach_container() {
    local ns=$1 veth=$2 ip=$3 mac=$4 bridge=${5:-$BRIDGE} gateway=${6:-$BRIDGE_IP}
    step ip -n "$NS_HOST" link add "$veth" type veth peer name eth0 netns "$ns"
    step ip -n "$NS_HOST" link set "$veth" master "$bridge"
    step ip -n "$NS_HOST" link set "$veth" up
    step ip -n "$ns" link set eth0 address "$mac"
    step ip -n "$ns" addr add "$ip/16" dev eth0
    step ip -n "$ns" link set eth0 up
    step ip -n "$ns" route add default via "$gateway"
}

# `docker network create`: a second bridge with its own subnet and masquerade rule, c3 on it.
add_usernet() {
    step ip -n "$NS_HOST" link add "$USERNET_BRIDGE" address "$USERNET_BRIDGE_MAC" type bridge
    step ip -n "$NS_HOST" addr add "$USERNET_BRIDGE_IP/16" dev "$USERNET_BRIDGE"
    step ip -n "$NS_HOST" link set "$USERNET_BRIDGE" up
    attach_container "$NS_C3" "$C3_VETH" "$C3_IP" "$C3_MAC" "$USERNET_BRIDGE" "$USERNET_BRIDGE_IP"
    in_ns "$NS_HOST" iptables -t nat -A POSTROUTING -s "$USERNET_SUBNET" ! -o "$USERNET_BRIDGE" -j MASQUERADE
}

cmd_up() {
    require_root
    local ns
    for ns in "${ALL_NS[@]}"; do
        ns_exists "$ns" && die "lab '$PREFIX' already exists (namespace $ns); run '$prog down $PREFIX' first"
    done
    # Whatever happens from here on, a failed `up` leaves nothing behind.
    trap 'echo "$prog: up failed, removing the partial lab" >&2; teardown || true' EXIT

    for ns in "${UP_NS[@]}"; do
        new_ns "$ns"
    done

    # Host: the bridge and the two containers on it.
    step ip -n "$NS_HOST" link add "$BRIDGE" address "$BRIDGE_MAC" type bridge
    step ip -n "$NS_HOST" addr add "$BRIDGE_IP/16" dev "$BRIDGE"
    step ip -n "$NS_HOST" link set "$BRIDGE" up
    attach_container "$NS_C1" "$C1_VETH" "$C1_IP" "$C1_MAC"
    attach_container "$NS_C2" "$C2_VETH" "$C2_IP" "$C2_MAC"

    # Uplink host eth0 <-> router eth0.
    step ip -n "$NS_HOST" link add "$HOST_UPLINK" type veth peer name "$ROUTER_UPLINK" netns "$NS_ROUTER"
    step ip -n "$NS_HOST" addr add "$HOST_IP/24" dev "$HOST_UPLINK"
    step ip -n "$NS_HOST" link set "$HOST_UPLINK" up
    step ip -n "$NS_ROUTER" addr add "$ROUTER_IP/24" dev "$ROUTER_UPLINK"
    step ip -n "$NS_ROUTER" link set "$ROUTER_UPLINK" up
    step ip -n "$NS_HOST" route add default via "$ROUTER_IP"

    # Router eth1 <-> server eth0.
    step ip -n "$NS_ROUTER" link add "$ROUTER_DOWNLINK" type veth peer name "$SERVER_IF" netns "$NS_SERVER"
    step ip -n "$NS_ROUTER" addr add "$ROUTER_SERVER_IP/24" dev "$ROUTER_DOWNLINK"
    step ip -n "$NS_ROUTER" link set "$ROUTER_DOWNLINK" up
    step ip -n "$NS_SERVER" addr add "$SERVER_IP/24" dev "$SERVER_IF"
    step ip -n "$NS_SERVER" link set "$SERVER_IF" up
    step ip -n "$NS_SERVER" route add default via "$ROUTER_SERVER_IP"

    # Forwarding and Docker's masquerade rule.
    in_ns "$NS_HOST" sysctl -qw net.ipv4.ip_forward=1
    in_ns "$NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1
    in_ns "$NS_HOST" iptables -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o "$BRIDGE" -j MASQUERADE
    if ((USERNET)); then
        add_usernet
    fi

    trap - EXIT
    local w=${#NS_ROUTER}
    echo "lab '$PREFIX' is up:"
    printf '  %-*s %s\n' \
        "$w" "$NS_C1" "eth0 $C1_IP/16 $C1_MAC <-> $C1_VETH in $NS_HOST" \
        "$w" "$NS_C2" "eth0 $C2_IP/16 $C2_MAC <-> $C2_VETH in $NS_HOST" \
        "$w" "$NS_HOST" "$BRIDGE $BRIDGE_IP/16 (ports $C1_VETH $C2_VETH), $HOST_UPLINK $HOST_IP/24, default via $ROUTER_IP" \
        "$w" "" "nat POSTROUTING -s 172.17.0.0/16 ! -o $BRIDGE -j MASQUERADE" \
        "$w" "$NS_ROUTER" "$ROUTER_UPLINK $ROUTER_IP/24, $ROUTER_DOWNLINK $ROUTER_SERVER_IP/24 (connected routes only)" \
        "$w" "$NS_SERVER" "$SERVER_IF $SERVER_IP/24, default via $ROUTER_SERVER_IP"
    if ((USERNET)); then
        printf '  %-*s %s\n' \
            "$w" "$NS_C3" "eth0 $C3_IP/16 $C3_MAC <-> $C3_VETH in $NS_HOST" \
            "$w" "$NS_HOST" "$USERNET_BRIDGE $USERNET_BRIDGE_IP/16 (network $USERNET_NAME, port $C3_VETH)" \
            "$w" "" "nat POSTROUTING -s $USERNET_SUBNET ! -o $USERNET_BRIDGE -j MASQUERADE"
    fi
}

cmd_down() {
    require_root
    if teardown; then
        echo "lab '$PREFIX' removed"
    else
        echo "lab '$PREFIX': nothing to remove"
    fi
}

cmd_status() {
    require_root
    local ns found=0
    for ns in "${ALL_NS[@]}"; do
        if ! ns_exists "$ns"; then
            # c3 exists only in labs built with --usernet: report it absent only when asked for.
            [[ $ns == "$NS_C3" ]] && ((!USERNET)) && continue
            echo "== $ns: absent"
            continue
        fi
        found=1
        echo "== $ns"
        echo "-- links"
        ip -n "$ns" -o link show | sed 's/^/   /'
        echo "-- addresses"
        ip -n "$ns" -br addr show | sed 's/^/   /'
        echo "-- routes"
        ip -n "$ns" route show | sed 's/^/   /'
        if [[ $ns == "$NS_HOST" ]]; then
            echo "-- nat"
            ip netns exec "$ns" iptables -t nat -S | sed 's/^/   /'
        fi
    done
    ((found)) || {
        echo "$prog: lab '$PREFIX' is not up" >&2
        return 1
    }
}

main() {
    local args=() arg
    USERNET=0
    [[ ${HOPTRACE_LAB_USERNET:-0} == 1 ]] && USERNET=1
    for arg in "$@"; do
        if [[ $arg == --usernet ]]; then
            USERNET=1
        else
            args+=("$arg")
        fi
    done
    set -- "${args[@]}"
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local cmd=$1
    PREFIX=${2:-${HOPTRACE_LAB_PREFIX:-hoptrace}}
    [[ $PREFIX =~ ^[a-z0-9][a-z0-9-]{0,9}$ ]] ||
        die "bad prefix '$PREFIX': use 1 to 10 characters from [a-z0-9-], not starting with '-'"
    set_names "$PREFIX"
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
