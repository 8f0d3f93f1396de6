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
# With --publish [HOSTPORT:]CPORT[/tcp|/udp] (repeatable, or HOPTRACE_LAB_PUBLISH="8080:80,53/udp"),
# `up` publishes a port of c1 the way `docker run -p HOSTPORT:CPORT` does (HOSTPORT defaults to
# CPORT, the protocol to tcp), with dockerd's rules (iptables backend, default userland-proxy):
#   nat     -N DOCKER
#           -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
#           -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
#           -A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
#           -A DOCKER -i docker0 -j RETURN
#           -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
#   filter  -N DOCKER
#           -A FORWARD -o docker0 -j DOCKER
#           -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
# so a client beyond the router reaches c1:80 at 192.168.43.116:8080, and so does the host itself.
# Containers do not: Docker leaves them to its docker-proxy (the RETURN), which the lab has not;
# the hairpin MASQUERADE is inert for the same reason, installed because Docker installs it. The
# FORWARD policy stays ACCEPT; the accept rule is there as in Docker (its counters show the flow).
#
# With --ipv6 (or HOPTRACE_LAB_IPV6=1), IPv6 stays on (without duplicate address detection) and
# every lab link gets a ULA /64:
#   c1 fd00:17::2, c2 fd00:17::3, docker0 fd00:17::1, host eth0 fd00:43::116, router eth0
#   fd00:43::1 and eth1 fd00:51::1, server fd00:51::10 (with --usernet: br-… fd00:18::1, c3
#   fd00:18::2), default routes like IPv4's, IPv6 forwarding in the host and the router, and
#   Docker's `ip6tables -t nat -A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE`, published
#   ports included (DNAT to [fd00:17::2]:CPORT). Where the kernel has no IPv6 nat, the lab is
#   routed instead, like Docker without ip6tables: no masquerade, and the router gets a route to
#   the container prefixes via the host. --ipv6=nat insists on the masquerade (fails without it),
#   --ipv6=routed never masquerades; HOPTRACE_LAB_IPV6 takes the same values (1 = auto, 0 = off).
#
# Usage: lab.sh up|down|status|env [PREFIX] [--usernet] [--publish SPEC]... [--ipv6[=auto|nat|routed]]
#   PREFIX defaults to $HOPTRACE_LAB_PREFIX, else "hoptrace"; [a-z0-9-], at most 10 characters.
#   up      builds the lab; refuses (exit 1) if any of its namespaces already exists.
#           A failed `up` removes what it had made.
#           --usernet / HOPTRACE_LAB_USERNET=1: also the user-defined network and PREFIX-c3.
#           --publish / HOPTRACE_LAB_PUBLISH: published ports of c1 (options replace the variable).
#           --ipv6 / HOPTRACE_LAB_IPV6: IPv6 addresses, routes and masquerade (option wins).
#   down    removes the namespaces (and with them every interface, route, nat rule and conntrack
#           entry in them; PREFIX-c3 too, with or without --usernet); processes still running
#           inside them are sent SIGTERM first. Safe to run twice.
#   status  prints namespaces, interfaces, addresses, routes (IPv6's too where it is on, less the
#           fe80::/64 ones) and the host's nat and filter rules (ip6tables' too where IPv6 is on).
#   env     prints the lab's names and addresses as shell assignments (no root needed), the
#           user-defined network's (NS_C3, USERNET_BRIDGE, ...) and the IPv6 addresses (C1_IP6,
#           HOST_IP6, SERVER_IP6, ...) included whether they are up or not, and the options it was
#           given: USERNET=0|1, IPV6=0|auto|nat|routed, PUBLISHED_PORTS=8080:80/tcp,... (HOSTPORT:
#           CPORT/PROTO, comma-separated); tests/e2e/lablib.py reads them so the names live in one
#           place.
#   Usage errors (a bad option, prefix or port) print one line and exit 2.
#
# Without --ipv6, IPv6 is disabled in the lab's namespaces (link-local addresses, router
# solicitations and MLD reports would otherwise add traffic nobody sent). (HOPTRACE_LAB_IPV6=1 used
# to only keep IPv6 on, without addresses; it now builds the IPv6 lab.)
# The router knows only its two connected subnets: without the MASQUERADE rule in the host
# namespace, replies to 172.17.0.0/16 are unroutable there.
set -euo pipefail

