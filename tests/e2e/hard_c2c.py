#!/usr/bin/env python3
"""End-to-end test of container-to-container traffic on one bridge (issue "Container to container on
one bridge").

In a fresh lab, a socat listener in c2 and, captured with `hoptrace trace --netns c1 --netns c2
--host-netns host`: c1 pings c2 (5 echoes, id 4646), c1 pings the server through the uplink (5
echoes, id 4747), and c1 uploads NBYTES to c2 over TCP. tcpdump runs on the same six points at
the same time, as the independent record. The report must show:

- the six points of both containers' paths (c1 eth0 and veth, c2 eth0 and veth, the shared docker0
  and uplink) with their roles and unique names;
- the TCP flow c1 → c2 and the ping c1 → c2 on the path c1 eth0 → c1's veth → c2's veth → c2 eth0,
  with no rewrite (the tuple tcpdump saw inside c2 is the one c1 sent), as many forward and reply
  journeys as tcpdump saw packets each way, every journey complete at the four points in order,
  three hops per direction with non-negative latencies, docker0 listed as an observer (as many
  sightings as tcpdump saw there, switched between the two veths) and named in the narrative
  ("crossed docker0 (bridge-local, no NAT)");
- the ping to the server on its usual path c1 eth0 → veth → docker0 → eth0 with the masquerade
  rewrite conntrack -L shows;
- no losses in any flow.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (LABLIB_PY, Checks, expect, expected_points, query, report_json, run,  # noqa: E402
                         run_lab_test, short, tcpdumps_on)

PORT = 5001
NBYTES = 300_000
C2C_PING_IDENT = 4646
SERVER_PING_IDENT = 4747
PINGS = 5


def main() -> int:
    return run_lab_test("hard-c2c", "container to container on one bridge", run_c2c)


def count(pcap: Path, display_filter: str) -> int:
    return len(lablib.tshark_fields(pcap, ["frame.number"], display_filter))


def run_c2c(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1_ip, c2_ip, server_ip, host_ip = lab.ip["c1"], lab.ip["c2"], lab.ip["server"], lab.ip["host"]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]
    points = expected_points(lab, ("c1", "c2"))
    c1_eth0, c1_veth = f"{lab.ns['c1']}:eth0", lab.veth["c1"]
    c2_eth0, c2_veth = f"{lab.ns['c2']}:eth0", lab.veth["c2"]
    four = [c1_eth0, c1_veth, c2_veth, c2_eth0]

    listener = lab.popen("c2", "socat", "-u", f"TCP-LISTEN:{PORT},reuseaddr", "STDOUT", stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    got = {"n": 0}

    def drain() -> None:
        while chunk := listener.stdout.read(1 << 16):
            got["n"] += len(chunk)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    db = tmp / "c2c.db"
    ping_c2, ping_server = tmp / "ping-c2.out", tmp / "ping-server.out"
    c1 = lab.ns["c1"]
    traffic = " && ".join([
        shlex.join(["ip", "netns", "exec", c1, "ping", "-n", "-c", str(PINGS), "-i", "0.2", "-e", str(C2C_PING_IDENT),
                    "-W", "2", c2_ip]) + f" > {shlex.quote(str(ping_c2))}",
        shlex.join(["ip", "netns", "exec", c1, "ping", "-n", "-c", str(PINGS), "-i", "0.2", "-e",
                    str(SERVER_PING_IDENT), "-W", "2", server_ip]) + f" > {shlex.quote(str(ping_server))}",
        shlex.join(["ip", "netns", "exec", c1, sys.executable, str(LABLIB_PY), "_tcp-client", c2_ip, str(PORT),
                    str(NBYTES)]),
    ])
    try:
        lab.wait_listening("c2", "tcp", PORT)
        lab.flush_conntrack()
        caps = tcpdumps_on(lab, points, tmp)
        try:
            r = run(hoptrace, "trace", "--netns", lab.ns["c1"], "--netns", lab.ns["c2"], "--host-netns",
                    lab.ns["host"], "--db", db, "--", "sh", "-c", traffic, timeout=120)
        finally:
            pcap = dict(zip(caps, lablib.stop_all(list(caps.values()))))
        listener.wait(10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        reader.join(10)
    conntrack = lab.conntrack()
    if checks("hoptrace trace --netns c1 --netns c2 around the pings and the upload exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return

    def sent() -> str:
        for out in (ping_c2, ping_server):
            expect(f"{PINGS} packets transmitted, {PINGS} received" in out.read_text(), short(out.read_text()))
        expect(got["n"] == NBYTES, f"c2's listener got {got['n']} of {NBYTES} bytes")
        expect(all(c.dropped == 0 for c in caps.values()), f"tcpdump drops {[c.dropped for c in caps.values()]}")
        return f"{PINGS}/{PINGS} echoes to c2 and to the server, {NBYTES} bytes at c2, tcpdump dropped nothing"
    checks("the traffic went through (ping, socat, tcpdump's counters)", sent)

    report = report_json(hoptrace, db)

    def six_points() -> str:
        got_points = sorted((p["name"], p["role"], p["netns"], p["ifname"]) for p in report["points"])
        expect(got_points == sorted(points), f"points {got_points}, want {sorted(points)}")
        return ", ".join(f"{name} ({role})" for name, role, _, _ in points)
    checks("six points: each container's eth0 and veth, the shared docker0 and uplink, unique names", six_points)

    def flows_of(proto: str, dst: str, port: int) -> list[dict]:
        key = "id" if proto == "icmp" else "dport"
        return [f for f in report["flows"] if f["proto"] == proto and f["original"]["src"] == c1_ip
                and f["original"]["dst"] == dst and f["original"][key] == port]
    tcp, ping, out = flows_of("tcp", c2_ip, PORT), flows_of("icmp", c2_ip, C2C_PING_IDENT), \
        flows_of("icmp", server_ip, SERVER_PING_IDENT)
    if checks("one flow each: TCP c1 → c2, ping c1 → c2, ping c1 → server", lambda: expect(
            len(tcp) == len(ping) == len(out) == 1,
            f"tcp {len(tcp)}, ping {len(ping)}, server ping {len(out)}: "
            f"{[(f['proto'], f['original']) for f in report['flows']]}")
            or f"flows {tcp[0]['id']}, {ping[0]['id']}, {out[0]['id']}") is None:
        return
    ids = {tcp[0]["id"]: "tcp", ping[0]["id"]: "icmp"}

    # What tcpdump saw at each point, per direction: the independent count of every c1 ↔ c2 packet.
    filters = {"tcp": (f"tcp && ip.src=={c1_ip} && ip.dst=={c2_ip} && tcp.dstport=={PORT}",
                       f"tcp && ip.src=={c2_ip} && ip.dst=={c1_ip} && tcp.srcport=={PORT}"),
               "icmp": (f"icmp.type==8 && icmp.ident=={C2C_PING_IDENT} && ip.src=={c1_ip} && ip.dst=={c2_ip}",
                        f"icmp.type==0 && icmp.ident=={C2C_PING_IDENT} && ip.src=={c2_ip} && ip.dst=={c1_ip}")}
    seen = {proto: {name: tuple(count(pcap[name], flt) for flt in filters[proto]) for name in four + [bridge]}
            for proto in filters}

    for flow in (tcp[0], ping[0]):
        proto = flow["proto"]
        forward, reply = seen[proto][c1_eth0]

        def path(flow=flow) -> str:
            expect(flow["path"] == four, f"path {flow['path']}, want {four}")
            return " → ".join(four)
        checks(f"{proto}: path c1 eth0 → c1's veth → c2's veth → c2 eth0 (docker0 not on it)", path)

        def no_rewrite(flow=flow, proto=proto) -> str:
            expect(flow["rewrites"] == [], f"rewrites {flow['rewrites']}")
            expect(flow["translated"] == flow["original"], f"translated {flow['translated']}")
            if proto == "tcp":  # the SYN as tcpdump saw it arrive inside c2: the tuple c1 sent
                syn = lablib.tshark_fields(pcap[c2_eth0], ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"],
                                           f"{filters['tcp'][0]} && tcp.flags.syn==1 && tcp.flags.ack==0")
                o = flow["original"]
                expect(syn == [(o["src"], str(o["sport"]), o["dst"], str(o["dport"]))], f"SYN at c2 {syn}, flow {o}")
            return "no rewrite; the tuple inside c2 is the one c1 sent"
        checks(f"{proto}: no rewrite (tcpdump inside c2 agrees)", no_rewrite)

        def journeys(flow=flow, proto=proto, forward=forward, reply=reply) -> str:
            counts = {name: seen[proto][name] for name in four}
            expect(len(set(counts.values())) == 1, f"tcpdump counts differ between the four points: {counts}")
            expect((flow["forward_journeys"], flow["reply_journeys"]) == (forward, reply),
                   f"journeys {flow['forward_journeys']}/{flow['reply_journeys']}, tcpdump {forward}/{reply}")
            rows = query(db, "SELECT p.journey_id, j.direction, pt.name FROM packets p JOIN journeys j "
                             "ON j.id = p.journey_id JOIN points pt ON pt.id = p.point_id "
                             "WHERE j.flow_id = ? AND p.hop IS NOT NULL ORDER BY p.journey_id, p.hop", (flow["id"],))
            paths: dict[int, tuple[str, list[str]]] = {}
            for jid, direction, name in rows:
                paths.setdefault(jid, (direction, []))[1].append(name)
            bad = [(jid, d, p) for jid, (d, p) in paths.items() if p != (four if d == "forward" else four[::-1])]
            expect(not bad, f"{len(bad)} journeys not complete at the four points in order, e.g. {bad[:3]}")
            expect(len(paths) == forward + reply, f"{len(paths)} journeys, tcpdump {forward} + {reply} packets")
            return f"{forward} forward and {reply} reply journeys (= tcpdump), each at the four points in order"
        checks(f"{proto}: every forward and reply journey complete at the four points", journeys)

        def hops(flow=flow, forward=forward, reply=reply) -> str:
            want = [("forward", a, b, forward) for a, b in zip(four, four[1:])] + \
                   [("reply", a, b, reply) for a, b in zip(four[::-1], four[::-1][1:])]
            got_hops = [(h["direction"], h["from"], h["to"], h["count"]) for h in flow["hops"]]
            expect(got_hops == want, f"hops {got_hops}, want {want}")
            negative = [h for h in flow["hops"] if h["min_ns"] < 0]
            expect(not negative, f"negative hop latencies {negative}")
            return "; ".join(f"{d} {a}→{b} p50 {h['p50_ns']} ns" for (d, a, b, _), h in zip(want, flow["hops"]))
        checks(f"{proto}: three hops each way, latencies non-negative", hops)

        def observer(flow=flow, proto=proto) -> str:
            at_bridge = seen[proto][bridge]
            want = [{"point": bridge, "direction": "forward", "count": at_bridge[0], "between": [c1_veth, c2_veth]},
                    {"point": bridge, "direction": "reply", "count": at_bridge[1], "between": [c2_veth, c1_veth]}]
            expect(flow["observers"] == want, f"observers {flow['observers']}, want {want}")
            return f"docker0 observed {at_bridge[0]} + {at_bridge[1]} (= tcpdump on docker0), switched between the veths"
        checks(f"{proto}: docker0 is an observer, not a hop", observer)

    def narrative() -> str:
        text = " ".join(r.stdout.split())
        expect(text.count(f"crossed {bridge} (bridge-local, no NAT) to {c2_veth}") == len(ids), short(r.stdout, 3000))
        return f"'crossed {bridge} (bridge-local, no NAT)' in the text report, once per c1 → c2 flow"
    checks("the text report says the bridge saw them cross", narrative)

    def server_ping() -> str:
        f = out[0]
        want_path = [c1_eth0, c1_veth, bridge, uplink]
        expect(f["path"] == want_path, f"path {f['path']}, want {want_path}")
        expect(f["observers"] == [], f"observers {f['observers']}")
        ct = [e for e in conntrack if e.proto == "icmp" and e.original.src == c1_ip and e.original.dst == server_ip]
        expect(len(ct) == 1, f"conntrack -L: {[e.raw for e in conntrack]}")
        t = ct[0].translated()
        expect((f["translated"]["src"], f["translated"]["id"]) == (t.src, t.id), f"translated {f['translated']}, "
               f"conntrack -L {ct[0].raw}")
        expect(t.src == host_ip, f"conntrack -L {ct[0].raw}")
        rw = {(x["direction"], x["field"], str(x["from"]), str(x["to"]), tuple(x["between"])) for x in f["rewrites"]}
        expect(("forward", "src", c1_ip, host_ip, (bridge, uplink)) in rw, f"rewrites {rw}")
        expect(("reply", "dst", host_ip, c1_ip, (uplink, bridge)) in rw, f"rewrites {rw}")
        expect((f["forward_journeys"], f["reply_journeys"]) == (PINGS, PINGS),
               f"journeys {f['forward_journeys']}/{f['reply_journeys']}")
        expect(f.get("conntrack", {}).get("state") == "agrees", f"conntrack {f.get('conntrack')}")
        return f"{' → '.join(want_path)}; src {c1_ip} → {host_ip} between {bridge} and {uplink} (= conntrack -L)"
    checks("the ping to the server, in the same capture: usual path with docker0 and the uplink, masquerade", server_ping)

    def no_losses() -> str:
        lost = [(f["id"], f["proto"], f["original"], f["lost"]) for f in report["flows"] if f["lost"]]
        expect(not lost, f"losses {lost}")
        return f"{len(report['flows'])} flows, none lost"
    checks("no losses (bridge-local traffic is not expected at the uplink)", no_losses)


if __name__ == "__main__":
    sys.exit(main())
