#!/usr/bin/env python3
"""End-to-end trust tests of hoptrace's journeys against an independent reference (issue #9).

One IPv6+IPv4 lab (Lab(ipv6="nat")); for each case below both containers send the case's traffic while
`hoptrace trace --netns C1 --netns C2 --host-netns HOST` captures and the test's own tcpdumps (ns
stamps) run on the same six points (c1/c2 eth0, their veths, docker0, the uplink). The truth is
trust_reference.py's, computed from those pcap files, the lab's topology and `conntrack -L`; it is
first checked against what the test sent (per container counts, payload markers). hoptrace's
journeys (its SQLite database: which sighting, identified by point + kernel timestamp + IP id +
length, is in which journey) and JSON report are compared with it for the live capture, for
`hoptrace import --role NAME=ROLE …` of the tcpdump files at ns precision, and again at µs precision;
case 1 also imports once without --role (the inferred roles must be printed, with evidence).

Cases:
 1 identical datagrams: c1 and c2 send one raw UDP datagram each, sport 41000 -> server:7000, the same
   IP id 0x1234 and payload, 20 ms apart: two flows, both masqueraded (one port possibly rewritten).
 2 300 same-shaped IPv6 datagrams (same length, same first 64 payload bytes), sports 30000-30299 in
   100 ms: every journey as the reference, 300 flows, no phantom single-point journeys.
 3 c1 sends the same IPv6 datagram twice 200 ms apart (echoed) while c2 pings fd00:17::1 once:
   4 journeys for the datagrams.
 4 truly undecidable: c1 and c2 send byte-identical raw datagrams (and fragmented ones, whose
   non-first fragments are byte-identical after NAT) at the same instant: never one journey with
   both containers' sightings; what cannot be decided is flagged (journeys.ambiguous, JSON
   ambiguous_journeys, the text report), flagged <= the reference's undecidable.
 5 fragments: 4000-byte UDP without DF c1 -> server, echoed: no flow with ports 0, non-first fragments
   in their datagram's flow, round trips counted per datagram, the datagram reassembled on docker0
   (br_netfilter) tied by reassembly-of.
 6 equal timestamps (the veth and docker0 share the kernel stamp; more so at µs), files imported in
   reverse path order: hops never negative, journeys ordered by the path, rewrites docker0 -> uplink.
 7 `tcpdump -i any -y LINUX_SLL` in the host: copies are copy-of, not duplicates; broadcasts to
   172.17.255.255 and 255.255.255.255 get no journey or flow; a flow to the bridge address (never at
   the NAT point) does not say conntrack DIFFERS.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
`--case N` (repeatable) runs only those cases.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
import trust_reference as tr  # noqa: E402
from live_common import Checks, expect, guarded, report_json, run, short, netns_left  # noqa: E402

PROTO = {"udp": 17, "tcp": 6, "icmp": 1, "icmpv6": 58}
CANON = ("c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink")
ROLE_OF = {"c1-eth0": "container", "c1-veth": "veth", "c2-eth0": "container", "c2-veth": "veth",
           "docker0": "bridge", "uplink": "uplink"}

# --------------------------------------------------------------------------------------------
# Traffic programs (run inside the lab's namespaces with `python3 -c`)

# argv[1]: JSON {"start": epoch seconds or 0, "sends": [{"t": s, ...}], "recv_s": s}. A send is
# {"raw4": {src, dst, sport, dport, id, payload(hex), frag(bool)}} (IP_HDRINCL, fragmented by hand
# at 1480 bytes when frag) or {"udp": {dst, sport, dport, payload, v6, nodf, bcast}} (a socket per
# (family, sport), kept open so echoes can be read). Prints {"sent": n, "echoes": {sport: [hex…]}}.
SENDER = r"""
import json, socket, struct, sys, time, select
spec = json.load(open(sys.argv[1][1:])) if sys.argv[1].startswith("@") else json.loads(sys.argv[1])
socks = {}
def sock(v6, sport, bcast=False, nodf=False, ns=""):
    k = (ns, v6, sport)
    if k not in socks:
        if ns:
            enter(ns)
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bcast:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if nodf and not v6:
            s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
        s.bind(("::" if v6 else "0.0.0.0", sport))
        socks[k] = s
    return socks[k]
raws = {}
def enter(ns):
    import ctypes, os
    fd = os.open(ns, os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns " + ns)
    os.close(fd)
def raw_sock(ns):
    # a raw socket in network namespace ns (a /run/netns path; "" = this one): socket() binds it to
    # the namespace the thread is in, so one process can send from both containers microseconds apart
    if ns not in raws:
        if ns:
            enter(ns)
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        r.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        raws[ns] = r
    return raws[ns]
def pieces4(r):
    data = bytes.fromhex(r["payload"])
    udp = struct.pack(">HHHH", r["sport"], r["dport"], 8 + len(data), 0) + data
    parts = [udp] if not r.get("frag") else [udp[i:i + 1480] for i in range(0, len(udp), 1480)]
    src, dst = socket.inet_aton(r["src"]), socket.inet_aton(r["dst"])
    out = []
    for n, piece in enumerate(parts):
        frag = ((0x2000 if n + 1 < len(parts) else 0) | (n * 1480 // 8)) if r.get("frag") else 0
        hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), r["id"], frag, 64, 17, 0, src, dst)
        out.append((raw_sock(r.get("ns", "")), hdr + piece, r["dst"]))
    return out
def raw4(r):
    for sk, pkt, dst in pieces4(r):
        sk.sendto(pkt, (dst, 0))
def multi(rs):
    # several raw datagrams, their fragments interleaved round-robin
    lists = [pieces4(r) for r in rs]
    for k in range(max(len(l) for l in lists)):
        for l in lists:
            if k < len(l):
                sk, pkt, dst = l[k]
                sk.sendto(pkt, (dst, 0))
for s in spec["sends"]:  # sockets first, outside the timed loop
    for r in ([s["raw4"]] if "raw4" in s else s.get("multi", [])):
        raw_sock(r.get("ns", ""))
    if "udp" in s:
        u = s["udp"]
        sock(u.get("v6", False), u["sport"], u.get("bcast", False), u.get("nodf", False), u.get("ns", ""))
t0 = spec.get("start") or time.time()
sent = 0
for s in spec["sends"]:
    wait = t0 + s["t"] - time.time()
    if wait > 0.003:
        time.sleep(wait - 0.003)
    while time.time() < t0 + s["t"]:  # the last 3 ms spinning: c1 and c2 send within microseconds
        pass
    if "raw4" in s:
        raw4(s["raw4"])
    elif "multi" in s:
        multi(s["multi"])
    else:
        u = s["udp"]
        k = sock(u.get("v6", False), u["sport"], u.get("bcast", False), u.get("nodf", False), u.get("ns", ""))
        k.sendto(bytes.fromhex(u["payload"]), (u["dst"], u["dport"]))
    sent += 1
echoes = {}
deadline = time.time() + spec.get("recv_s", 0)
while socks and time.time() < deadline:
    r, _, _ = select.select(list(socks.values()), [], [], max(0, deadline - time.time()))
    for s in r:
        data = s.recv(65535)
        port = s.getsockname()[1]
        ns = [k[0] for k, v in socks.items() if v is s][0]
        echoes.setdefault(str(port) if not ns else ns + ":" + str(port), []).append(data.hex())
print(json.dumps({"sent": sent, "echoes": echoes}))
"""

# argv[1]: JSON {"echo": [ports], "sink": [ports], "out": file}. One dual-stack UDP socket per port;
# echo ports send each datagram back; on SIGTERM writes {port: datagrams received} to out.
SERVER = r"""
import json, select, signal, socket, sys
spec = json.loads(sys.argv[1])
socks, counts = {}, {}
for port in spec.get("echo", []) + spec.get("sink", []):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("::", port))
    socks[s] = port
    counts[port] = 0
