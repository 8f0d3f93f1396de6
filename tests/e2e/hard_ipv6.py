#!/usr/bin/env python3
"""End-to-end test of IPv6 through the lab: ping6, UDP and TCP over IPv6 from c1 to the server.

The lab is built with `lab.sh up --ipv6=nat`, which gives it IPv6 addresses (c1 fd00:17::2/64,
docker0 fd00:17::1/64, the host's eth0 fd00:43::116/64, the router fd00:43::1/64 and fd00:51::1/64,
the server fd00:51::10/64; lab.sh env has them), routes, forwarding, and Docker's masquerade
`ip6tables -t nat -A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE`; the test checks
them with ip and ip6tables-save. Then
`hoptrace trace --netns c1 --host-netns host` around a ping6, a UDP echo exchange and a TCP upload
(IPv6 has no IP id: the fingerprint must tell the packets apart by what else they carry): every
journey complete at all four points, the TCP payload adding up to what was sent, and the masquerade
of the source to fd00:43::116 between docker0 and eth0 (and back on the replies).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (run_lab_test, Checks, TcpSink, expect, expected_points, guarded, netns_left, query, report_json, run,  # noqa: E402
                         short, workdir)

PING_COUNT = 5
PING_IDENT = 4646
UDP_COUNT = 5
UDP_PORT = 5353
UDP_SPORT = 40666
TCP_PORT = 5202
TCP_BYTES = 300_000

TCP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    block = bytes(i % 251 for i in range(int(sys.argv[3])))
    s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):
        pass
print("sent", flush=True)
"""

CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[3])))
s.settimeout(2)
for i in range(int(sys.argv[4])):
    p = f"hoptrace ipv6 udp seq={i}\\n".encode()
    s.sendto(p, (sys.argv[1], int(sys.argv[2])))
    try:
        ok = s.recv(65535) == p
    except OSError:
        ok = False
    print("ok" if ok else "lost", flush=True)
