#!/usr/bin/env python3
"""End-to-end test of IPv6 through the lab: ping6 and UDP over IPv6 from c1 to the server.

The lab is built with HOPTRACE_LAB_IPV6=1 (IPv6 stays on) and gets IPv6 addresses here: c1
fd00:17::2/64, docker0 fd00:17::1/64, the host's eth0 fd00:43::116/64, the router fd00:43::1/64
and fd00:51::1/64, the server fd00:51::10/64 (all nodad), routes, forwarding, and Docker's
masquerade `ip6tables -t nat -A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE`. Then
`hoptrace trace --netns c1 --host-netns host` around a ping6 and a UDP echo exchange: every
journey complete at all four points, and the masquerade of the source to fd00:43::116 between
docker0 and eth0 (and back on the replies).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (run_lab_test, Checks, expect, expected_points, guarded, netns_left, query, report_json, run,  # noqa: E402
                         short, workdir)

C1, BRIDGE, HOST, ROUTER_UP, ROUTER_DOWN, SERVER = ("fd00:17::2", "fd00:17::1", "fd00:43::116", "fd00:43::1",
                                                    "fd00:51::1", "fd00:51::10")
PING_COUNT = 5
PING_IDENT = 4646
UDP_COUNT = 5
UDP_PORT = 5353
UDP_SPORT = 40666

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
    os.environ["HOPTRACE_LAB_IPV6"] = "1"  # lab.sh leaves IPv6 on in its namespaces
    return run_lab_test("hard-ipv6", "IPv6 ping and UDP through the masquerade", run_ipv6)


def setup(lab: lablib.Lab) -> None:
    e = lab.env
    for ns, dev, addr in (("c1", "eth0", C1), ("host", lab.ifname["bridge"], BRIDGE),
                          ("host", lab.ifname["uplink"], HOST), ("router", e["ROUTER_UPLINK"], ROUTER_UP),
                          ("router", e["ROUTER_DOWNLINK"], ROUTER_DOWN), ("server", e["SERVER_IF"], SERVER)):
        lab.run(ns, "ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad")
    lab.run("c1", "ip", "-6", "route", "add", "default", "via", BRIDGE)
    lab.run("host", "ip", "-6", "route", "add", "default", "via", ROUTER_UP)
    lab.run("server", "ip", "-6", "route", "add", "default", "via", ROUTER_DOWN)
    for ns in ("host", "router"):
        lab.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    lab.run("host", "ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00:17::/64", "!", "-o",
            lab.ifname["bridge"], "-j", "MASQUERADE")


def run_ipv6(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    if checks("IPv6 addresses, routes, forwarding and ip6tables MASQUERADE set up in the lab",
              lambda: setup(lab) or f"c1 {C1} → host {HOST} → server {SERVER}") is None:
        return
    c1 = lab.ns["c1"]
    db = tmp / "v6.db"
    ping_out, udp_out = tmp / "ping.out", tmp / "udp.out"
    traffic = " && ".join([
        shlex.join(["ip", "netns", "exec", c1, "ping", "-6", "-n", "-c", str(PING_COUNT), "-i", "0.2", "-e",
                    str(PING_IDENT), "-W", "2", SERVER]) + f" > {shlex.quote(str(ping_out))}",
        shlex.join(["ip", "netns", "exec", c1, sys.executable, "-c", CLIENT, SERVER, str(UDP_PORT), str(UDP_SPORT),
                    str(UDP_COUNT)]) + f" > {shlex.quote(str(udp_out))}",
    ])
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
    if checks("hoptrace trace around ping6 and UDP over IPv6 exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return

    def traffic_ok() -> str:
        ping = ping_out.read_text()
        expect(f"{PING_COUNT} packets transmitted, {PING_COUNT} received" in ping, f"ping: {short(ping)}")
        echoed = udp_out.read_text().split()
        expect(echoed == ["ok"] * UDP_COUNT, f"udp client: {echoed}")
        return f"{PING_COUNT}/{PING_COUNT} pings, {UDP_COUNT}/{UDP_COUNT} UDP echoes"
    checks("the IPv6 traffic went through", traffic_ok)

    report = report_json(hoptrace, db)
    names = [p[0] for p in expected_points(lab, ("c1",))]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]

    def mine(f: dict) -> bool:
        o = f["original"]
        if norm(o["src"]) != C1 or norm(o["dst"]) != SERVER:
            return False
        return (f["proto"] == "icmpv6" and o.get("id") == PING_IDENT) or \
               (f["proto"] == "udp" and o.get("sport") == UDP_SPORT and o.get("dport") == UDP_PORT)
    flows = {f["proto"]: f for f in report["flows"] if mine(f)}
    if checks("an icmpv6 and a udp flow from c1 to the server", lambda: expect(
            sorted(flows) == ["icmpv6", "udp"],
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
            expect(norm(tr["src"]) == HOST and norm(tr["dst"]) == SERVER, f"translated {tr}")
            rw = [(x["field"], norm(x["from"]), norm(x["to"]), tuple(x["between"]), x["direction"])
                  for x in flow["rewrites"] if x["field"] in ("src", "dst")]
            want = sorted([("src", C1, HOST, (bridge, uplink), "forward"), ("dst", HOST, C1, (uplink, bridge), "reply")])
            expect(sorted(rw) == want, f"address rewrites {rw}, want {want}")
            return f"src {C1} → {HOST} between {bridge} and {uplink}, back on the replies"
        checks(f"{proto}: masquerade of the source to {HOST} reported", masquerade)


if __name__ == "__main__":
    sys.exit(main())