def done(*_):
    open(spec["out"], "w").write(json.dumps(counts))
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
while True:
    r, _, _ = select.select(list(socks), [], [])
    for s in r:
        data, addr = s.recvfrom(65535)
        counts[socks[s]] += 1
        if socks[s] in spec.get("echo", []):
            s.sendto(data, addr)
"""


class Server:
    def __init__(self, lab: lablib.Lab, tmp: Path, ns: str = "server", echo=(), sink=()):
        self.out = tmp / f"server-{time.monotonic_ns()}.json"
        spec = {"echo": list(echo), "sink": list(sink), "out": str(self.out)}
        self.proc = lab.popen(ns, sys.executable, "-c", SERVER, json.dumps(spec), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")

    def stop(self) -> dict[int, int]:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            return {int(k): v for k, v in json.loads(self.out.read_text()).items()}
        except (OSError, ValueError):
            return {}


def sender_cmd(lab: lablib.Lab, container: str, spec: dict, out: Path) -> str:
    f = out.with_suffix(".json")
    f.write_text(json.dumps(spec))
    return (shlex.join(["ip", "netns", "exec", lab.ns[container], sys.executable, "-c", SENDER, "@" + str(f)])
            + f" > {shlex.quote(str(out))}")


# --------------------------------------------------------------------------------------------
# One case: live capture + tcpdumps, the reference, imports


class Ctx:
    def __init__(self, checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path):
        self.checks, self.hoptrace, self.lab, self.tmp = checks, hoptrace, lab, tmp
        h = lab.ns["host"]
        # (canonical name, netns, ifname, hoptrace's live name)
        self.points = [("c1-eth0", lab.ns["c1"], "eth0", f"{lab.ns['c1']}:eth0"),
                       ("c1-veth", h, lab.veth["c1"], lab.veth["c1"]),
                       ("c2-eth0", lab.ns["c2"], "eth0", f"{lab.ns['c2']}:eth0"),
                       ("c2-veth", h, lab.veth["c2"], lab.veth["c2"]),
                       ("docker0", h, lab.ifname["bridge"], lab.ifname["bridge"]),
                       ("uplink", h, lab.ifname["uplink"], lab.ifname["uplink"])]
        self.alias = {live: canon for canon, _, _, live in self.points}
        self.live_name = {canon: live for canon, _, _, live in self.points}
        self.topo = tr.Topology.of_lab(lab)
        self.role_option_works: bool | None = None


class CaseRun:
    """What one case produced: the pcaps, conntrack, the references and hoptrace's databases."""

    def __init__(self, name: str):
        self.name = name
        self.pcaps: dict[str, Path] = {}
        self.frames: dict[str, list[tr.Frame]] = {}
        self.conntrack: list = []
        self.ref: tr.Reference | None = None  # with conntrack (the truth)
        self.ref_noct: tr.Reference | None = None  # without conntrack (what a pcap import can know)
        self.ref_us: tr.Reference | None = None
        self.ref_us_noct: tr.Reference | None = None
        self.dbs: dict[str, Path] = {}  # variant -> db ("live", "import-ns", "import-us")
        self.reports: dict[str, dict] = {}
        self.texts: dict[str, str] = {}
        self.stderr: dict[str, str] = {}
        self.outputs: dict[str, dict] = {}
        self.server_counts: dict[int, int] = {}
        self.extra_pcaps: dict[str, Path] = {}


def run_case(ctx: Ctx, name: str, c1_spec: dict | None, c2_spec: dict | None, extra_sh: list[str] = (),
             echo=(), sink=(), extra_caps=(), import_reverse: bool = False, roles_less: bool = False,
             both_spec: dict | None = None) -> CaseRun | None:
    lab, tmp = ctx.lab, ctx.tmp / name
    tmp.mkdir(parents=True, exist_ok=True)
    cr = CaseRun(name)
    lab.flush_conntrack()
    server = Server(lab, tmp, echo=echo, sink=sink) if (echo or sink) else None
    caps = {}
    db = tmp / "live.db"
    try:
        for canon, ns, ifname, _ in ctx.points:
            caps[canon] = lablib.Tcpdump(ns, ifname, tmp / f"{canon}.pcap")
        for cname, ns, iface, linktype in extra_caps:
            caps[cname] = lablib.Tcpdump(ns, iface, tmp / f"{cname}.pcap", linktype=linktype)
        # c1 and c2 start their sends at one instant, once hoptrace is surely capturing
        t_start = time.time() + 1.2
        cmds = []
        for c, spec in (("c1", c1_spec), ("c2", c2_spec)):
            if spec is not None:
                spec["start"] = t_start
                cmds.append(sender_cmd(lab, c, spec, tmp / f"{c}.out") + " &")
        if both_spec is not None:  # one sender in the host's own namespace, sockets in both containers
            both_spec["start"] = t_start
            (tmp / "both.json").write_text(json.dumps(both_spec))
            cmds.append(shlex.join([sys.executable, "-c", SENDER, "@" + str(tmp / "both.json")])
                        + f" > {shlex.quote(str(tmp / 'both.out'))} &")
        cmds += [f"{x} &" for x in extra_sh]
        traffic = "\n".join(cmds + ["wait"])
        r = run(ctx.hoptrace, "trace", "--netns", lab.ns["c1"], "--netns", lab.ns["c2"], "--host-netns",
                lab.ns["host"], "--db", db, "--", "sh", "-c", traffic, timeout=150)
        ct_text = lab.conntrack_text()
    finally:
        files = dict(zip(caps, lablib.stop_all(list(caps.values()))))
        if server:
            cr.server_counts = server.stop()
    cr.conntrack = lablib.parse_conntrack(ct_text)
    (tmp / "conntrack.txt").write_text(ct_text)
    for c in ("c1", "c2"):
        out = tmp / f"{c}.out"
        if out.exists() and out.read_text().strip():
            try:
                cr.outputs[c] = json.loads(out.read_text().strip().splitlines()[-1])
            except ValueError:
                pass
    drops = {n: c.dropped for n, c in caps.items() if c.dropped}
    ok = ctx.checks(f"{name}: live trace exits 0, tcpdumps dropped nothing", lambda: (
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}"),
        expect(not drops, f"tcpdump drops {drops}")) and None or
        f"{len(r.stdout.splitlines())} report lines; conntrack: {len(cr.conntrack)} entries")
    cr.texts["live"] = r.stdout
    cr.stderr["live"] = r.stderr
    if ok is None and r.returncode != 0:
        return None
    cr.dbs["live"] = db
    for canon in CANON:
        cr.pcaps[canon] = files[canon]
        cr.frames[canon] = tr.read_capture(files[canon])
    for cname, *_ in extra_caps:
        cr.extra_pcaps[cname] = files[cname]
    cr.ref = tr.build(ctx.topo, cr.frames, cr.conntrack)
    cr.ref_noct = tr.build(ctx.topo, cr.frames, None)
    us_frames = {}
    for canon in CANON:
        us = tmp / f"{canon}-us.pcap"
        tr.write_pcap_us(cr.frames[canon], us)
        us_frames[canon] = tr.read_capture(us)
        cr.pcaps[canon + "-us"] = us
    cr.ref_us = tr.build(ctx.topo, us_frames, cr.conntrack)
    cr.ref_us_noct = tr.build(ctx.topo, us_frames, None)
    # imports
    order = list(CANON)[::-1] if import_reverse else list(CANON)
    for variant, suffix in (("import-ns", ""), ("import-us", "-us")):
        idb = tmp / f"{variant}.db"
        specs = [f"{p}={cr.pcaps[p + suffix]}" for p in order]
        import_db(ctx, cr, variant, idb, specs, [f"{p}={ROLE_OF[p]}" for p in order])
    if roles_less:
        idb = tmp / "import-noroles.db"
        # named the way a user would name the files: after the interfaces
        names = {"c1-eth0": "c1-eth0", "c2-eth0": "c2-eth0", "c1-veth": lab.veth["c1"], "c2-veth": lab.veth["c2"],
                 "docker0": "docker0", "uplink": "uplink"}
        specs = [f"{names[p]}={cr.pcaps[p]}" for p in order]
        rr = run(ctx.hoptrace, "import", "--db", idb, *specs, timeout=120)
        cr.stderr["import-noroles"] = rr.stderr
        if rr.returncode == 0:
            cr.dbs["import-noroles"] = idb
            cr.reports["import-noroles"] = report_json(ctx.hoptrace, idb)
        cr.noroles_names = names  # type: ignore[attr-defined]
    for variant, vdb in cr.dbs.items():
        if variant not in cr.reports:
            try:
                cr.reports[variant] = report_json(ctx.hoptrace, vdb)
            except Exception as e:  # noqa: BLE001
                cr.reports[variant] = {"error": str(e), "flows": [], "points": []}
        if variant not in cr.texts:
            cr.texts[variant] = run(ctx.hoptrace, "report", "--db", vdb).stdout
    return cr


