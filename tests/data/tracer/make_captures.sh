#!/bin/bash
# Makes the captures in this directory (see README.md). Run as root from this directory:
#   sudo ./make_captures.sh
# Builds three network namespaces of its own (a client, a masquerading router, a server), captures
# traffic that stays between them with tcpdump and dumpcap, and removes the namespaces again. Nothing is
# sent to the machine's own interfaces or to outside addresses.
#
#   hopt-a (client)              hopt-r (router, MASQUERADE out of r1)            hopt-b (server)
#   a0 10.99.1.2, .3  ------- r0 10.99.1.1         r1 10.99.2.1 ------------- b0 10.99.2.2
#      fd99:1::2                 fd99:1::1            fd99:2::1                   fd99:2::2
#   a0 10.99.100.2 ---------- r0 10.99.100.1     tagged 802.1Q VLAN 100 on the wire
#   a0 10.99.120.2 ---------- r0 10.99.120.1     tagged 802.1ad VLAN 300 + 802.1Q VLAN 20 (QinQ)
set -euo pipefail
cd "$(dirname "$0")"

A=hopt-a R=hopt-r B=hopt-b
PIDS=()
LOGS=$(mktemp -d /tmp/hopt-captures.XXXXXX)  # capture tools' stderr, kept for a look afterwards

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in $A $R $B; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# start_capture NS LOGFILE COMMAND... : runs a capture tool in NS in the background and waits until it
# listens. Sets CAPTURE_PID. tcpdump runs with --immediate-mode: otherwise packets wait in a TPACKET_V3
# block for up to a second, and those still waiting when it is stopped never reach the file.
start_capture() {
    local ns=$1 log=$LOGS/$2; shift 2
    ip netns exec "$ns" "$@" 2>"$log" &  # not through in_ns: $! must be the capture tool itself
    CAPTURE_PID=$!
    PIDS+=("$CAPTURE_PID")
    for _ in $(seq 50); do
        grep -qE 'listening on|Capturing on' "$log" && { sleep 0.3; return; }
        sleep 0.1
    done
    echo "capture did not start: $*" >&2; cat "$log" >&2; exit 1
}
stop_capture() { sleep 0.5; kill -INT "$1"; wait "$1" || true; }

udp_send() {  # udp_send NS DEST PORT SOURCEPORT TEXT [socat address options]
    printf '%s' "$5" | in_ns "$1" socat -u - "UDP-SENDTO:$2:$3,sourceport=$4${6:-}"
}
tcp_talk() {  # tcp_talk NS DEST PORT SOURCEPORT TEXT : connect, send TEXT, read the echo, close
    printf '%s' "$5" | in_ns "$1" socat -t 1 - "TCP:$2:$3,sourceport=$4" >/dev/null
}

cleanup
ip netns add $A; ip netns add $R; ip netns add $B
for ns in $A $R $B; do in_ns $ns ip link set lo up; done
ip -n $R link add r0 type veth peer name a0 netns $A
ip -n $R link add r1 type veth peer name b0 netns $B

ip -n $A addr add 10.99.1.2/24 dev a0
ip -n $A addr add 10.99.1.3/24 dev a0
ip -n $A addr add fd99:1::2/64 dev a0 nodad
ip -n $A link set a0 up
ip -n $A route add default via 10.99.1.1
ip -n $A -6 route add default via fd99:1::1

ip -n $R addr add 10.99.1.1/24 dev r0
ip -n $R addr add fd99:1::1/64 dev r0 nodad
ip -n $R addr add 10.99.2.1/24 dev r1
ip -n $R addr add fd99:2::1/64 dev r1 nodad
ip -n $R link set r0 up
ip -n $R link set r1 up
in_ns $R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# Port ranges force the ports to be rewritten (the clients use source ports outside them).
in_ns $R iptables -t nat -A POSTROUTING -o r1 -p udp -j MASQUERADE --to-ports 40000-40999
in_ns $R iptables -t nat -A POSTROUTING -o r1 -p tcp -j MASQUERADE --to-ports 41000-41999
in_ns $R iptables -t nat -A POSTROUTING -o r1 -j MASQUERADE

ip -n $B addr add 10.99.2.2/24 dev b0
ip -n $B addr add fd99:2::2/64 dev b0 nodad
ip -n $B link set b0 up
ip -n $B route add default via 10.99.2.1
ip -n $B -6 route add default via fd99:2::1