readonly prog=lab.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $prog up|down|status|env [PREFIX] [--usernet] [--publish [HOSTPORT:]CPORT[/tcp|/udp]]..." \
        "[--ipv6[=auto|nat|routed]]" >&2
    exit 2
}

# A bad argument: one line, exit 2.
usage_error() {
    echo "$prog: $*" >&2
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
    BRIDGE_SUBNET=172.17.0.0/16
    # IPv6 (--ipv6): ULA /64s, the interface ids echoing the IPv4 addresses.
    BRIDGE_SUBNET6=fd00:17::/64
    BRIDGE_IP6=fd00:17::1
    C1_IP6=fd00:17::2
    C2_IP6=fd00:17::3
    HOST_IP6=fd00:43::116
    ROUTER_IP6=fd00:43::1
    ROUTER_SERVER_IP6=fd00:51::1
    SERVER_IP6=fd00:51::10
    USERNET_SUBNET6=fd00:18::/64
    USERNET_BRIDGE_IP6=fd00:18::1
    C3_IP6=fd00:18::2
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
BRIDGE_SUBNET=$BRIDGE_SUBNET
IPV6=$IPV6
BRIDGE_SUBNET6=$BRIDGE_SUBNET6
BRIDGE_IP6=$BRIDGE_IP6
C1_IP6=$C1_IP6
C2_IP6=$C2_IP6
HOST_IP6=$HOST_IP6
ROUTER_IP6=$ROUTER_IP6
ROUTER_SERVER_IP6=$ROUTER_SERVER_IP6
SERVER_IP6=$SERVER_IP6
USERNET_SUBNET6=$USERNET_SUBNET6
USERNET_BRIDGE_IP6=$USERNET_BRIDGE_IP6
C3_IP6=$C3_IP6
PUBLISHED_PORTS=$(IFS=,; echo "${PUBLISHED[*]}")
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
    if [[ $IPV6 == 0 ]]; then
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        in_ns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    else
        # No duplicate address detection, for link-local addresses too: with it, replies to c3
        # sent in the first second after `up` arrived a second late (while addresses were tentative).
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0
        in_ns "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
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

# --ipv6: a ULA /64 on every link (nodad: usable at once, no tentative addresses), default routes,
# forwarding, and Docker's ip6tables masquerade where the kernel has IPv6 nat (else, or with
# --ipv6=routed, a route on the router to the container prefixes instead). Sets IPV6_NAT.
add_ipv6() {
    local ns dev addr
    while read -r ns dev addr; do
        step ip -n "$ns" -6 addr add "$addr/64" dev "$dev" nodad
    done <<EOF
$NS_C1 eth0 $C1_IP6
$NS_C2 eth0 $C2_IP6
$NS_HOST $BRIDGE $BRIDGE_IP6
$NS_HOST $HOST_UPLINK $HOST_IP6
$NS_ROUTER $ROUTER_UPLINK $ROUTER_IP6
$NS_ROUTER $ROUTER_DOWNLINK $ROUTER_SERVER_IP6
$NS_SERVER $SERVER_IF $SERVER_IP6
EOF
    if ((USERNET)); then
        step ip -n "$NS_HOST" -6 addr add "$USERNET_BRIDGE_IP6/64" dev "$USERNET_BRIDGE" nodad
        step ip -n "$NS_C3" -6 addr add "$C3_IP6/64" dev eth0 nodad
        step ip -n "$NS_C3" -6 route add default via "$USERNET_BRIDGE_IP6"
    fi
    step ip -n "$NS_C1" -6 route add default via "$BRIDGE_IP6"
    step ip -n "$NS_C2" -6 route add default via "$BRIDGE_IP6"
    step ip -n "$NS_HOST" -6 route add default via "$ROUTER_IP6"
    step ip -n "$NS_SERVER" -6 route add default via "$ROUTER_SERVER_IP6"
    in_ns "$NS_HOST" sysctl -qw net.ipv6.conf.all.forwarding=1
    in_ns "$NS_ROUTER" sysctl -qw net.ipv6.conf.all.forwarding=1

    IPV6_NAT=routed
    IPV6_NOTE=
    if [[ $IPV6 != routed ]]; then
        local out
        if ! command -v ip6tables >/dev/null; then
            IPV6_NOTE="'ip6tables' not found in PATH"
        elif ! out=$(ip netns exec "$NS_HOST" ip6tables -t nat -A POSTROUTING -s "$BRIDGE_SUBNET6" \
            ! -o "$BRIDGE" -j MASQUERADE 2>&1); then
            IPV6_NOTE="no IPv6 nat here: ${out//$'\n'/ }"
        else
            IPV6_NAT=masquerade
        fi
        [[ $IPV6 == nat && $IPV6_NAT != masquerade ]] && die "--ipv6=nat: $IPV6_NOTE"
    fi
    if [[ $IPV6_NAT == masquerade ]]; then
        if ((USERNET)); then
            in_ns "$NS_HOST" ip6tables -t nat -A POSTROUTING -s "$USERNET_SUBNET6" ! -o "$USERNET_BRIDGE" -j MASQUERADE
        fi
    else
        # Docker's routed IPv6: the containers keep their addresses; the network must route to them.
        step ip -n "$NS_ROUTER" -6 route add "$BRIDGE_SUBNET6" via "$HOST_IP6"
        if ((USERNET)); then
            step ip -n "$NS_ROUTER" -6 route add "$USERNET_SUBNET6" via "$HOST_IP6"
        fi
    fi
}

# Splits a normalised published port "HOSTPORT:CPORT/PROTO" into P_HOST, P_CONTAINER, P_PROTO.
split_published() {
    P_HOST=${1%%:*}
    P_CONTAINER=${1#*:}
    P_CONTAINER=${P_CONTAINER%/*}
    P_PROTO=${1##*/}
}

# `docker run -p HOSTPORT:CPORT/PROTO` on c1: the rules dockerd installs (iptables backend, default
# userland-proxy=true), for iptables or ip6tables. $2 is c1's address, $3 loopback (the OUTPUT jump
# skips it, as Docker does unless route_localnet is set).
publish_ports() {
    local ipt=$1 c1=$2 loopback=$3 to spec
    local -a nat=(in_ns "$NS_HOST" "$ipt" -t nat) filter=(in_ns "$NS_HOST" "$ipt" -t filter)
    "${nat[@]}" -N DOCKER
    "${nat[@]}" -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
    "${nat[@]}" -A OUTPUT ! -d "$loopback" -m addrtype --dst-type LOCAL -j DOCKER
    # Traffic from the containers themselves is docker-proxy's in Docker; the lab has no proxy.
    "${nat[@]}" -A DOCKER -i "$BRIDGE" -j RETURN
    "${filter[@]}" -N DOCKER
    "${filter[@]}" -A FORWARD -o "$BRIDGE" -j DOCKER
    for spec in "${PUBLISHED[@]}"; do
        split_published "$spec"
        to=$c1:$P_CONTAINER
        [[ $ipt == ip6tables ]] && to="[$c1]:$P_CONTAINER"
        local -a port=(-p "$P_PROTO" -m "$P_PROTO")
        # Hairpin (c1 to its own published port): inert without hairpin mode, as in Docker.
        "${nat[@]}" -A POSTROUTING -s "$c1" -d "$c1" "${port[@]}" --dport "$P_CONTAINER" -j MASQUERADE
        "${nat[@]}" -A DOCKER ! -i "$BRIDGE" "${port[@]}" --dport "$P_HOST" -j DNAT --to-destination "$to"
        "${filter[@]}" -A DOCKER -d "$c1" ! -i "$BRIDGE" -o "$BRIDGE" "${port[@]}" --dport "$P_CONTAINER" -j ACCEPT
    done
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
    in_ns "$NS_HOST" iptables -t nat -A POSTROUTING -s "$BRIDGE_SUBNET" ! -o "$BRIDGE" -j MASQUERADE
    if ((USERNET)); then
        add_usernet
    fi
    if [[ $IPV6 != 0 ]]; then
        add_ipv6
    fi
    if ((${#PUBLISHED[@]})); then
        publish_ports iptables "$C1_IP" 127.0.0.0/8
        if [[ $IPV6_NAT == masquerade ]]; then
            publish_ports ip6tables "$C1_IP6" ::1/128
        fi
    fi

    trap - EXIT
    local w=${#NS_ROUTER}
    echo "lab '$PREFIX' is up:"
    printf '  %-*s %s\n' \
        "$w" "$NS_C1" "eth0 $C1_IP/16 $C1_MAC <-> $C1_VETH in $NS_HOST" \
        "$w" "$NS_C2" "eth0 $C2_IP/16 $C2_MAC <-> $C2_VETH in $NS_HOST" \
        "$w" "$NS_HOST" "$BRIDGE $BRIDGE_IP/16 (ports $C1_VETH $C2_VETH), $HOST_UPLINK $HOST_IP/24, default via $ROUTER_IP" \
        "$w" "" "nat POSTROUTING -s $BRIDGE_SUBNET ! -o $BRIDGE -j MASQUERADE" \
        "$w" "$NS_ROUTER" "$ROUTER_UPLINK $ROUTER_IP/24, $ROUTER_DOWNLINK $ROUTER_SERVER_IP/24 (connected routes only)" \
        "$w" "$NS_SERVER" "$SERVER_IF $SERVER_IP/24, default via $ROUTER_SERVER_IP"
    if ((USERNET)); then
        printf '  %-*s %s\n' \
            "$w" "$NS_C3" "eth0 $C3_IP/16 $C3_MAC <-> $C3_VETH in $NS_HOST" \
            "$w" "$NS_HOST" "$USERNET_BRIDGE $USERNET_BRIDGE_IP/16 (network $USERNET_NAME, port $C3_VETH)" \
            "$w" "" "nat POSTROUTING -s $USERNET_SUBNET ! -o $USERNET_BRIDGE -j MASQUERADE"
    fi
    if [[ $IPV6 != 0 ]]; then
        print_ipv6_map "$w"
    fi
    if ((${#PUBLISHED[@]})); then
        local spec
        echo "published ports of $NS_C1 (nat DOCKER chain from PREROUTING and OUTPUT, filter DOCKER from FORWARD):"
        for spec in "${PUBLISHED[@]}"; do
            split_published "$spec"
            printf '  %s\n' "$P_PROTO $HOST_IP:$P_HOST -> $C1_IP:$P_CONTAINER"
            if [[ $IPV6_NAT == masquerade ]]; then
                printf '  %s\n' "$P_PROTO [$HOST_IP6]:$P_HOST -> [$C1_IP6]:$P_CONTAINER"
            fi
        done
    fi
}

print_ipv6_map() {
    local w=$1 router6="connected routes only"
    local nat6="ip6tables nat POSTROUTING -s $BRIDGE_SUBNET6 ! -o $BRIDGE -j MASQUERADE"
    if [[ $IPV6_NAT == routed ]]; then
        router6="route $BRIDGE_SUBNET6 via $HOST_IP6"
        ((USERNET)) && router6+=", $USERNET_SUBNET6 via $HOST_IP6"
        nat6="no IPv6 masquerade, routed${IPV6_NOTE:+ ($IPV6_NOTE)}"
    fi
    echo "IPv6 ($IPV6_NAT):"
    printf '  %-*s %s\n' \
        "$w" "$NS_C1" "eth0 $C1_IP6/64, default via $BRIDGE_IP6" \
        "$w" "$NS_C2" "eth0 $C2_IP6/64, default via $BRIDGE_IP6" \
        "$w" "$NS_HOST" "$BRIDGE $BRIDGE_IP6/64, $HOST_UPLINK $HOST_IP6/64, default via $ROUTER_IP6, forwarding" \
        "$w" "" "$nat6"
    if ((USERNET)); then
        printf '  %-*s %s\n' \
            "$w" "$NS_C3" "eth0 $C3_IP6/64, default via $USERNET_BRIDGE_IP6" \
            "$w" "$NS_HOST" "$USERNET_BRIDGE $USERNET_BRIDGE_IP6/64"
    fi
    printf '  %-*s %s\n' \
        "$w" "$NS_ROUTER" "$ROUTER_UPLINK $ROUTER_IP6/64, $ROUTER_DOWNLINK $ROUTER_SERVER_IP6/64 ($router6), forwarding" \
        "$w" "$NS_SERVER" "$SERVER_IF $SERVER_IP6/64, default via $ROUTER_SERVER_IP6"
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
        local v6=0
        [[ $(ip netns exec "$ns" sysctl -n net.ipv6.conf.all.disable_ipv6 2>/dev/null) == 0 ]] && v6=1
        if ((v6)); then
            ip -n "$ns" -6 route show | grep -v '^fe80::/64 ' | sed 's/^/   /' || true
        fi
        if [[ $ns == "$NS_HOST" ]]; then
            echo "-- nat"
            ip netns exec "$ns" iptables -t nat -S | sed 's/^/   /'
            echo "-- filter (policies left out)"
            ip netns exec "$ns" iptables -S | grep -v '^-P ' | sed 's/^/   /' || true
            if ((v6)) && command -v ip6tables >/dev/null; then
                echo "-- nat6"
                ip netns exec "$ns" ip6tables -t nat -S 2>&1 | sed 's/^/   /' || true
                echo "-- filter6 (policies left out)"
                ip netns exec "$ns" ip6tables -S 2>&1 | grep -v '^-P ' | sed 's/^/   /' || true
            fi
        fi
    done
    ((found)) || {
        echo "$prog: lab '$PREFIX' is not up" >&2
        return 1
    }
}

# Appends a published port "[HOSTPORT:]CPORT[/tcp|/udp]" to PUBLISHED as "HOSTPORT:CPORT/PROTO".
add_published() {
    local spec=$1 from=$2 re='^(([0-9]{1,5}):)?([0-9]{1,5})(/(tcp|udp))?$'
    [[ $spec =~ $re ]] ||
        usage_error "bad $from '$spec': use [HOSTPORT:]CPORT[/tcp|/udp], e.g. 8080:80 or 53/udp"
    local cport=$((10#${BASH_REMATCH[3]})) hport proto=${BASH_REMATCH[5]:-tcp} p
    hport=$((10#${BASH_REMATCH[2]:-${BASH_REMATCH[3]}}))
    ((hport >= 1 && hport <= 65535 && cport >= 1 && cport <= 65535)) ||
        usage_error "bad $from '$spec': ports are 1 to 65535"
    for p in "${PUBLISHED[@]}"; do
        [[ ${p%%:*}/${p##*/} == "$hport/$proto" ]] &&
            usage_error "bad $from '$spec': host port $hport/$proto is already published ($p)"
    done
    PUBLISHED+=("$hport:$cport/$proto")
}

main() {
    local args=() arg ipv6_opt="" specs=() spec
    local -i have_publish=0
    USERNET=0
    [[ ${HOPTRACE_LAB_USERNET:-0} == 1 ]] && USERNET=1
    while (($#)); do
        arg=$1
        shift
        case $arg in
        --usernet) USERNET=1 ;;
        --ipv6) ipv6_opt=auto ;;
        --ipv6=*)
            ipv6_opt=${arg#--ipv6=}
            [[ $ipv6_opt =~ ^(auto|nat|routed)$ ]] || usage_error "bad '$arg': use --ipv6, --ipv6=nat or --ipv6=routed"
            ;;
        --publish | --publish=*)
            if [[ $arg == --publish ]]; then
                (($#)) || usage_error "--publish needs a value: [HOSTPORT:]CPORT[/tcp|/udp]"
                arg=--publish=$1
                shift
            fi
            specs+=("${arg#--publish=}")
            have_publish=1
            ;;
        -h | --help) usage ;;
        -*) usage_error "unknown option '$arg' (try --help)" ;;
        *) args+=("$arg") ;;
        esac
    done

    # IPv6: the option, else HOPTRACE_LAB_IPV6 (1 = auto; it used to mean "keep IPv6 on" alone).
    IPV6=0
    case ${HOPTRACE_LAB_IPV6:-0} in
    0 | "") ;;
    1 | auto) IPV6=auto ;;
    nat | routed) IPV6=$HOPTRACE_LAB_IPV6 ;;
    *) usage_error "bad HOPTRACE_LAB_IPV6='$HOPTRACE_LAB_IPV6': use 0, 1 (= auto), nat or routed" ;;
    esac
    [[ -n $ipv6_opt ]] && IPV6=$ipv6_opt
    IPV6_NAT=none

    # Published ports: the options, else HOPTRACE_LAB_PUBLISH (comma- or space-separated).
    PUBLISHED=()
    if ((have_publish)); then
        for spec in "${specs[@]}"; do
            add_published "$spec" --publish
        done
    else
        IFS=', ' read -r -a specs <<<"${HOPTRACE_LAB_PUBLISH:-}"
        for spec in "${specs[@]}"; do
            add_published "$spec" HOPTRACE_LAB_PUBLISH
        done
    fi

    set -- "${args[@]}"
    [[ $# -ge 1 && $# -le 2 ]] || usage
    local cmd=$1
    PREFIX=${2:-${HOPTRACE_LAB_PREFIX:-hoptrace}}
    [[ $PREFIX =~ ^[a-z0-9][a-z0-9-]{0,9}$ ]] ||
        usage_error "bad prefix '$PREFIX': use 1 to 10 characters from [a-z0-9-], not starting with '-'"
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
