#!/usr/bin/env python3
"""End-to-end test of `hoptrace trace` and `hoptrace capture` on live traffic in the lab.

1. `hoptrace trace --netns c1 --host-netns host --db LIVE -- <traffic>` around a ping, a UDP
   exchange (lablib's UDP client, the server echoes) and a 2 MiB TCP upload from c1, while
   tcpdump (nanosecond) runs on the same four points: started before hoptrace, stopped after it.
   The tcpdump files are imported (`hoptrace import`) into another database and the two must
   agree on the flows of that traffic: original and translated tuples, rewrites, journeys per
   flow and direction, and per-point packet counts (counted from the packets table by tuple, not
   through correlation). Both are also checked against what was sent and against
   `conntrack -L`; the text report must show the masquerade rewrite and "conntrack agrees".
2. `hoptrace capture --db Y --netns c1 --netns c2 --host-netns host -- <both containers ping
   with the same ICMP id>`: six points (docker0 and eth0 shared), both flows, c2's id rewritten.
3. `hoptrace trace --netns c3` (the lab's user-defined network): the ping's path through br-…
   and its masquerade; and the other ways a capture stops: SIGINT and --count.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Background, Checks, TcpSink, expect, expected_points, guarded, netns_left, query,  # noqa: E402
                         report_json, run, short, tcp_client_argv, tcpdumps_on, udp_client_argv,
                         udp_echo_server, workdir)

PING_IDENT = 4242
PING_COUNT = 5
UDP_COUNT = 5
TCP_BYTES = 2 * 1024 * 1024
PROTO_NUM = {"icmp": 1, "tcp": 6, "udp": 17}


def tuple_of(t: dict, proto: str) -> tuple:
    if proto == "icmp":
        return (t["src"], t["dst"], t["id"])
    return (t["src"], t["dst"], t["sport"], t["dport"])


def my_flows(report: dict, lab: lablib.Lab, container: str = "c1", ping_ident: int = PING_IDENT) -> dict[str, dict]:
    """The report's flows of the traffic this test sent from `container`: {proto: flow}."""
    out = {}
    for f in report["flows"]:
        o = f["original"]
        if o["src"] != lab.ip[container] or o["dst"] != lab.ip["server"]:
            continue
        if (f["proto"] == "icmp" and o["id"] == ping_ident) or \
           (f["proto"] == "udp" and o["sport"] == lablib.UDP_SPORT and o["dport"] == lablib.UDP_DPORT) or \
           (f["proto"] == "tcp" and o["dport"] == lablib.TCP_PORT):
            expect(f["proto"] not in out, f"two {f['proto']} flows from {container}: {out.get(f['proto'])} and {f}")
            out[f["proto"]] = f
    return out


def journeys_by_direction(db: Path, flow_id: int) -> dict[str, int]:
    return dict(query(db, "SELECT direction, COUNT(*) FROM journeys WHERE flow_id = ? GROUP BY direction", (flow_id,)))


def packets_per_point(db: Path, flow: dict) -> dict[str, int]:
    """Rows of the packets table at each point that carry the flow's tuples (original or
    translated, either direction), counted by address and port/ICMP id, not by journey."""
    proto = flow["proto"]
    o, t = flow["original"], flow["translated"]
    if proto == "icmp":  # an echo reply keeps the request's id
        tuples = {(x["src"], x["dst"], x["id"]) for x in (o, t)} | {(x["dst"], x["src"], x["id"]) for x in (o, t)}
        rows = query(db, "SELECT pt.name, p.src, p.dst, p.icmp_id FROM packets p JOIN points pt ON pt.id = p.point_id "
                         "WHERE p.proto = 1 AND p.icmp_type IN (0, 8)")
        return dict(Counter(name for name, *tup in rows if tuple(tup) in tuples))
    tuples = set()
    for x in (o, t):
        tuples.add((x["src"], x["dst"], x["sport"], x["dport"]))
        tuples.add((x["dst"], x["src"], x["dport"], x["sport"]))
    rows = query(db, "SELECT pt.name, p.src, p.dst, p.sport, p.dport FROM packets p JOIN points pt "
                     "ON pt.id = p.point_id WHERE p.proto = ?", (PROTO_NUM[proto],))
    return dict(Counter(name for name, *tup in rows if tuple(tup) in tuples))