# VLANs between a0 and r0. This machine's kernel has no 802.1Q support (no VLAN subinterfaces, no tc
# vlan action), so two tc BPF programs (vlan_tag.bpf.c) stand in for them: on a0 and r0, frames of
# 10.99.100.0/24 leave tagged VLAN 100, frames of 10.99.120.0/24 leave double tagged (802.1ad 300
# outside, 802.1Q 20 inside), and arriving frames are untagged before the stack sees them.
clang -O2 -target bpfel -I/usr/include/x86_64-linux-gnu -c vlan_tag.bpf.c -o /tmp/hopt_vlan_tag.o
for side in "$A a0 2" "$R r0 1"; do
    set -- $side
    ip -n "$1" addr add "10.99.100.$3/24" dev "$2"
    ip -n "$1" addr add "10.99.120.$3/24" dev "$2"
    in_ns "$1" tc qdisc add dev "$2" clsact
    in_ns "$1" tc filter add dev "$2" egress bpf da obj /tmp/hopt_vlan_tag.o sec tag
    in_ns "$1" tc filter add dev "$2" ingress bpf da obj /tmp/hopt_vlan_tag.o sec untag
done

# Servers in hopt-b: UDP sink on 5000 and 5001 (IPv6), TCP echo on 6000 (IPv4 and IPv6).
ip netns exec $B socat -u UDP4-RECV:5000 /dev/null & PIDS+=($!)
ip netns exec $B socat -u UDP6-RECV:5001 /dev/null & PIDS+=($!)
ip netns exec $B socat TCP4-LISTEN:6000,reuseaddr,fork PIPE & PIDS+=($!)
ip netns exec $B socat TCP6-LISTEN:6000,ipv6only=1,reuseaddr,fork PIPE & PIDS+=($!)
sleep 1

echo "== interface indexes (for any_sll2.pcap)"
ip -n $R -o link show | awk '{print $1, $2}' | tee ifindex.txt

echo "== eth_ipv4.pcap, eth_ipv4_nano.pcap"
start_capture $A us.log tcpdump -i a0 --immediate-mode -U -w eth_ipv4.pcap; P1=$CAPTURE_PID
start_capture $A ns.log tcpdump -i a0 --immediate-mode -U --time-stamp-precision nano -w eth_ipv4_nano.pcap; P2=$CAPTURE_PID
in_ns $A ping -c 3 -i 0.2 10.99.2.2
for i in 1 2 3; do udp_send $A 10.99.2.2 5000 5555 "datagram $i"; done
tcp_talk $A 10.99.2.2 6000 6666 "hello over tcp"
in_ns $A ping -c 1 -s 2000 10.99.2.2   # 2028-byte IPv4 packet: two fragments on a 1500-byte link
stop_capture $P1; stop_capture $P2

echo "== eth_ipv6.pcap"
start_capture $A v6.log tcpdump -i a0 --immediate-mode -U --time-stamp-precision nano -w eth_ipv6.pcap; P1=$CAPTURE_PID
in_ns $A ping -6 -c 3 -i 0.2 fd99:2::2
for i in 1 2; do udp_send $A '[fd99:2::2]' 5001 5557 "datagram6 $i"; done
tcp_talk $A '[fd99:2::2]' 6000 6667 "hello over tcp6"
in_ns $A ping -6 -c 1 -s 2000 fd99:2::2   # fragment extension headers
ip -n $A addr add fd99:1::99/64 dev a0 nodad  # joins a solicited-node group: MLDv2 report, hop-by-hop header
sleep 0.5
stop_capture $P1

echo "== vlan.pcap"
start_capture $A vlan.log tcpdump -i a0 --immediate-mode -U -w vlan.pcap; P1=$CAPTURE_PID
in_ns $A ping -c 2 -i 0.2 10.99.100.1
in_ns $A ping -c 2 -i 0.2 10.99.120.1
stop_capture $P1

echo "== any_sll.pcap, any_sll2.pcap"
start_capture $R sll.log tcpdump -i any -y LINUX_SLL --immediate-mode -U -w any_sll.pcap; P1=$CAPTURE_PID
start_capture $R sll2.log tcpdump -i any -y LINUX_SLL2 --immediate-mode -U -w any_sll2.pcap; P2=$CAPTURE_PID
in_ns $A ping -c 2 -i 0.2 10.99.2.2
udp_send $A 10.99.2.2 5000 5555 "through the router"
stop_capture $P1; stop_capture $P2

echo "== icmp_errors.pcap"
start_capture $A err.log tcpdump -i a0 --immediate-mode -U --time-stamp-precision nano -w icmp_errors.pcap; P1=$CAPTURE_PID
udp_send $A 10.99.2.2 9 5556 "nobody listens on 9"          # port unreachable from hopt-b
sleep 0.3
in_ns $A ping -c 1 -t 1 10.99.2.2 || true                  # time exceeded from hopt-r
sleep 0.3
udp_send $A '[fd99:2::2]' 9 5558 "nobody listens on 9 (v6)"  # ICMPv6 port unreachable
sleep 0.3
in_ns $A ping -6 -c 1 -t 1 fd99:2::2 || true               # ICMPv6 time exceeded
sleep 0.3
stop_capture $P1