def import_db(ctx: Ctx, cr: CaseRun, variant: str, db: Path, specs: list[str], roles: list[str]) -> None:
    role_args = [a for r in roles for a in ("--role", r)]

    def do() -> str:
        r = run(ctx.hoptrace, "import", "--db", db, *role_args, *specs, timeout=120)
        if r.returncode == 2 and "role" in r.stderr:
            ctx.role_option_works = False
            db.unlink(missing_ok=True)
            r2 = run(ctx.hoptrace, "import", "--db", db, *specs, timeout=120)
            if r2.returncode == 0:
                cr.dbs[variant] = db
                cr.stderr[variant] = r2.stderr
            raise AssertionError(f"--role rejected ({short(r.stderr, 160)}); imported without roles for the "
                                 f"checks below (exit {r2.returncode})")
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        ctx.role_option_works = True
        cr.dbs[variant] = db
        cr.stderr[variant] = r.stderr
        return f"{len(specs)} files"
    ctx.checks(f"{cr.name}: {variant}: hoptrace import --role NAME=ROLE for each file", do)


# --------------------------------------------------------------------------------------------
# Generic comparisons


def ref_for(cr: CaseRun, variant: str, conntrack: bool = True) -> tr.Reference:
    if variant == "import-us":
        return cr.ref_us if conntrack else cr.ref_us_noct
    return cr.ref if conntrack else cr.ref_noct


def alias_for(ctx: Ctx, variant: str) -> dict[str, str]:
    return ctx.alias if variant == "live" else {}


def check_journeys(ctx: Ctx, cr: CaseRun, relevant, label: str = "journeys", variants=None,
                   require_flags: bool = False) -> dict[str, dict]:
    """journeys = the reference's (decided ones exactly; none mixing c1 and c2); ambiguous flags only
    where the reference cannot decide either."""
    out = {}
    for variant in variants or list(cr.dbs):
        if variant not in cr.dbs or variant == "import-noroles":
            continue
        ref = ref_for(cr, variant)
        # hoptrace in a live capture has conntrack; an import has only the pcaps
        ref_knowledge = ref if variant == "live" else ref_for(cr, variant, conntrack=False)
        ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
        res = tr.compare(ref, ht, relevant)
        out[variant] = res

        def same(res=res, ref=ref) -> str:
            expect(res["decided"] + res["undecidable"] > 0, "the reference has no relevant journeys")
            expect(res["wrong"] == 0 and res["merged"] == 0 and res["missing"] == 0,
                   f"{res['wrong']} of {res['decided']} decided journeys differ, {res['merged']} hoptrace journeys "
                   f"mix c1 and c2, {res['missing']} sightings not stored: " + " || ".join(res["examples"]))
            return (f"{res['decided']} decided journeys identical, {res['undecidable']} undecidable (not compared), "
                    "none mixing containers")
        ctx.checks(f"{cr.name}: {variant}: {label} = the reference's", same)

        und_known = [j for j in ref_knowledge.journeys if j.undecidable and relevant(j)]

        def flags(res=res, ht=ht, und_known=und_known) -> str:
            if not ht.has_ambiguous:
                expect(not und_known and not require_flags,
                       f"no journeys.ambiguous column; the reference has {len(und_known)} undecidable journeys")
                return "no journeys.ambiguous column (and nothing undecidable)"
            expect(res["flagged"] <= len(und_known),
                   f"{res['flagged']} journeys flagged ambiguous, the reference finds {len(und_known)} undecidable")
            expect(res["flagged_wrong"] == 0, f"{res['flagged_wrong']} flagged journeys hold no undecidable sighting")
            return f"{res['flagged']} flagged <= {len(und_known)} undecidable"
        ctx.checks(f"{cr.name}: {variant}: ambiguous flags only where the reference cannot decide", flags)
    return out


def jflow_orig(f: dict) -> tuple:
    o = f["original"]
    p = PROTO.get(f["proto"], -1)
    if p in (1, 58):
        return (p, tr.norm(o["src"]), tr.norm(o["dst"]), o.get("id"), None)
    return (p, tr.norm(o["src"]), tr.norm(o["dst"]), o.get("sport"), o.get("dport"))


def jflow_trans(f: dict) -> tuple | None:
    o = f.get("translated")
    if not o:
        return None
    p = PROTO.get(f["proto"], -1)
    if p in (1, 58):
        return (p, tr.norm(o["src"]), tr.norm(o["dst"]), o.get("id"), None)
    return (p, tr.norm(o["src"]), tr.norm(o["dst"]), o.get("sport"), o.get("dport"))


