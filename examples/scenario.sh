#!/usr/bin/env bash
# hoptrace scenario: captures the same traffic at every point of the lab's container paths.
#
# Usage: scenario.sh [PREFIX] OUTDIR [--tcp-mb N]
#
# Brings the lab (examples/lab.sh) up if it is not, and removes it at the end only if it built
# it. Starts tcpdump (nanosecond timestamps, --immediate-mode, waits for "listening on") on:
#   c1-eth0.pcap c2-eth0.pcap   eth0 inside each container namespace
#   c1-veth.pcap c2-veth.pcap   the host-side veths
#   docker0.pcap                the bridge
#   uplink.pcap                 eth0 of the host namespace
#   host-any.pcap               tcpdump -i any -y LINUX_SLL2 in the host namespace
#   server-eth0.pcap            eth0 of the server (beyond the router; the far end)
# and records host-links.txt (`ip -o link` of the host namespace: ifindex -> name).
# Traffic: c1 and c2 both `ping -c 5 -i 0.2 -e 7777` the server (same ICMP id), both send 5 UDP
# datagrams from source port 40000 to the server's 5353 (socat echoes them; the last payload is
# the same from both), and with --tcp-mb N c1 uploads N MiB over TCP to the server.
# Afterwards: conntrack -L of the host namespace -> conntrack.txt, and a summary.
#
# The work is done by tests/e2e/lablib.py, so the e2e tests send exactly the same traffic.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lablib=$here/../tests/e2e/lablib.py

usage() {
    echo "usage: scenario.sh [PREFIX] OUTDIR [--tcp-mb N]" >&2
    exit 2
}

positional=()
tcp_mb=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --tcp-mb)
        [[ $# -ge 2 ]] || usage
        tcp_mb=$2
        shift 2
        ;;
    --tcp-mb=*)
        tcp_mb=${1#*=}
        shift
        ;;
    -h | --help) usage ;;
    -*)
        echo "scenario.sh: unknown option $1" >&2
        usage
        ;;
    *)
        positional+=("$1")
        shift
        ;;
    esac
done

case ${#positional[@]} in
1)
    prefix=${HOPTRACE_LAB_PREFIX:-hoptrace}
    outdir=${positional[0]}
    ;;
2)
    prefix=${positional[0]}
    outdir=${positional[1]}
    ;;
*) usage ;;
esac

[[ $EUID -eq 0 ]] || {
    echo "scenario.sh: must run as root" >&2
    exit 1
}
[[ $tcp_mb =~ ^[0-9]+([.][0-9]+)?$ ]] || {
    echo "scenario.sh: --tcp-mb wants a number of MiB, got '$tcp_mb'" >&2
    exit 2
}

exec python3 "$lablib" scenario --prefix "$prefix" --tcp-mb "$tcp_mb" "$outdir"