def rewrites_of(flow: dict) -> list[tuple]:
    return sorted((r["field"], str(r["from"]), str(r["to"]), tuple(r["between"]), r["direction"], r.get("packets"))
                  for r in flow["rewrites"])


def flow_text(report_text: str, flow: dict) -> str:
    """The block of `render_text` for one flow: from its "Flow N" line to the next one."""
    blocks = report_text.split("\nFlow ")
    for b in blocks[1:]:
        if b.split()[0] == str(flow["id"]):
            return "Flow " + b
    return ""


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(170)
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-live-trace-") as tmp, lablib.Lab(usernet=True) as lab:
        prefixes.append(lab.prefix)
        guarded(checks, "trace around ping, UDP and TCP, compared with tcpdump", run_trace, checks, hoptrace, lab, tmp)
        guarded(checks, "capture of two containers", run_two_containers, checks, hoptrace, lab, tmp)
        guarded(checks, "trace through the user-defined network", run_usernet, checks, hoptrace, lab, tmp)
        guarded(checks, "SIGINT and --count stop a capture", run_stops, checks, hoptrace, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


def run_trace(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    live_db, tcpdump_db = tmp / "live.db", tmp / "tcpdump.db"
    points = expected_points(lab, ("c1",))
    names = [p[0] for p in points]
    c1 = lab.ns["c1"]
    udp_sent = lablib.udp_payloads("c1", UDP_COUNT)
    ping_out, udp_out, tcp_out = tmp / "ping.out", tmp / "udp.out", tmp / "tcp.out"
    traffic = " && ".join([
        shlex.join(["ip", "netns", "exec", c1, "ping", "-n", "-c", str(PING_COUNT), "-i", "0.2", "-e", str(PING_IDENT),
                    "-W", "2", lab.ip["server"]]) + f" > {shlex.quote(str(ping_out))}",
        shlex.join(udp_client_argv(lab, "c1", udp_sent)) + f" > {shlex.quote(str(udp_out))}",
        shlex.join(tcp_client_argv(lab, "c1", TCP_BYTES)) + f" > {shlex.quote(str(tcp_out))} 2>&1",
    ])
    lab.flush_conntrack()
    with udp_echo_server(lab):
        sink = TcpSink(lab)
        caps = tcpdumps_on(lab, points, tmp)
        try:
            r = run(hoptrace, "trace", "--netns", c1, "--host-netns", lab.ns["host"], "--db", live_db, "--",
                    "sh", "-c", traffic, timeout=120)
        finally:
            lablib.stop_all(list(caps.values()), settle=0.5)
            received = sink.close(timeout=5)
    conntrack = [e for e in lab.conntrack() if e.original.src == lab.ip["c1"]]

    ok = checks("hoptrace trace around ping, UDP and TCP exits 0",
                lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
                or f"{len(r.stdout.splitlines())} report lines; {short(r.stderr.splitlines()[0] if r.stderr else '')}")
    if ok is None:
        return

    def traffic_ok() -> str:
        ping = ping_out.read_text()
        expect(f"{PING_COUNT} packets transmitted, {PING_COUNT} received" in ping, f"ping: {short(ping)}")
        echoed = udp_out.read_text().split()
        expect(echoed == ["ok"] * UDP_COUNT, f"udp client: {echoed}")
        expect(received == TCP_BYTES, f"server received {received} of {TCP_BYTES} bytes: {short(tcp_out.read_text())}")
        return f"{PING_COUNT}/{PING_COUNT} pings, {UDP_COUNT}/{UDP_COUNT} UDP echoes, {received} TCP bytes"
    checks("the traffic went through", traffic_ok)

    def drops() -> str:
        for c in caps.values():
            expect(c.dropped == 0, f"tcpdump on {c.iface}: {c.dropped} dropped by the kernel")
        rows = query(live_db, "SELECT name, kernel_drops FROM points")
        expect(all(d == 0 for _, d in rows), f"hoptrace kernel drops: {rows}")
        return "tcpdump and hoptrace: 0 kernel drops at every point"
    checks("no kernel drops (else the comparison means nothing)", drops)

    def do_import() -> str:
        files = [f"{name}={caps[name].path}" for name in names]
        ri = run(hoptrace, "import", "--db", tcpdump_db, *files, timeout=120)
        expect(ri.returncode == 0, f"hoptrace import exited {ri.returncode}: {short(ri.stderr)}")
        return f"{len(files)} tcpdump files, {sum(lablib.packet_count(caps[n].path) for n in names)} packets"
    if checks("hoptrace import of the tcpdump files", do_import) is None:
        return

    live, imported = report_json(hoptrace, live_db), report_json(hoptrace, tcpdump_db)
    live_flows, tcpdump_flows = {}, {}

    def flows_found() -> str:
        live_flows.update(my_flows(live, lab))
        tcpdump_flows.update(my_flows(imported, lab))
        expect(sorted(live_flows) == ["icmp", "tcp", "udp"], f"live capture flows: {sorted(live_flows)}")
        expect(sorted(tcpdump_flows) == ["icmp", "tcp", "udp"], f"tcpdump flows: {sorted(tcpdump_flows)}")
        return "icmp, udp and tcp flows from c1 in both databases"
    if checks("the three flows are found live and in tcpdump's capture", flows_found) is None:
        return

    def points_same() -> str:
        got = [(p["name"], p["role"]) for p in live["points"]]
        want = [(n, role) for n, role, *_ in points]
        expect(got == want, f"live points {got}, want {want}")
        expect([p["name"] for p in imported["points"]] == names or sorted(p["name"] for p in imported["points"])
               == sorted(names), f"imported points {[p['name'] for p in imported['points']]}")
        return " → ".join(names)
    checks("live points: the four points of c1's path", points_same)

    for proto in ("icmp", "udp", "tcp"):
        lf, tf = live_flows[proto], tcpdump_flows[proto]

        def same_tuples(lf=lf, tf=tf, proto=proto) -> str:
            expect(tuple_of(lf["original"], proto) == tuple_of(tf["original"], proto),
                   f"original live {lf['original']}, tcpdump {tf['original']}")
            expect(tuple_of(lf["translated"], proto) == tuple_of(tf["translated"], proto),
                   f"translated live {lf['translated']}, tcpdump {tf['translated']}")
            ct = [e for e in conntrack if e.proto == proto]
            expect(len(ct) == 1, f"conntrack -L has {len(ct)} {proto} entries from c1: {[e.raw for e in ct]}")
            tr = ct[0].translated()
            want = (tr.src, tr.dst, tr.id) if proto == "icmp" else (tr.src, tr.dst, tr.sport, tr.dport)
            expect(tuple_of(lf["translated"], proto) == want, f"translated {lf['translated']}, conntrack -L {want}")
            expect(lf["translated"]["src"] == lab.ip["host"], f"not masqueraded: {lf['translated']}")
            return f"{tuple_of(lf['original'], proto)} ⇒ {tuple_of(lf['translated'], proto)}, as conntrack -L says"
        checks(f"{proto}: same original and translated tuples (live, tcpdump, conntrack -L)", same_tuples)

        def same_rewrites(lf=lf, tf=tf) -> str:
            expect(rewrites_of(lf) == rewrites_of(tf), f"live {rewrites_of(lf)}, tcpdump {rewrites_of(tf)}")
            fwd = [r for r in lf["rewrites"] if r["field"] == "src" and r["direction"] == "forward"]
            expect(len(fwd) == 1 and fwd[0]["from"] == lab.ip["c1"] and fwd[0]["to"] == lab.ip["host"]
                   and fwd[0]["between"] == ["docker0", "eth0"],
                   f"no masquerade rewrite docker0 → eth0: {lf['rewrites']}")
            return "; ".join(f"{r['direction']} {r['field']} {r['from']} → {r['to']} "
                             f"{r['between'][0]}→{r['between'][1]} ×{r.get('packets')}" for r in lf["rewrites"])
        checks(f"{proto}: same rewrites, the masquerade between docker0 and eth0", same_rewrites)

        def same_journeys(lf=lf, tf=tf, proto=proto) -> str:
            lj, tj = journeys_by_direction(live_db, lf["id"]), journeys_by_direction(tcpdump_db, tf["id"])
            expect(lj == tj, f"journeys per direction live {lj}, tcpdump {tj}")
            expect(lf["journeys"] == tf["journeys"] and lf["packets"] == tf["packets"],
                   f"journeys/packets live {lf['journeys']}/{lf['packets']}, tcpdump {tf['journeys']}/{tf['packets']}")
            sent = {"icmp": PING_COUNT, "udp": UDP_COUNT}.get(proto)
            if sent is not None:
                expect(lj == {"forward": sent, "reply": sent}, f"journeys {lj}, sent {sent} and got {sent} answers")
            return f"{lj}, {lf['packets']} packets"
        checks(f"{proto}: same journeys per direction", same_journeys)

        def same_counts(lf=lf, tf=tf, proto=proto) -> str:
            lc, tc = packets_per_point(live_db, lf), packets_per_point(tcpdump_db, tf)
            expect(lc == tc, f"per point live {lc}, tcpdump {tc}")
            expect(sorted(lc) == sorted(names), f"points with packets: {sorted(lc)}")
            sent = {"icmp": PING_COUNT, "udp": UDP_COUNT}.get(proto)
            if sent is not None:
                expect(set(lc.values()) == {2 * sent}, f"want {2 * sent} at every point: {lc}")
            return ", ".join(f"{n} {lc[n]}" for n in names)
        checks(f"{proto}: same packets per point", same_counts)

        def conntrack_agrees(lf=lf, proto=proto) -> str:
            c = lf.get("conntrack")
            expect(c is not None, "no conntrack in the live report's flow")
            expect(c.get("state") == "agrees", f"conntrack {c}")
            block = flow_text(r.stdout, lf)
            expect("conntrack agrees" in block, f"text report of flow {lf['id']}: {short(block)}")
            src_rw = f"forward  src  {lab.ip['c1']} → {lab.ip['host']}  between docker0 and eth0"
            expect(src_rw in block, f"text report of flow {lf['id']} lacks {src_rw!r}: {short(block)}")
            return f"flow {lf['id']}: '{src_rw.strip()}', 'conntrack agrees'"
        checks(f"{proto}: text report shows the masquerade rewrite and 'conntrack agrees'", conntrack_agrees)

    def same_sightings() -> str:
        # Both captures read the same packet at each point: every live sighting must be in
        # tcpdump's files (same point, addresses, ports, IP id and length, TCP seq) at about the
        # same time. The times are often identical to the nanosecond (the kernel stamped the skb
        # once); where the skb carried no stamp (seen for TCP segments received on a veth or the
        # bridge) each packet socket stamps it as it gets it, microseconds apart.
        def sightings(db: Path) -> dict[tuple, list[int]]:
            out: dict[tuple, list[int]] = {}
            for *key, ts in query(db, "SELECT pt.name, p.proto, p.src, p.dst, p.sport, p.dport, p.ip_id, p.ip_len, "
                                      "p.tcp_seq, p.ts_ns FROM packets p JOIN points pt ON pt.id = p.point_id"):
                out.setdefault(tuple(key), []).append(ts)
            return out
        ls, ts = sightings(live_db), sightings(tcpdump_db)
        missing, same, worst, total = [], 0, 0, 0
        tcpdump_only: dict[str, list[int]] = {}
        window: dict[str, tuple[int, int]] = {}
        for key in set(ls) | set(ts):
            mine, theirs = sorted(ls.get(key, [])), sorted(ts.get(key, []))
            for t in mine:
                if not theirs:
                    missing.append(key)
                    continue
                u = min(theirs, key=lambda u: abs(t - u))
                theirs.remove(u)
                total += 1
                same += t == u
                worst = max(worst, abs(t - u))
                lo, hi = window.get(key[0], (t, t))
                window[key[0]] = (min(lo, t), max(hi, t))
            tcpdump_only.setdefault(key[0], []).extend(theirs)
        expect(not missing, f"{len(missing)} live sightings not in tcpdump's files, e.g. {missing[:3]}")
        expect(worst < 5_000_000, f"a live sighting is {worst} ns away from tcpdump's")
        inside = {point: [u for u in stamps if window[point][0] < u < window[point][1]]
                  for point, stamps in tcpdump_only.items() if point in window}
        inside = {point: stamps for point, stamps in inside.items() if stamps}
        expect(not inside, "tcpdump saw packets inside hoptrace's window that hoptrace did not store: "
               + ", ".join(f"{point}: {len(v)} (first at {min(v)})" for point, v in inside.items()))
        extra = sum(len(v) for v in tcpdump_only.values())
        return (f"all {total} live sightings are in tcpdump's files ({same} with the same ts_ns, the others at most "
                f"{worst} ns apart); tcpdump's {extra} others are all outside hoptrace's window")
    checks("live = tcpdump inside hoptrace's window, packet for packet", same_sightings)


def run_two_containers(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "two.db"
    lab.flush_conntrack()
    ident = lablib.PING_IDENT

    def ping(c: str) -> str:
        return shlex.join(["ip", "netns", "exec", lab.ns[c], "ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.2",
                           "-e", str(ident), "-W", "2", lab.ip["server"]])
    # c1 first; c2 a moment later, once c1's flow is in conntrack: MASQUERADE keeps c1's id and rewrites c2's.
    script = f"{ping('c1')} > /dev/null & sleep 0.3; {ping('c2')} > /dev/null; wait"
    r = run(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--netns", lab.ns["c2"], "--host-netns",
            lab.ns["host"], "--", "sh", "-c", script, timeout=60)
    if checks("capture --netns c1 --netns c2 around both pings exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}") or "exit 0") is None:
        return
    report = report_json(hoptrace, db)

    def six_points() -> str:
        want = [(n, role) for n, role, *_ in expected_points(lab, ("c1", "c2"))]
        got = [(p["name"], p["role"]) for p in sorted(report["points"], key=lambda p: p["name"])]
        expect(got == sorted(want), f"points {got}, want {sorted(want)}")
        rows = query(db, "SELECT name, packets FROM points")
        expect(len(rows) == 6 and all(n > 0 for _, n in rows), f"points table {rows}")
        return ", ".join(f"{n} {k}" for n, k in rows)
    checks("six points: two containers, two veths, one docker0, one eth0", six_points)

    def both_flows() -> str:
        flows = {c: my_flows(report, lab, c, ident).get("icmp") for c in ("c1", "c2")}
        expect(all(flows.values()), f"icmp flows: {flows}")
        f1, f2 = flows["c1"], flows["c2"]
        ids = (f1["translated"]["id"], f2["translated"]["id"])
        expect(f1["original"]["id"] == f2["original"]["id"] == ident, f"original ids {f1['original']} {f2['original']}")
        expect(ids[0] != ids[1], f"both flows leave with id {ids[0]}")
        ct = {e.original.src: e for e in lab.conntrack() if e.proto == "icmp"}
        for c, f in flows.items():
            e = ct.get(lab.ip[c])
            expect(e is not None and e.translated().id == f["translated"]["id"],
                   f"{c}: translated id {f['translated']['id']}, conntrack -L {e.raw if e else None}")
            expect(f.get("conntrack", {}).get("state") == "agrees", f"{c}: conntrack {f.get('conntrack')}")
            lj = journeys_by_direction(db, f["id"])
            expect(lj == {"forward": PING_COUNT, "reply": PING_COUNT}, f"{c}: journeys {lj}")
            seen = packets_per_point(db, f)
            want_points = {p[0] for p in expected_points(lab, (c,))}
            expect(set(seen) == want_points and set(seen.values()) == {2 * PING_COUNT},
                   f"{c}: packets per point {seen}, want {2 * PING_COUNT} at {sorted(want_points)}")
        return (f"c1 id {ident} → {ids[0]}, c2 id {ident} → {ids[1]}, {PING_COUNT}+{PING_COUNT} journeys each, "
                "each on its own veth, conntrack agrees")
    checks("both flows, the second container's ICMP id rewritten", both_flows)


def run_usernet(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "c3.db"
    lab.flush_conntrack()
    r = run(hoptrace, "trace", "--db", db, "--netns", lab.ns["c3"], "--host-netns", lab.ns["host"], "--",
            "ip", "netns", "exec", lab.ns["c3"], "ping", "-n", "-q", "-c", PING_COUNT, "-i", "0.2", "-e", PING_IDENT,
            "-W", "2", lab.ip["server"], timeout=60)
    if checks("trace --netns c3 (user-defined network) exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}") or "exit 0") is None:
        return
    report = report_json(hoptrace, db)
    bridge = lab.ifname["usernet_bridge"]

    def c3_flow() -> str:
        names = [p["name"] for p in report["points"]]
        want = [p[0] for p in expected_points(lab, ("c3",))]
        expect(names == want, f"points {names}, want {want}")
        flow = my_flows(report, lab, "c3").get("icmp")
        expect(flow is not None, f"no icmp flow from c3: {report['flows']}")
        expect(journeys_by_direction(db, flow["id"]) == {"forward": PING_COUNT, "reply": PING_COUNT},
               f"journeys {journeys_by_direction(db, flow['id'])}")
        rw = [(x["field"], x["from"], x["to"], x["between"], x["direction"]) for x in flow["rewrites"]]
        want_rw = [("src", lab.ip["c3"], lab.ip["host"], [bridge, "eth0"], "forward"),
                   ("dst", lab.ip["host"], lab.ip["c3"], ["eth0", bridge], "reply")]
        expect(sorted(map(str, rw)) == sorted(map(str, want_rw)), f"rewrites {rw}, want {want_rw}")
        expect(flow.get("conntrack", {}).get("state") == "agrees", f"conntrack {flow.get('conntrack')}")
        expect(f"between {bridge} and eth0" in flow_text(r.stdout, flow), "text report lacks the rewrite")
        return f"{' → '.join(names)}; src {lab.ip['c3']} → {lab.ip['host']} between {bridge} and eth0"
    checks("c3's ping: path through br-…, masquerade between it and eth0, conntrack agrees", c3_flow)


def run_stops(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1, host = lab.ns["c1"], lab.ns["host"]
    pinger = lab.popen("c1", "ping", "-n", "-i", "0.05", lab.ip["server"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def sigint() -> str:
            db = tmp / "sigint.db"
            capture = Background(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host)
            try:
                time.sleep(1.5)
                capture.interrupt()
                rc, _out, err = capture.wait(timeout=30)
            finally:
                capture.kill()
            expect(rc == 0, f"exit {rc} after SIGINT: {short(err)}")
            meta = dict(query(db, "SELECT key, value FROM meta"))
            stored = dict(query(db, "SELECT name, packets FROM points"))
            expect(meta.get("stop_reason") == "signal", f"stop reason {meta.get('stop_reason')}")
            expect(all(n > 10 for n in stored.values()), f"packets per point {stored}")
            expect(query(db, "SELECT COUNT(*) FROM journeys")[0][0] > 0, "not correlated")
            return f"exit 0, stop reason signal, {sum(stored.values())} packets stored and correlated"
        checks("SIGINT stops a capture cleanly", sigint)

        def count() -> str:
            db = tmp / "count.db"
            r = run(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host, "--count", 40, "--duration",
                    20, timeout=60)
            expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
            meta = dict(query(db, "SELECT key, value FROM meta"))
            total = query(db, "SELECT COUNT(*) FROM packets")[0][0]
            expect(meta.get("stop_reason") == "count", f"stop reason {meta.get('stop_reason')}")
            # c1 pings every 50 ms: 4 points see about 160 packets a second, so the 20 ms between two
            # looks at the counter may add a few; storing many more means it went on capturing.
            last40 = query(db, "SELECT ts_ns FROM packets ORDER BY ts_ns LIMIT 1 OFFSET 39")[0][0]
            late = query(db, "SELECT COUNT(*), MAX(ts_ns) FROM packets WHERE ts_ns > ?", (last40,))[0]
            after = f", the last {(late[1] - last40) / 1e6:.0f} ms after it" if late[1] is not None else ""
            expect(40 <= total <= 50, f"{total} packets stored for --count 40: {late[0]} captured after the 40th{after}")
            took = (int(meta["capture_stop_ns"]) - int(meta["capture_start_ns"])) / 1e9
            expect(took < 10, f"took {took:.1f} s")
            return f"stop reason count, {total} packets stored, {took:.1f} s"
        checks("--count 40 stops a capture after 40 packets", count)
    finally:
        pinger.terminate()
        pinger.wait(5)


if __name__ == "__main__":
    sys.exit(main())