def ref_flows(ref: tr.Reference, relevant) -> dict[tuple, dict]:
    """Flows as the reference sees them: orig tuple -> translated (from the uplink sighting), journey
    counts per direction (first fragments and whole datagrams only), rewrites."""
    flows: dict[tuple, dict] = {}
    for j in ref.journeys:
        if not relevant(j) or not j.orig:
            continue
        f = flows.setdefault(j.orig, {"fwd": 0, "rep": 0, "trans": None, "rewrites": set(), "datagrams": 0,
                                      "fragments": 0})
        s0 = j.sightings[0]
        if j.relation is None:
            f["fwd" if j.direction == "forward" else "rep"] += 1
        if s0.is_frag:
            f["fragments"] += 1
        if j.relation is None and (s0.is_frag or True):
            f["datagrams"] += 1
        up = [s for s in j.sightings if s.point == ref.topo.point("uplink")]
        br = [s for s in j.sightings if s.point == ref.topo.point("bridge")]
        if up and br and not up[0].is_frag or (up and br and up[0].frag_off == 0):
            u, b = up[0], br[0]
            if j.direction == "forward":
                f["trans"] = tr._tuple(u)
                pairs = [("src", b.src, u.src), ("sport", b.sport, u.sport)] if u.icmp_id is None else \
                    [("src", b.src, u.src), ("id", b.icmp_id, u.icmp_id)]
                for fld, x, y in pairs:
                    if x != y:
                        f["rewrites"].add((fld, str(x), str(y), "docker0", "uplink", "forward"))
            else:
                pairs = [("dst", u.dst, b.dst), ("dport", u.dport, b.dport)] if u.icmp_id is None else \
                    [("dst", u.dst, b.dst), ("id", u.icmp_id, b.icmp_id)]
                for fld, x, y in pairs:
                    if x != y:
                        f["rewrites"].add((fld, str(x), str(y), "uplink", "docker0", "reply"))
    return flows


def check_flows(ctx: Ctx, cr: CaseRun, relevant_flow, relevant, label="flows", variants=None,
                counts: bool = True) -> None:
    """The report's flows for the case's traffic = the reference's: original, translated, rewrites,
    journeys per direction, losses."""
    for variant in variants or list(cr.dbs):
        if variant == "import-noroles" or variant not in cr.reports:
            continue
        rep = cr.reports[variant]
        ref = ref_for(cr, variant)
        want = ref_flows(ref, relevant)
        names = {v: k for k, v in alias_for(ctx, variant).items()}
        canon = alias_for(ctx, variant)
        losses = ref.losses()

        def verdict(rep=rep, want=want, canon=canon, losses=losses) -> str:
            got = [f for f in rep.get("flows", []) if relevant_flow(jflow_orig(f))]
            problems = []
            by_orig = collections.defaultdict(list)
            for f in got:
                by_orig[jflow_orig(f)].append(f)
            extra = [o for o in by_orig if o not in want]
            if extra:
                problems.append(f"{len(extra)} flows the reference has not: {extra[:3]}")
            for o, w in want.items():
                fs = by_orig.get(o, [])
                if len(fs) != 1:
                    problems.append(f"{o}: {len(fs)} flows in the report")
                    continue
                f = fs[0]
                if w["trans"] and jflow_trans(f) != w["trans"]:
                    problems.append(f"{o}: translated {jflow_trans(f)}, reference {w['trans']}")
                rw = {(x["field"], str(x["from"]), str(x["to"]), canon.get(x["between"][0], x["between"][0]),
                       canon.get(x["between"][1], x["between"][1]), x["direction"]) for x in f.get("rewrites", [])}
                if w["trans"] and rw != w["rewrites"]:
                    problems.append(f"{o}: rewrites {sorted(rw)}, reference {sorted(w['rewrites'])}")
                if counts and (f.get("forward_journeys"), f.get("reply_journeys")) != (w["fwd"], w["rep"]):
                    problems.append(f"{o}: journeys {f.get('forward_journeys')}/{f.get('reply_journeys')}, "
                                    f"reference {w['fwd']}/{w['rep']}")
                lost = collections.Counter()
                for x in f.get("lost", []):
                    lost[(x["direction"], canon.get(x["after"], x["after"]),
                          canon.get(x["expected"], x["expected"]))] += x["count"]
                wl = collections.Counter({(d, a, e): n for (oo, d, a, e), n in losses.items() if oo == o})
                if lost != wl:
                    problems.append(f"{o}: lost {dict(lost)}, reference {dict(wl)}")
            expect(not problems, f"{len(problems)} problems: " + " | ".join(problems[:5]))
            return f"{len(want)} flows: original, translated, rewrites, journeys, losses as the reference"
        ctx.checks(f"{cr.name}: {variant}: {label} = the reference's", verdict)


def validate_reference(ctx: Ctx, cr: CaseRun, relevant, expect_fwd: dict[str, int], markers: dict[str, list[bytes]] = None,
                       complete: bool = True, extra=None) -> None:
    """The reference against what the test sent: per container, forward journeys of the case's traffic
    starting at its eth0; payload markers; every journey complete (when nothing was dropped)."""
    def verdict() -> str:
        ref = cr.ref
        problems = []
        for c, n in expect_fwd.items():
            js = [j for j in ref.journeys if relevant(j) and j.direction == "forward" and j.owner == c
                  and j.relation is None and j.sightings[0].point == f"{c}-eth0"]
            if len(js) != n:
                problems.append(f"{c}: {len(js)} forward journeys from its eth0, sent {n}")
            if markers and c in markers:
                got = collections.Counter(bytes(j.sightings[0].payload) for j in js)
                want = collections.Counter(markers[c])
                if got != want:
                    problems.append(f"{c}: payloads differ from those sent ({sum((want - got).values())} missing)")
        rel = [j for j in ref.journeys if relevant(j)]
        if complete:
            lost = [j for j in rel if j.lost_after]
            if lost:
                problems.append(f"{len(lost)} journeys end early: {[j.describe() for j in lost[:2]]}")
        mixed = [j for j in rel if len({s.owner for s in j.sightings if s.owner}) > 1]
        if mixed:
            problems.append(f"{len(mixed)} reference journeys mix owners")
        if extra:
            problems += extra(ref)
        expect(not problems, "; ".join(problems))
        return tr.summary(ref) + f"; {len(rel)} of the case's traffic"
    ctx.checks(f"{cr.name}: reference = what was sent", verdict)


def is_udp_port(port: int, field: str = "dport"):
    def rel(j: tr.Journey) -> bool:
        return bool(j.orig and j.orig[0] == 17 and j.orig[4 if field == "dport" else 3] == port)
    return rel


# --------------------------------------------------------------------------------------------
# The cases


def marker(tag: str, n: int, size: int = 0) -> bytes:
    b = f"hoptrace trust {tag} #{n:05d}|".encode()
    return b + bytes((i * 7 + n) % 256 for i in range(max(0, size - len(b))))


