#!/usr/bin/env bash
# The README's first command: installs what hoptrace needs, builds it, builds the lab (network namespaces
# shaped like a Docker host: two containers on docker0, an uplink with MASQUERADE, a router, a server),
# traces traffic from the containers through it, and prints the report. Run as root on Debian 12.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${HOPTRACE_LAB_PREFIX:-htdemo}
build=${HOPTRACE_BUILD_DIR:-$root/build}
out=${HOPTRACE_DEMO_DIR:-$root/demo-out}

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: the lab needs root (network namespaces, iptables); run: sudo $0" >&2
  exit 1
fi
"$root/examples/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target hoptrace
hoptrace="$build/cli/hoptrace"

rm -rf "$out" && mkdir -p "$out"
trap '"$root/examples/lab.sh" down "$prefix" >/dev/null 2>&1 || true' EXIT
"$root/examples/lab.sh" up "$prefix"

echo
echo "== capturing at every point with tcpdump while both containers ping and send UDP to the server"
"$root/examples/scenario.sh" "$prefix" "$out/pcaps"

echo
echo "== hoptrace import: one point per capture, then correlate"
"$hoptrace" import --db "$out/demo.db" \
  c1-eth0="$out/pcaps/c1-eth0.pcap" c1-veth="$out/pcaps/c1-veth.pcap" \
  c2-eth0="$out/pcaps/c2-eth0.pcap" c2-veth="$out/pcaps/c2-veth.pcap" \
  docker0="$out/pcaps/docker0.pcap" uplink="$out/pcaps/uplink.pcap"
"$hoptrace" report --db "$out/demo.db" --format json -o "$out/report.json"
echo
"$hoptrace" report --db "$out/demo.db"
echo
echo "The database is $out/demo.db (open it with sqlite3; docs/schema.md), the JSON report $out/report.json."
