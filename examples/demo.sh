#!/usr/bin/env bash
# The README's first command: installs what hoptrace needs, builds it, builds the lab (network namespaces
# shaped like a Docker host: two containers on docker0, an uplink with MASQUERADE, a router, a server),
# and traces traffic from the containers through it. Run as root on Debian 12. No Docker engine needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${HOPTRACE_LAB_PREFIX:-htdemo}
build=${HOPTRACE_BUILD_DIR:-$root/build}

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: the lab needs root (network namespaces, iptables); run: sudo $0" >&2
  exit 1
fi
"$root/examples/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target hoptrace
hoptrace="$build/cli/hoptrace"

"$root/examples/lab.sh" down "$prefix" >/dev/null 2>&1 || true
trap '"$root/examples/lab.sh" down "$prefix" >/dev/null 2>&1 || true' EXIT
"$root/examples/lab.sh" up "$prefix"

run() { printf '\n$ %s\n' "$*"; "$@"; }

echo; echo "== 1. The path of container c1, discovered with netlink"
run "$hoptrace" topology --netns "$prefix-c1" --host-netns "$prefix-host"

# `--user root`: under sudo, hoptrace runs CMD as the user who ran sudo; `ip netns exec` needs root.
echo; echo "== 2. One command instead of four tcpdumps: trace a ping from c1 through every hop"
run "$hoptrace" trace --netns "$prefix-c1" --host-netns "$prefix-host" --user root -- \
  ip netns exec "$prefix-c1" ping -c 3 -i 0.2 198.51.100.10

echo; echo "== 3. Both containers ping with the same ICMP id: masquerade must rewrite the second one's id"
run "$hoptrace" trace --netns "$prefix-c1" --netns "$prefix-c2" --host-netns "$prefix-host" --quiet --user root -- \
  sh -c "ip netns exec $prefix-c1 ping -q -c 3 -i 0.2 -e 7777 198.51.100.10 &
         sleep 0.1; ip netns exec $prefix-c2 ping -q -c 3 -i 0.2 -e 7777 198.51.100.10; wait"

echo; echo "== 4. traceroute from c1: who answered each TTL, which of our points each probe passed, round trips"
run "$hoptrace" trace --netns "$prefix-c1" --host-netns "$prefix-host" --quiet --user root -- \
  ip netns exec "$prefix-c1" traceroute -n -q 2 -N 1 198.51.100.10