def case1(ctx: Ctx) -> None:
    lab = ctx.lab
    payload = b"hoptrace trust: the same datagram from both containers\n"
    start = time.time() + 1.5

    def spec(c, t):
        return {"start": start, "sends": [{"t": t, "raw4": {"src": lab.ip[c], "dst": lab.ip["server"], "sport": 41000,
                                                             "dport": 7000, "id": 0x1234, "payload": payload.hex()}}]}
    cr = run_case(ctx, "1-identical", spec("c1", 0), spec("c2", 0.020), sink=[7000], roles_less=True)
    if cr is None:
        return
    rel = is_udp_port(7000)
    validate_reference(ctx, cr, rel, {"c1": 1, "c2": 1}, {"c1": [payload], "c2": [payload]})
    check_journeys(ctx, cr, rel)
    check_flows(ctx, cr, lambda o: o[0] == 17 and o[4] == 7000, rel)

    for variant in cr.dbs:
        if variant == "import-noroles":
            continue

        def no_cross(variant=variant) -> str:
            bad = []
            for f in cr.reports[variant].get("flows", []):
                o, t = f.get("original", {}), f.get("translated") or {}
                for a, b in (("c1", "c2"), ("c2", "c1")):
                    if o.get("src") == lab.ip[a] and t.get("src") == lab.ip[b]:
                        bad.append(f"{a}'s flow translated to {b}'s address: {o} => {t}")
                    if o.get("src") == lab.ip[a] and o.get("dst") == lab.ip[b]:
                        bad.append(f"flow {o} (c1 and c2 are not talking to each other)")
            expect(not bad, "; ".join(bad))
            return "no flow with one container's address as the other's translation"
        ctx.checks(f"{cr.name}: {variant}: no flow has c2's address as a translation of c1's", no_cross)

    def inferred() -> str:
        err = cr.stderr.get("import-noroles", "")
        expect("import-noroles" in cr.dbs, f"import without --role failed: {short(err)}")
        pts = {p["name"]: p for p in cr.reports["import-noroles"].get("points", [])}
        names = cr.noroles_names  # type: ignore[attr-defined]
        problems = []
        for canon, name in names.items():
            p = pts.get(name)
            if p is None:
                problems.append(f"no point {name}")
                continue
            if canon in ("c1-veth", "c2-veth", "docker0") and p.get("role") != ROLE_OF[canon]:
                problems.append(f"{name}: inferred role {p.get('role')}, it is a {ROLE_OF[canon]}")
            if not p.get("role_evidence"):
                problems.append(f"{name}: no role_evidence in the JSON")
            if not re.search(rf"{re.escape(name)}\b.*\b({'|'.join(tr.ROLES)})\b", err):
                problems.append(f"{name}: its inferred role is not printed on stderr")
        expect(not problems, "; ".join(problems) + f" | stderr: {short(err, 300)}")
        return "; ".join(f"{n}: {pts[n].get('role')} ({pts[n].get('role_evidence')})" for n in names.values())
    ctx.checks(f"{cr.name}: import without --role prints the inferred roles with their evidence", inferred)