"""


def norm(a: str) -> str:
    return str(ipaddress.ip_address(a))


def main() -> int:
    # "nat": lab.sh fails rather than fall back to routed IPv6 where the kernel has no ip6 nat.
    return run_lab_test("hard-ipv6", "IPv6 ping, UDP and TCP through the masquerade", run_ipv6,
                        lab_options={"ipv6": "nat"})


def check_setup(lab: lablib.Lab) -> str:
    """What lab.sh --ipv6=nat set up, read back from the namespaces."""
    ip6, e = lab.ip6, lab.env
    for ns, dev, role in (("c1", "eth0", "c1"), ("host", lab.ifname["bridge"], "bridge"),
                          ("host", lab.ifname["uplink"], "host"), ("router", e["ROUTER_UPLINK"], "router"),
                          ("router", e["ROUTER_DOWNLINK"], "router_server"), ("server", e["SERVER_IF"], "server")):
        out = lab.run(ns, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global").stdout
        expect(f" {ip6[role]}/64 " in out, f"{ns} {dev} has no {ip6[role]}/64: {short(out)}")
    for ns, gw in (("c1", ip6["bridge"]), ("host", ip6["router"]), ("server", ip6["router_server"])):
        out = lab.run(ns, "ip", "-6", "route", "show", "default").stdout
        expect(f"via {gw} " in out, f"{ns} default route {out.strip()!r}, want via {gw}")
    for ns in ("host", "router"):
        fwd = lab.run(ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip()
        expect(fwd == "1", f"{ns} net.ipv6.conf.all.forwarding = {fwd}")
    nat = lab.run("host", "ip6tables-save", "-t", "nat").stdout.splitlines()
    rule = f"-A POSTROUTING -s {e['BRIDGE_SUBNET6']} ! -o {lab.ifname['bridge']} -j MASQUERADE"
    expect(rule in nat, f"no '{rule}' in ip6tables-save: {short(' | '.join(nat))}")
    return f"c1 {ip6['c1']} → host {ip6['host']} → server {ip6['server']}"


def run_ipv6(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    if checks("IPv6 addresses, routes, forwarding and ip6tables MASQUERADE set up in the lab",
              lambda: check_setup(lab)) is None:
        return
    c1_ip, host_ip, server_ip = (norm(lab.ip6[k]) for k in ("c1", "host", "server"))
    c1 = lab.ns["c1"]

    def topology() -> str:
        import json
        r = run(hoptrace, "topology", "--netns", c1, "--host-netns", lab.ns["host"], "--json")
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        topo = json.loads(r.stdout)
        saved = lab.run("host", "ip6tables-save", "-t", "nat").stdout.splitlines()
        want = [line for line in saved if line.startswith("-A POSTROUTING") and "MASQUERADE" in line]
        got = [n["rule"] for n in topo["nat"] if n.get("family") == "ipv6"]
        expect(want and got == want, f"ipv6 nat rules listed {got}, ip6tables-save has {want}")
        expect(topo["masquerade"] is True, "masquerade false")
        return f"ip6tables' {want[0]!r} listed (family ipv6) beside the IPv4 rule"
    checks("hoptrace topology lists the ip6tables MASQUERADE rule", topology)
    db = tmp / "v6.db"
    ping_out, udp_out, tcp_out = tmp / "ping.out", tmp / "udp.out", tmp / "tcp.out"
    traffic = " && ".join([
        shlex.join(["ip", "netns", "exec", c1, "ping", "-6", "-n", "-c", str(PING_COUNT), "-i", "0.2", "-e",
                    str(PING_IDENT), "-W", "2", server_ip]) + f" > {shlex.quote(str(ping_out))}",
        shlex.join(["ip", "netns", "exec", c1, sys.executable, "-c", CLIENT, server_ip, str(UDP_PORT), str(UDP_SPORT),
                    str(UDP_COUNT)]) + f" > {shlex.quote(str(udp_out))}",
        shlex.join(["ip", "netns", "exec", c1, sys.executable, "-c", TCP_CLIENT, server_ip, str(TCP_PORT),
                    str(TCP_BYTES)]) + f" > {shlex.quote(str(tcp_out))}",
    ])
    sink = TcpSink(lab, TCP_PORT, family="6")
    server = lab.popen("server", "socat", "-T", "2", f"UDP6-RECVFROM:{UDP_PORT},fork,reuseaddr", "PIPE",
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", UDP_PORT)
        lab.flush_conntrack()
        r = run(hoptrace, "trace", "--netns", c1, "--host-netns", lab.ns["host"], "--db", db, "--", "sh", "-c",
                traffic, timeout=120)
    finally:
        server.terminate()
        server.wait(5)
        received = sink.close()
    if checks("hoptrace trace around ping6, UDP and TCP over IPv6 exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return

    def traffic_ok() -> str:
        ping = ping_out.read_text()
        expect(f"{PING_COUNT} packets transmitted, {PING_COUNT} received" in ping, f"ping: {short(ping)}")
        echoed = udp_out.read_text().split()
        expect(echoed == ["ok"] * UDP_COUNT, f"udp client: {echoed}")
        expect(received == TCP_BYTES, f"the TCP sink received {received} of {TCP_BYTES} bytes")
        return f"{PING_COUNT}/{PING_COUNT} pings, {UDP_COUNT}/{UDP_COUNT} UDP echoes, {received} TCP bytes"
    checks("the IPv6 traffic went through", traffic_ok)

    report = report_json(hoptrace, db)
    names = [p[0] for p in expected_points(lab, ("c1",))]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]

    def mine(f: dict) -> bool:
        o = f["original"]
        if norm(o["src"]) != c1_ip or norm(o["dst"]) != server_ip:
            return False
        return (f["proto"] == "icmpv6" and o.get("id") == PING_IDENT) or \
               (f["proto"] == "udp" and o.get("sport") == UDP_SPORT and o.get("dport") == UDP_PORT) or \
               (f["proto"] == "tcp" and o.get("dport") == TCP_PORT)
    flows = {f["proto"]: f for f in report["flows"] if mine(f)}
    if checks("an icmpv6, a udp and a tcp flow from c1 to the server", lambda: expect(
            sorted(flows) == ["icmpv6", "tcp", "udp"],
            f"found {sorted(flows)}; all flows: {[(f['proto'], f['original']) for f in report['flows']]}")
            or ", ".join(f"{p} flow {f['id']}" for p, f in sorted(flows.items()))) is None:
        return

    for proto, sent in (("icmpv6", PING_COUNT), ("udp", UDP_COUNT)):
        flow = flows[proto]

        def complete(flow=flow, sent=sent) -> str:
            expect(flow.get("path") == names, f"path {flow.get('path')}, want {names}")
            rows = query(db, "SELECT direction, sightings, COUNT(*) FROM journeys WHERE flow_id = ? GROUP BY 1, 2",
                         (flow["id"],))
            expect(sorted(rows) == [("forward", 4, sent), ("reply", 4, sent)],
                   f"journeys (direction, sightings, count) {rows}, want {sent} each way at 4 points")
            expect(flow["lost"] == [], f"lost {flow['lost']}")
            return f"{sent} forward + {sent} reply journeys, each at all 4 points: {' → '.join(names)}"
        checks(f"{proto}: every journey complete at all four points", complete)

        def masquerade(flow=flow) -> str:
            tr = flow["translated"]
            expect(norm(tr["src"]) == host_ip and norm(tr["dst"]) == server_ip, f"translated {tr}")
            rw = [(x["field"], norm(x["from"]), norm(x["to"]), tuple(x["between"]), x["direction"])
                  for x in flow["rewrites"] if x["field"] in ("src", "dst")]
            want = sorted([("src", c1_ip, host_ip, (bridge, uplink), "forward"),
                           ("dst", host_ip, c1_ip, (uplink, bridge), "reply")])
            expect(sorted(rw) == want, f"address rewrites {rw}, want {want}")
            return f"src {c1_ip} → {host_ip} between {bridge} and {uplink}, back on the replies"
        checks(f"{proto}: masquerade of the source to {host_ip} reported", masquerade)

    tcp = flows["tcp"]

    def tcp_complete() -> str:
        expect(tcp.get("path") == names, f"path {tcp.get('path')}, want {names}")
        rows = query(db, "SELECT direction, sightings, COUNT(*) FROM journeys WHERE flow_id = ? GROUP BY 1, 2",
                     (tcp["id"],))
        expect(all(n == 4 for _, n, _ in rows), f"journeys (direction, sightings, count) {rows}: not all at 4 points")
        at_c1 = query(db, "SELECT count(*) FROM packets p JOIN points pt ON pt.id = p.point_id WHERE pt.role = "
                          "'container' AND p.proto = 6 AND (p.sport = ? OR p.dport = ?)", (TCP_PORT, TCP_PORT))[0][0]
        journeys = sum(c for _, _, c in rows)
        expect(journeys == at_c1, f"{journeys} journeys, {at_c1} TCP packets at c1's eth0")
        sent = query(db, "SELECT sum(p.payload_len) FROM journeys j JOIN packets p ON p.journey_id = j.id AND "
                         "p.hop = 0 WHERE j.flow_id = ? AND j.direction = 'forward' AND j.relation IS NULL",
                     (tcp["id"],))[0][0]
        expect(sent == TCP_BYTES, f"forward payload {sent}, sent {TCP_BYTES}")
        expect(tcp["lost"] == [], f"lost {tcp['lost']}")
        return f"{journeys} journeys (= packets at c1's eth0), all at 4 points, {sent} payload bytes = sent"
    checks("tcp: every segment and ACK one journey at all four points, payload = bytes sent", tcp_complete)


if __name__ == "__main__":
    sys.exit(main())