echo "== nat_inside.pcap (a0, microseconds), nat_outside.pcap (r1, nanoseconds)"
start_capture $A in.log tcpdump -i a0 --immediate-mode -U -w nat_inside.pcap; P1=$CAPTURE_PID
start_capture $R out.log tcpdump -i r1 --immediate-mode -U --time-stamp-precision nano -w nat_outside.pcap; P2=$CAPTURE_PID
# Two pings with the same echo id from two addresses: after masquerading they would clash, so the
# router rewrites the id of the second.
in_ns $A ping -c 3 -i 0.2 -e 4242 -I 10.99.1.2 10.99.2.2 & PING=$!
in_ns $A ping -c 3 -i 0.2 -e 4242 -I 10.99.1.3 10.99.2.2
wait $PING
for i in 1 2; do udp_send $A 10.99.2.2 5000 5555 "nat datagram $i"; done
tcp_talk $A 10.99.2.2 6000 6668 "hello through nat"
udp_send $A 10.99.2.2 9 5559 "closed port behind nat"   # the port unreachable is un-NATed on the way back
sleep 0.3
stop_capture $P1; stop_capture $P2

echo "== router.pcapng (dumpcap, two interfaces)"
start_capture $R dumpcap.log dumpcap -i r0 -i r1 -w router.pcapng; P1=$CAPTURE_PID
in_ns $A ping -c 2 -i 0.2 10.99.2.2
stop_capture $P1

echo "== snapped.pcap (snap length 96)"
start_capture $A snap.log tcpdump -i a0 --immediate-mode -U -s 96 -w snapped.pcap; P1=$CAPTURE_PID
udp_send $A 10.99.2.2 5000 5555 "$(head -c 1000 /dev/zero | tr '\0' u)"
tcp_talk $A 10.99.2.2 6000 6669 "$(head -c 1400 /dev/zero | tr '\0' t)"
stop_capture $P1

trap - EXIT
cleanup

echo "== files made from the captures"
mergecap -w merged.pcapng nat_inside.pcap nat_outside.pcap
editcap -F pcapng eth_ipv4_nano.pcap eth_ipv4_nano.pcapng

# truncated.pcap: 20 bytes cut off the end, so the last packet record is incomplete.
size=$(stat -c %s eth_ipv4.pcap); head -c $((size - 20)) eth_ipv4.pcap > truncated.pcap

# truncated.pcapng and corrupt_blocklen.pcapng start from router.pcapng, whose blocks are: section
# header, two interface descriptions, packets, interface statistics. pcapng_blocks.py prints the offset
# and length of each block (it only walks the block lengths).
# truncated.pcapng: cut 10 bytes into the packet data of the last enhanced packet block.
last_epb=$(python3 pcapng_blocks.py router.pcapng | awk '$2 == 6 {off = $1} END {print off}')
head -c $((last_epb + 28 + 10)) router.pcapng > truncated.pcapng
# corrupt_blocklen.pcapng: the trailing length of the third enhanced packet block (sixth block) set to
# its leading length + 4, so that the two no longer agree.
cp router.pcapng corrupt_blocklen.pcapng
read -r off type len < <(python3 pcapng_blocks.py router.pcapng | awk '$2 == 6' | sed -n 3p)
python3 -c "import struct; f = open('corrupt_blocklen.pcapng', 'r+b'); f.seek($off + $len - 4); f.write(struct.pack('<I', $len + 4))"

# corrupt_caplen.pcap: the captured length of the second record set to 0x7fffffff. The record header of
# packet 2 starts at 24 (file header) + 16 (record header) + caplen of packet 1; its caplen field is 8
# bytes into it. The field is little-endian (tcpdump on x86 writes host order).
cp eth_ipv4.pcap corrupt_caplen.pcap
c1=$(tshark -r eth_ipv4.pcap -c 1 -T fields -e frame.cap_len)
printf '\xff\xff\xff\x7f' | dd of=corrupt_caplen.pcap bs=1 seek=$((24 + 16 + c1 + 8)) conv=notrunc status=none

editcap -F pcap -T user0 eth_ipv4.pcap unsupported_linktype.pcap
editcap -F pcapng -T user0 eth_ipv4.pcap unsupported_linktype.pcapng
printf 'This is a text file, not a capture.\n' > not_a_capture.txt

python3 make_synthetic.py

echo "== done"; ls -l