def case2(ctx: Ctx) -> None:
    lab = ctx.lab
    N = 300
    prefix = bytes(range(64))
    sends = {"c1": [], "c2": []}
    payloads = {"c1": [], "c2": []}
    for i in range(N):
        c = "c1" if i % 2 == 0 else "c2"
        p = prefix + f"|datagram {i:04d} of the burst|".encode() + bytes(40)
        payloads[c].append(p)
        sends[c].append({"t": i * 0.1 / N, "udp": {"dst": lab.ip6["server"], "sport": 30000 + i, "dport": 7000,
                                                 "payload": p.hex(), "v6": True}})
    start = time.time() + 1.5
    cr = run_case(ctx, "2-ipv6-burst", {"start": start, "sends": sends["c1"]}, {"start": start, "sends": sends["c2"]},
                  sink=[7000])
    if cr is None:
        return

    def rel(j):
        return bool(j.orig and j.orig[0] == 17 and j.orig[4] == 7000 and 30000 <= j.orig[3] < 30300)
    validate_reference(ctx, cr, rel, {"c1": N // 2, "c2": N // 2}, payloads)
    res = check_journeys(ctx, cr, rel)
    check_flows(ctx, cr, lambda o: o[0] == 17 and o[4] == 7000 and 30000 <= (o[3] or 0) < 30300, rel)
    for variant in res:
        def phantom(variant=variant) -> str:
            ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
            ref = ref_for(cr, variant)
            keys = {s.key for j in ref.journeys if rel(j) for s in j.sightings}
            single = [h for h in ht.journeys.values() if len(h.keys) == 1 and h.keys[0] in keys]
            flows = [f for f in cr.reports[variant].get("flows", []) if f["proto"] == "udp"
                     and f["original"].get("dport") == 7000]
            expect(not single and len(flows) == N,
                   f"{len(single)} single-sighting journeys (e.g. {[h.keys for h in single[:2]]}), {len(flows)} flows, "
                   f"sent {N}")
            return f"{N} flows, no single-point journey"
        ctx.checks(f"{cr.name}: {variant}: no phantom single-point journeys, flows = {N}", phantom)


def case3(ctx: Ctx) -> None:
    lab = ctx.lab
    p = marker("case3 same-shaped", 0, 200)
    start = time.time() + 1.5
    c1 = {"start": start, "recv_s": 1.0, "sends": [
        {"t": t, "udp": {"dst": lab.ip6["server"], "sport": 42000, "dport": 7000, "payload": p.hex(), "v6": True}}
        for t in (0, 0.2)]}
    ping = shlex.join(["ip", "netns", "exec", lab.ns["c2"], "sh", "-c",
                       f"sleep 1.6; ping -6 -n -c 1 -W 2 {lab.ip6['bridge']}"]) + " > /dev/null"
    cr = run_case(ctx, "3-twice-and-ping", c1, None, extra_sh=[ping], echo=[7000])
    if cr is None:
        return
    rel = is_udp_port(7000)

    def rel_ping(j):
        return bool(j.orig and j.orig[0] == 58 and j.owner == "c2" and j.orig[2] == tr.norm(lab.ip6["bridge"]))
    validate_reference(ctx, cr, rel, {"c1": 2}, {"c1": [p, p]},
                       extra=lambda ref: [] if sum(1 for j in ref.journeys if rel_ping(j)) == 2
                       else [f"{sum(1 for j in ref.journeys if rel_ping(j))} ping journeys c2 <-> bridge, want 2"])
    check_journeys(ctx, cr, lambda j: rel(j) or rel_ping(j))
    check_flows(ctx, cr, lambda o: o[0] == 17 and o[4] == 7000, rel)
    for variant in cr.dbs:
        def four(variant=variant) -> str:
            flows = [f for f in cr.reports[variant].get("flows", []) if f["proto"] == "udp"
                     and f["original"].get("dport") == 7000]
            n = sum(f.get("journeys", 0) for f in flows)
            expect(n == 4, f"{n} journeys in {len(flows)} flows for the datagrams, the reference has 4 (2 + 2 echoes)")
            return "4 journeys"
        ctx.checks(f"{cr.name}: {variant}: 4 journeys for the two datagrams and their echoes", four)


def case4(ctx: Ctx) -> None:
    lab = ctx.lab
    small = b"hoptrace trust: byte-identical, same instant\n"
    big = bytes((i * 13) % 251 for i in range(3500))
    start = time.time() + 1.5

    R = 4

    def raw(c, sport, ident, payload, frag=False):
        return {"ns": f"/run/netns/{lab.ns[c]}", "src": lab.ip[c], "dst": lab.ip["server"], "sport": sport,
                "dport": 7001, "id": ident, "payload": payload.hex(), "frag": frag}
    sends = []
    for r in range(R):
        # c1 first in even rounds, c2 first in odd ones
        order = ("c1", "c2") if r % 2 == 0 else ("c2", "c1")
        sends.append({"t": 0.1 * r, "multi": [raw(c, 41100, 0x4240 + r, small) for c in order]})
        sends.append({"t": 0.1 * r + 0.05, "multi": [raw(c, 41101, 0x4340 + r, big, True) for c in order]})
    spec = {"sends": sends}
    cr = run_case(ctx, "4-undecidable", None, None, sink=[7001], both_spec=spec)
    if cr is None:
        return

    def rel(j):
        s = j.sightings[0]
        return s.proto == 17 and (0x4240 <= s.ip_id < 0x4240 + R or 0x4340 <= s.ip_id < 0x4340 + R) \
            and j.direction == "forward"
    def frags(ref):
        problems = []
        for c in ("c1", "c2"):
            n = sum(1 for j in ref.journeys if rel(j) and j.owner == c and j.sightings[0].point == f"{c}-eth0")
            if n != 4 * R:
                problems.append(f"{c}: {n} packets ({R} datagrams + {R}x3 fragments) from its eth0, sent {4 * R}")
        if not any(j.undecidable for j in cr.ref.journeys if rel(j)):
            problems.append("nothing is undecidable even with conntrack: c1 and c2 did not send at the same instant")
        return problems
    validate_reference(ctx, cr, rel, {"c1": 2 * R, "c2": 2 * R}, None, complete=True, extra=frags)
    res = check_journeys(ctx, cr, rel, label="journeys (decided ones), none with both containers", require_flags=True)
    for variant, r in res.items():
        ref = ref_for(cr, variant)
        knowledge = ref if variant == "live" else ref_for(cr, variant, conntrack=False)
        und = [j for j in knowledge.journeys if j.undecidable and rel(j)]

        def flagged(variant=variant, und=und) -> str:
            ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
            expect(ht.has_ambiguous, "no journeys.ambiguous column in the database")
            # The reference's undecidable journeys are a superset of the truly undecidable ones: it does not model
            # that a host refragments a datagram only after it reassembled it (docker0 sees the whole datagram
            # before the uplink sees its fragments), which hoptrace uses. So what hoptrace decides among them is
            # listed, not failed; what it flags must be undecidable for the reference too (check_journeys), and
            # the counts must agree everywhere.
            unflagged = []
            for j in und:
                for s in j.sightings:
                    for h in ht.journey_of_key.get(s.key, []):
                        if h is not None and not ht.journeys[h].ambiguous:
                            unflagged.append(s.short())
            n_flag = sum(1 for h in ht.journeys.values() if h.ambiguous)
            rep = cr.reports[variant]
            expect(rep.get("ambiguous_journeys") == n_flag,
                   f"JSON ambiguous_journeys {rep.get('ambiguous_journeys')!r}, database {n_flag}")
            per_flow = sum(f.get("ambiguous", 0) for f in rep.get("flows", []))
            expect(per_flow == n_flag, f"per-flow ambiguous sum {per_flow}, database {n_flag}")
            text = cr.texts.get(variant, "")
            expect(n_flag == 0 or re.search(rf"\b{n_flag}\b[^\n]*ambiguous|ambiguous[^\n]*\b{n_flag}\b", text),
                   f"the text report has no line with the {n_flag} ambiguous journeys")
            return (f"{len(und)} undecidable in the reference, {n_flag} flagged, counted in JSON and text; "
                    f"{len(unflagged)} sightings of them decided by hoptrace (reassembly time)")
        ctx.checks(f"{cr.name}: {variant}: the undecidable journeys are flagged and counted (DB, JSON, text)", flagged)


def case5(ctx: Ctx) -> None:
    lab = ctx.lab
    N = 3
    pls = [marker("case5 fragmented", i, 4000) for i in range(N)]
    start = time.time() + 1.5
    c1 = {"start": start, "recv_s": 1.5, "sends": [
        {"t": 0.05 * i, "udp": {"dst": lab.ip["server"], "sport": 43000, "dport": 7002, "payload": p.hex(),
                                "nodf": True}} for i, p in enumerate(pls)]}
    cr = run_case(ctx, "5-fragments", c1, None, echo=[7002])
    if cr is None:
        return
    srv = tr.norm(lab.ip["server"])

    def rel(j):
        s = j.sightings[0]
        return bool(j.owner == "c1" and s.proto == 17 and (srv in (s.src, s.dst) or (j.orig and j.orig[2] == srv))
                    and s.ver == 4)

    def frag_truth(ref):
        problems = []
        firsts = [j for j in ref.journeys if rel(j) and j.sightings[0].is_frag and j.sightings[0].frag_off == 0]
        if len(firsts) != 2 * N:
            problems.append(f"{len(firsts)} first fragments (forward + reply), want {2 * N}")
        reasm = [j for j in ref.journeys if rel(j) and j.relation == "reassembly-of"]
        if len(reasm) != N:
            problems.append(f"{len(reasm)} reassembled datagrams on docker0, want {N} (br_netfilter)")
        echoed = cr.outputs.get("c1", {}).get("echoes", {}).get("43000", [])
        if sorted(echoed) != sorted(p.hex() for p in pls):
            problems.append(f"{len(echoed)} of {N} echoes came back")
        return problems
    validate_reference(ctx, cr, rel, {"c1": N}, {"c1": [p[:1472] for p in pls]}, extra=frag_truth)
    check_journeys(ctx, cr, rel)
    for variant in cr.dbs:
        rep = cr.reports[variant]
        ref = ref_for(cr, variant)

        def ports0(rep=rep) -> str:
            bad = [(f["proto"], f["original"]) for f in rep.get("flows", []) if f["proto"] == "udp" and
                   (0 in (f["original"].get("sport"), f["original"].get("dport")) or
                    0 in ((f.get("translated") or {}).get("sport", 1), (f.get("translated") or {}).get("dport", 1)))]
            expect(not bad, f"flows with port 0: {bad}")
            return "none"
        ctx.checks(f"{cr.name}: {variant}: no flow with ports 0", ports0)

        def frag_flows(variant=variant, rep=rep, ref=ref) -> str:
            ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
            flows = [f for f in rep.get("flows", []) if f["proto"] == "udp" and f["original"].get("sport") == 43000]
            expect(len(flows) == 1, f"{len(flows)} flows for c1:43000 -> server:7002")
            fid = flows[0]["id"]
            wrong, rel_bad = [], []
            for j in ref.journeys:
                if not rel(j):
                    continue
                for s in j.sightings:
                    for h in ht.journey_of_key.get(s.key, []):
                        if h is None or ht.journeys[h].flow_id != fid:
                            wrong.append(s.short())
                if j.relation:
                    hj = {h for s in j.sightings for h in ht.journey_of_key.get(s.key, []) if h is not None}
                    target = [r for r in ref.journeys if r.id == j.related][0]
                    ht_target = {h for s in target.sightings for h in ht.journey_of_key.get(s.key, []) if h is not None}
                    for h in hj:
                        hjr = ht.journeys[h]
                        if hjr.relation != j.relation or hjr.related not in ht_target:
                            rel_bad.append(f"{j.sightings[0].short()}: relation {hjr.relation} -> {hjr.related}, "
                                           f"want {j.relation} -> {sorted(ht_target)}")
            expect(not wrong, f"{len(wrong)} fragment sightings outside the datagram's flow, e.g. {wrong[:2]}")
            expect(not rel_bad, f"{len(rel_bad)} wrong relations: " + " | ".join(rel_bad[:3]))
            return f"all fragments in flow {fid}; fragment-of and reassembly-of as the reference"
        ctx.checks(f"{cr.name}: {variant}: fragments in their datagram's flow, fragment-of / reassembly-of", frag_flows)

        def per_datagram(variant=variant, rep=rep) -> str:
            flows = [f for f in rep.get("flows", []) if f["proto"] == "udp" and f["original"].get("sport") == 43000]
            expect(flows, "no flow")
            f = flows[0]
            fr = f.get("fragments")
            expect(isinstance(fr, dict) and fr.get("datagrams") == 2 * N,
                   f"JSON fragments {fr!r}, want datagrams {2 * N} ({N} sent + {N} echoes)")
            expect((f.get("forward_journeys"), f.get("reply_journeys")) == (N, N),
                   f"forward/reply journeys {f.get('forward_journeys')}/{f.get('reply_journeys')}, want {N}/{N} datagrams")
            expect(f.get("lost") == [], f"lost {f.get('lost')}")
            text = cr.texts.get(variant, "")
            expect(f"{N} of {N}" in text, f"text report does not say '{N} of {N}' (round trips per datagram)")
            return f"{N} of {N} datagrams made the round trip; fragments {fr}"
        ctx.checks(f"{cr.name}: {variant}: round trips counted per datagram, all answered", per_datagram)


def case6(ctx: Ctx) -> None:
    lab = ctx.lab
    pls = [marker("case6 ties", i, 100) for i in range(3)]
    start = time.time() + 1.5
    c1 = {"start": start, "recv_s": 1.0, "sends": [
        {"t": 0.03 * i, "udp": {"dst": lab.ip["server"], "sport": 44000, "dport": 7003, "payload": p.hex()}}
        for i, p in enumerate(pls)]}
    ping = shlex.join(["ip", "netns", "exec", lab.ns["c2"], "sh", "-c",
                       f"sleep 1.6; ping -n -c 3 -i 0.05 -W 2 {lab.ip['server']}"]) + " > /dev/null"
    cr = run_case(ctx, "6-equal-stamps", c1, None, extra_sh=[ping], echo=[7003], import_reverse=True)
    if cr is None:
        return

    def rel(j):
        return bool(j.orig and ((j.orig[0] == 17 and j.orig[4] == 7003) or (j.orig[0] == 1 and j.owner == "c2")))

    def ties(ref):
        n = sum(1 for j in ref.journeys if rel(j) for a, b in zip(j.sightings, j.sightings[1:]) if a.ts_ns == b.ts_ns)
        return [] if n else ["no equal timestamps along any journey (nothing to test)"]
    validate_reference(ctx, cr, rel, {"c1": 3, "c2": 3}, {"c1": pls}, extra=ties)
    check_journeys(ctx, cr, rel)
    check_flows(ctx, cr, lambda o: (o[0] == 17 and o[4] == 7003) or (o[0] == 1 and o[1] == lab.ip["c2"]), rel)
    for variant in cr.dbs:
        def order(variant=variant) -> str:
            ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
            ref = ref_for(cr, variant)
            rank = {}
            for j in ref.journeys:
                if rel(j):
                    for n, s in enumerate(j.sightings):
                        rank[s.key] = (j.id, n)
            con = __import__("sqlite3").connect(cr.dbs[variant])
            names = {pid: alias_for(ctx, variant).get(n, n) for pid, n in con.execute("SELECT id, name FROM points")}
            rows = con.execute("SELECT journey_id, hop, point_id, ts_ns, ip_id, ip_len, ip_version FROM packets "
                               "WHERE journey_id IS NOT NULL ORDER BY journey_id, hop").fetchall()
            con.close()
            bad, ties_n = [], 0
            by_j = collections.defaultdict(list)
            for jid, hop, pid, ts, ipid, iplen, ver in rows:
                by_j[jid].append((hop, (names[pid], ts, ipid if ver == 4 else 0, iplen)))
            for jid, ss in by_j.items():
                ranks = [rank.get(k) for _, k in ss]
                if None in ranks:
                    continue
                for (h1, k1), (h2, k2) in zip(ss, ss[1:]):
                    if k2[1] < k1[1]:
                        bad.append(f"journey {jid}: {k1[0]}@{k1[1]} -> {k2[0]}@{k2[1]} goes back in time")
                    if k1[1] == k2[1]:
                        ties_n += 1
                if [r[1] for r in ranks] != sorted(r[1] for r in ranks):
                    bad.append(f"journey {jid} in hop order {[k[0] for _, k in ss]}, the path says otherwise")
            expect(not bad, f"{len(bad)}: " + " | ".join(bad[:3]))
            hops = [(h["from"], h["to"], h["min_ns"]) for f in cr.reports[variant].get("flows", [])
                    for h in f.get("hops", []) if h.get("min_ns", 0) < 0]
            expect(not hops, f"negative hops: {hops[:3]}")
            return f"{len(by_j)} journeys in path order, {ties_n} equal-stamp hops, no negative hop"
        ctx.checks(f"{cr.name}: {variant}: equal stamps ordered by the path, hops never negative", order)


def case7(ctx: Ctx) -> None:
    lab = ctx.lab
    start = time.time() + 1.5
    c1 = {"start": start, "sends": [
        {"t": 0.0, "udp": {"dst": "172.17.255.255", "sport": 45000, "dport": 7009, "payload": b"bcast subnet".hex(),
                           "bcast": True}},
        {"t": 0.05, "udp": {"dst": "255.255.255.255", "sport": 45001, "dport": 7009, "payload": b"bcast all".hex(),
                            "bcast": True}},
        {"t": 0.1, "udp": {"dst": lab.ip["bridge"], "sport": 45002, "dport": 7010, "payload": b"to the bridge".hex()}}]}
    ping = shlex.join(["ip", "netns", "exec", lab.ns["c1"], "sh", "-c",
                       f"sleep 1.8; ping -n -c 1 -W 2 {lab.ip['server']}; ping -n -c 1 -W 2 {lab.ip['bridge']}"]) \
        + " > /dev/null"
    host_sink = Server(lab, ctx.tmp, ns="host", sink=[7010])
    try:
        cr = run_case(ctx, "7-any-bcast", c1, None, extra_sh=[ping],
                      extra_caps=[("host-any", lab.ns["host"], "any", "LINUX_SLL")])
    finally:
        host_sink.stop()
    if cr is None:
        return

    def rel_bcast(p):
        return p.proto == 17 and p.dport == 7009

    def rel_bridge(j):
        return bool(j.orig and j.orig[2] == lab.ip["bridge"] and j.owner == "c1")

    def rel_ping(j):
        return bool(j.orig and j.orig[0] == 1 and j.owner == "c1")
    validate_reference(ctx, cr, rel_ping, {"c1": 2}, None, extra=lambda ref: (
        [] if sum(1 for p in ref.broadcasts if rel_bcast(p)) >= 6 else ["broadcasts not seen"]))
    check_journeys(ctx, cr, lambda j: rel_ping(j) or rel_bridge(j))
    for variant in cr.dbs:
        if variant == "import-noroles":
            continue
        ref = ref_for(cr, variant)

        def bcast(variant=variant, ref=ref) -> str:
            ht = tr.load_hoptrace(cr.dbs[variant], alias_for(ctx, variant))
            with_j = [p.short() for p in ref.broadcasts if rel_bcast(p)
                      for h in ht.journey_of_key.get(p.key, []) if h is not None]
            flows = [f["original"] for f in cr.reports[variant].get("flows", [])
                     if f["original"].get("dst") in ("172.17.255.255", "255.255.255.255")]
            expect(not with_j and not flows, f"{len(with_j)} broadcast sightings in journeys (e.g. {with_j[:2]}), "
                   f"flows {flows}")
            n = sum(1 for p in ref.broadcasts if rel_bcast(p))
            return f"{n} broadcast sightings stored, none in a journey, no flow"
        ctx.checks(f"{cr.name}: {variant}: broadcasts get no journey and no flow", bcast)
    # conntrack: the flows to the bridge address never reached the NAT point (live: hoptrace has conntrack)
    rep = cr.reports.get("live", {})

    def not_reached() -> str:
        fl = [f for f in rep.get("flows", []) if f["original"].get("dst") == lab.ip["bridge"]
              and f["original"].get("src") == lab.ip["c1"]]
        expect(len(fl) == 2, f"{len(fl)} flows c1 -> {lab.ip['bridge']} (udp and the ping), want 2")
        states = [(f["proto"], (f.get("conntrack") or {}).get("state")) for f in fl]
        expect(all(s == "not-reached" for _, s in states), f"conntrack states {states}, want not-reached")
        text = cr.texts.get("live", "")
        blocks = [b for b in re.split(r"\n(?=Flow \d+)", text) if re.match(rf"Flow \d+ .*{re.escape(lab.ip['bridge'])}", b)]
        differs = [b.splitlines()[0] for b in blocks if "DIFFERS" in b]
        expect(not differs, f"text report says DIFFERS for {differs}")
        return f"{states}; no DIFFERS"
    ctx.checks(f"{cr.name}: live: flows to the bridge address: conntrack not-reached, never DIFFERS", not_reached)

    # tcpdump -i any (cooked v1) + c1's eth0, imported: copies, not duplicates
    any_pcap = cr.extra_pcaps["host-any"]
    db = ctx.tmp / cr.name / "any.db"
    specs = [f"c1-eth0={cr.pcaps['c1-eth0']}", f"host-any={any_pcap}"]
    r = run(ctx.hoptrace, "import", "--db", db, "--role", "c1-eth0=container", "--role", "host-any=other", *specs)
    if r.returncode == 2:
        r = run(ctx.hoptrace, "import", "--db", db, *specs)
    if not ctx.checks(f"{cr.name}: import of c1 eth0 + host `-i any` (LINUX_SLL)",
                      lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}") or "ok"):
        return
    frames = tr.read_capture(any_pcap)
    pk = [p for i, f in enumerate(frames) for p in [tr.dissect("host-any", i, f)] if p is not None]
    pings = [p for p in pk if p.proto == 1 and p.icmp_type in (0, 8) and p.dst != lab.ip["bridge"]
             and p.src != lab.ip["bridge"]]
    copies = collections.defaultdict(list)
    for p in pings:
        copies[p.ident].append(p)

    def copy_of() -> str:
        ht = tr.load_hoptrace(db)
        text = run(ctx.hoptrace, "report", "--db", db).stdout
        rep2 = report_json(ctx.hoptrace, db)
        problems = []
        for ident, ps in copies.items():
            # Copies on two interfaces of one pass share the kernel's timestamp, so one (point, time) key can name
            # two sightings: take every journey each distinct key has.
            keys = list(dict.fromkeys(p.key for p in ps))
            js = [h for k in keys for h in ht.journey_of_key.get(k, [None])]
            main = [h for h in set(js) if h is not None and ht.journeys[h].relation != "copy-of"]
            cps = [h for h in js if h is not None and ht.journeys[h].relation == "copy-of"]
            rep_ = [h for h in set(js) if h is not None and ht.journeys[h].relation == "repeats"]
            if rep_:
                problems.append(f"{ps[0].short()}: {len(rep_)} 'repeats' journeys")
            if len(main) != 1 or len(cps) != len(ps) - 1 or any(ht.journeys[h].related != main[0] for h in cps
                                                                  if main):
                problems.append(f"{ps[0].short()} seen {len(ps)}x: journeys {[(h, ht.journeys[h].relation) if h else None for h in js]}")
        n = max(len(v) for v in copies.values()) if copies else 0
        if not re.search(rf"seen on {n} interfaces of one point", text):
            problems.append(f"text report does not say 'seen on {n} interfaces of one point'")
        dup = [(f["id"], f.get("repeated_journeys")) for f in rep2.get("flows", [])
               if any((f.get("repeated_journeys") or {}).values())]
        if dup:
            problems.append(f"flows with repeated journeys: {dup}")
        expect(not problems, " | ".join(problems[:4]))
        return f"{len(copies)} ping packets, each seen {sorted({len(v) for v in copies.values()})} times, copies copy-of"
    ctx.checks(f"{cr.name}: -i any: the same packet on N interfaces is copy-of, not a duplicate", copy_of)


CASES = {1: case1, 2: case2, 3: case3, 4: case4, 5: case5, 6: case6, 7: case7}


def run_all(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, which: list[int]) -> None:
    ctx = Ctx(checks, hoptrace, lab, tmp)
    for n in which:
        guarded(checks, f"case {n} ran to the end", CASES[n], ctx)


def main() -> int:
    which = [int(a) for i, a in enumerate(sys.argv) if i > 0 and sys.argv[i - 1] == "--case"] or sorted(CASES)
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(float(os.environ.get("HOPTRACE_E2E_DEADLINE_S", "290")))
    checks = Checks()
    prefixes = []
    from live_common import workdir
    with workdir("hoptrace-trust-journeys-") as tmp, lablib.Lab(ipv6="nat") as lab:
        prefixes.append(lab.prefix)
        guarded(checks, "trust journeys", run_all, checks, hoptrace, lab, tmp, which)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
