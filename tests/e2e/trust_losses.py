#!/usr/bin/env python3
"""End-to-end trust test of loss localisation (issue #9, cases 8, 9, 10, 11; 12: fragments).

Each case runs real traffic from c1 in a fresh lab while `hoptrace trace --netns c1 --host-netns host`
captures it live AND the test's own tcpdump runs at the same four points (c1 eth0, its veth, docker0,
the uplink eth0). The live database is checked, then the four tcpdump files are imported (`hoptrace
import --role NAME=ROLE …`) as captured (nanoseconds) and cut to microseconds, and checked the same way.

The expected values never come from hoptrace: they are the iptables/ip6tables rule counters (`-L -v -x`),
what the test sent, and what the test's tcpdump saw at each point, parsed here with struct (no tshark):
the count of packets that crossed a point, the ICMP type/code/next-hop MTU of the errors, the reporter.

 8. ICMP echo c1 -> server (3 pings, nothing else to that destination) dropped in DOCKER-USER (created and
    jumped to from FORWARD, as Docker does): lost after docker0, expected at the uplink, count 3 = the
    rule's counter = what tcpdump saw at docker0 minus at the uplink.
 9. a) the uplink's MTU is 1280, c1 sends 1400-byte UDP datagrams with DF (IP_PMTUDISC_PROBE: DF on every
       datagram, the learned PMTU ignored): the host answers each with frag-needed (type 3 code 4, MTU
       1280) from 172.17.0.1. The flow is lost after docker0 with cause `rejected` and evidence
       {type 3, code 4, reporter 172.17.0.1, mtu 1280}; count = docker0 minus uplink (tcpdump); the
       frag-needed errors are delivered (icmp_errors[].lost == []).
    b) the router's link to the server has MTU 1280, so the ROUTER sends frag-needed; the host drops it
       in FORWARD: every such ICMP error is reported lost in the host, after the uplink, expected at
       docker0; the counts add up to the rule's counter = what the uplink saw minus docker0.
10. 40 UDP datagrams 1 ms apart, only the 10th dropped in FORWARD (`-m string` on its payload marker): in
    the import, exactly 1 lost after docker0 expected at the uplink, though the uplink's last packet
    comes < 100 ms later (= the rule's counter).
11. 10 UDP datagrams to udp/9999 dropped in FORWARD (and a ping that passes): imported with --role the
    report says `LOST: 10 … after docker0 … uplink`; imported without --role the inferred roles (stderr
    and points[].role) are the lab's truth; imported with a wrong role and `hoptrace correlate --role`
    corrected, the role changes in the JSON and the loss is reported.
12. 10 UDP datagrams of 3000 bytes without DF (the kernel cuts each into 3 fragments), 2 of them dropped in
    FORWARD after the host reassembled them (`-m string` on the whole datagram): each flow counts datagrams,
    so exactly 2 are lost after docker0, expected at the uplink (= the rule's counter; tcpdump: 10 whole
    datagrams on docker0, 8 x 3 fragments on the uplink) and none "after the veth" — the fragments that
    stopped there went on as the reassembled datagram.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Checks, expect, guarded, run, run_lab_test, short,  # noqa: E402
                         udp_sink, PACED_UDP_SENDER)

ROLES = ("container", "veth", "bridge", "uplink")
IMPORT_NAMES = {"container": "c1-eth0", "veth": "c1-veth", "bridge": "docker0", "uplink": "uplink"}
LOST_KEYS = ("after", "expected", "direction", "count")


# --------------------------------------------------------------------------------------------
# Independent evidence: the test's own pcap files, parsed with struct


@dataclasses.dataclass
class Pkt:
    ts_ns: int
    ver: int
    src: str
    dst: str
    proto: int
    ip_len: int  # IPv4 total length; IPv6 payload length + 40
    df: bool
    ip_id: int
    ttl: int
    frag: bool = False
    sport: int = 0
    dport: int = 0
    payload: bytes = b""
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    icmp_mtu: int | None = None  # next-hop MTU of frag-needed / packet too big
    inner: "Pkt | None" = None

    def is_frag_needed(self) -> bool:
        return (self.ver == 4 and self.proto == 1 and self.icmp_type == 3 and self.icmp_code == 4) or (
            self.ver == 6 and self.proto == 58 and self.icmp_type == 2)


def parse_ip(b: bytes, ts_ns: int = 0, quoted: bool = False) -> Pkt | None:
    if len(b) < 20:
        return None
    ver = b[0] >> 4
    if ver == 4:
        ihl = (b[0] & 15) * 4
        total, ip_id, frag_field, ttl, proto = struct.unpack("!HHHBB", b[2:10])
        p = Pkt(ts_ns, 4, str(ipaddress.IPv4Address(b[12:16])), str(ipaddress.IPv4Address(b[16:20])), proto, total,
                bool(frag_field & 0x4000), ip_id, ttl, frag=bool(frag_field & 0x3FFF))
        l4 = b[ihl:total] if not quoted else b[ihl:]
        first = (frag_field & 0x1FFF) == 0
    elif ver == 6:
        if len(b) < 40:
            return None
        plen, nh, hlim = struct.unpack("!HBB", b[4:8])
        p = Pkt(ts_ns, 6, str(ipaddress.IPv6Address(b[8:24])), str(ipaddress.IPv6Address(b[24:40])), nh, plen + 40,
                True, 0, hlim)
        l4 = b[40:40 + plen] if not quoted else b[40:]
        first = True
    else:
        return None
    if not first:
        return p
    if p.proto == 17 and len(l4) >= 8:
        p.sport, p.dport = struct.unpack("!HH", l4[:4])
        p.payload = l4[8:]
    elif p.proto == 6 and len(l4) >= 20:
        p.sport, p.dport = struct.unpack("!HH", l4[:4])
    elif p.proto in (1, 58) and len(l4) >= 8:
        p.icmp_type, p.icmp_code = l4[0], l4[1]
        if (p.proto, p.icmp_type) in ((1, 0), (1, 8), (58, 128), (58, 129)):
            p.icmp_id = struct.unpack("!H", l4[4:6])[0]
            p.payload = l4[8:]
        elif not quoted:
            if p.proto == 1 and p.icmp_type == 3 and p.icmp_code == 4:
                p.icmp_mtu = struct.unpack("!H", l4[6:8])[0]
            if p.proto == 58 and p.icmp_type == 2:
                p.icmp_mtu = struct.unpack("!I", l4[4:8])[0]
            if (p.proto == 1 and p.icmp_type in (3, 11, 12)) or (p.proto == 58 and p.icmp_type < 128):
                p.inner = parse_ip(l4[8:], quoted=True)
    return p


def read_pcap(path: Path) -> list[Pkt]:
    """The IP packets of a classic pcap file (Ethernet, Linux cooked v1/v2 or raw IP), µs or ns."""
    data = Path(path).read_bytes()
    magics = {b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\x4d\x3c\xb2\xa1": ("<", 1),
              b"\xa1\xb2\xc3\xd4": (">", 1000), b"\xa1\xb2\x3c\x4d": (">", 1)}
    if data[:4] not in magics:
        raise ValueError(f"{path}: not a classic pcap file")
    e, scale = magics[data[:4]]
    linktype = struct.unpack(e + "I", data[20:24])[0] & 0x0FFFFFFF
    off, out = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(e + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ts = sec * 1_000_000_000 + frac * scale
        if linktype == 1:
            etype, l3 = struct.unpack("!H", frame[12:14])[0], 14
            while etype in (0x8100, 0x88A8) and len(frame) >= l3 + 4:
                etype, l3 = struct.unpack("!H", frame[l3 + 2:l3 + 4])[0], l3 + 4
        elif linktype == 113:
            etype, l3 = struct.unpack("!H", frame[14:16])[0], 16
        elif linktype == 276:
            etype, l3 = struct.unpack("!H", frame[0:2])[0], 20
        elif linktype in (101, 228, 229, 12):
            etype, l3 = (0x86DD if frame[:1] and frame[0] >> 4 == 6 else 0x0800), 0
        else:
            raise ValueError(f"{path}: link type {linktype} not handled")
        if etype in (0x0800, 0x86DD):
            p = parse_ip(frame[l3:], ts)
            if p is not None:
                out.append(p)
    return out


def to_microseconds(src: Path, dst: Path) -> Path:
    """A copy of a nanosecond pcap file at microsecond resolution (what `tcpdump` writes by default):
    same frames, timestamps truncated to the µs."""
    data = bytearray(Path(src).read_bytes())
    if data[:4] == b"\x4d\x3c\xb2\xa1":
        e, data[:4] = "<", b"\xd4\xc3\xb2\xa1"
    elif data[:4] == b"\xa1\xb2\x3c\x4d":
        e, data[:4] = ">", b"\xa1\xb2\xc3\xd4"
    else:
        raise ValueError(f"{src}: not a nanosecond pcap file")
    off = 24
    while off + 16 <= len(data):
        frac, incl = struct.unpack(e + "I", data[off + 4:off + 8])[0], struct.unpack(e + "I", data[off + 8:off + 12])[0]
        data[off + 4:off + 8] = struct.pack(e + "I", frac // 1000)
        off += 16 + incl
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# --------------------------------------------------------------------------------------------
# The four points: tcpdump on each, names for live and imported captures


class Points:
    """The lab's truth about c1's path: role -> (namespace, ifname, live point name)."""

    def __init__(self, lab: lablib.Lab):
        h = lab.ns["host"]
        self.where = {"container": (lab.ns["c1"], "eth0", f"{lab.ns['c1']}:eth0"),
                      "veth": (h, lab.veth["c1"], lab.veth["c1"]),
                      "bridge": (h, lab.ifname["bridge"], lab.ifname["bridge"]),
                      "uplink": (h, lab.ifname["uplink"], lab.ifname["uplink"])}

    def live(self, role: str) -> str:
        return self.where[role][2]


class Captures:
    """The test's own tcpdump at the four points (nanoseconds), started before the traffic."""

    def __init__(self, points: Points, outdir: Path, tag: str):
        self.files: dict[str, Path] = {}
        self.caps: list[lablib.Tcpdump] = []
        try:
            for role in ROLES:
                ns, ifname, _ = points.where[role]
                path = outdir / f"{tag}-{IMPORT_NAMES[role]}.pcap"
                self.caps.append(lablib.Tcpdump(ns, ifname, path, buffer_kib=4096))
                self.files[role] = path
        except BaseException:
            lablib.stop_all(self.caps, settle=0)
            raise
        self.pkts: dict[str, list[Pkt]] = {}

    def stop(self) -> dict[str, list[Pkt]]:
        lablib.stop_all(self.caps, settle=0.3)
        self.pkts = {role: read_pcap(path) for role, path in self.files.items()}
        return self.pkts

    def dropped(self) -> dict[str, int]:
        return {r: c.dropped for r, c in zip(ROLES, self.caps) if c.dropped}

    def micro(self) -> dict[str, Path]:
        """The files cut to microseconds (checked: same packets, each stamp its ns stamp truncated)."""
        out = {r: to_microseconds(p, p.with_name(p.stem + "-us.pcap")) for r, p in self.files.items()}
        for r, path in out.items():
            us, ns = read_pcap(path), self.pkts[r]
            if len(us) != len(ns) or any(a.ts_ns != b.ts_ns // 1000 * 1000 for a, b in zip(us, ns)):
                raise AssertionError(f"{path.name}: the µs copy does not match its ns file")
        return out


# --------------------------------------------------------------------------------------------
# Counters and hoptrace


def rule_packets(lab: lablib.Lab, chain: str, pattern: str, ns: str = "host", tool: str = "iptables") -> int:
    """Packet counter of the DROP rule of `chain` whose line contains `pattern` (`-L -v -x -n`)."""
    out = lab.run(ns, tool, "-L", chain, "-v", "-x", "-n").stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "DROP" and pattern in line:
            return int(f[0])
    raise AssertionError(f"no DROP rule matching {pattern!r} in {chain}: {short(out)}")


def trace(hoptrace: Path, lab: lablib.Lab, db: Path, commands: Sequence[Sequence[str]],
          timeout: float = 90, extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """`hoptrace trace [EXTRA…] --netns c1 --host-netns host --db DB -- sh -c 'CMD && CMD …'`."""
    traffic = " ; ".join(shlex.join(list(map(str, c))) for c in commands)
    return run(hoptrace, "trace", *extra, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--db", db, "--",
               "sh", "-c", traffic, timeout=timeout)


def in_c1(lab: lablib.Lab, *argv) -> list[str]:
    return ["ip", "netns", "exec", lab.ns["c1"], *map(str, argv)]


def report_json(hoptrace: Path, db: Path) -> dict:
    r = run(hoptrace, "report", "--db", db, "--format", "json")
    expect(r.returncode == 0, f"hoptrace report --db {db.name} --format json exited {r.returncode}: {short(r.stderr)}")
    return json.loads(r.stdout)


def report_text(hoptrace: Path, db: Path) -> str:
    r = run(hoptrace, "report", "--db", db)
    expect(r.returncode == 0, f"hoptrace report --db {db.name} exited {r.returncode}: {short(r.stderr)}")
    return r.stdout


def do_import(hoptrace: Path, db: Path, files: dict[str, Path], names: dict[str, str],
              roles: dict[str, str] | None) -> subprocess.CompletedProcess:
    """`hoptrace import --db DB [--role NAME=ROLE]… NAME=FILE…` (raises when it fails)."""
    args: list[str] = []
    for role, name in names.items():
        if roles is not None and role in roles:
            args += ["--role", f"{name}={roles[role]}"]
    args += [f"{names[r]}={files[r]}" for r in ROLES]
    db.unlink(missing_ok=True)
    r = run(hoptrace, "import", "--db", db, *args, timeout=120)
    expect(r.returncode == 0, f"hoptrace import {' '.join(a if '=' not in a or '/' not in a else a.split('=')[0] + '=…' for a in args)} "
           f"exited {r.returncode}: {short(r.stderr)}")
    return r


def projected(lost: list[dict]) -> list[dict]:
    return [{k: x.get(k) for k in LOST_KEYS} for x in lost]


def find_flows(report: dict, pred: Callable[[dict], bool]) -> list[dict]:
    return [f for f in report.get("flows", []) if pred(f)]


def one_flow(report: dict, pred: Callable[[dict], bool], what: str) -> dict:
    flows = find_flows(report, pred)
    expect(len(flows) == 1, f"{len(flows)} {what} flows in the report; flows: "
           f"{[(f['proto'], f['original']) for f in report.get('flows', [])]}")
    return flows[0]


def udp_to(dport: int) -> Callable[[dict], bool]:
    return lambda f: f["proto"] == "udp" and f["original"].get("dport") == dport


def icmp_echo(ident: int) -> Callable[[dict], bool]:
    return lambda f: f["proto"] == "icmp" and f["original"].get("id") == ident


class Variant:
    """One way of getting the case's packets into a database: live, or an import of the tcpdump files."""

    def __init__(self, label: str, db: Path, names: dict[str, str]):
        self.label, self.db, self.names = label, db, names

    def name(self, role: str) -> str:
        return self.names[role]


def natural_names(lab: lablib.Lab) -> dict[str, str]:
    """Point names a user would give the four files without --role: the interfaces' own names where
    they are unique (the veth, docker0), c1-eth0 and host-eth0 for the two eth0s."""
    return {"container": "c1-eth0", "veth": lab.veth["c1"], "bridge": lab.ifname["bridge"], "uplink": "host-eth0"}


def variants(checks: Checks, hoptrace: Path, points: Points, caps: Captures, live_db: Path, tmp: Path, tag: str,
             live_ok: bool, inferred: dict[str, str] | None = None) -> list[tuple[Variant, dict | None]]:
    """(variant, JSON report or None) for the live database and the imports at ns and µs precision,
    each import with --role per file (one check line per import); with `inferred` (point names) also
    both imports without --role, under those names."""
    out: list[tuple[Variant, dict | None]] = []
    live = Variant("live", live_db, {r: points.live(r) for r in ROLES})
    got: dict = {}

    def live_report() -> str:
        got["r"] = report_json(hoptrace, live_db)
        return f"{len(got['r'].get('flows', []))} flows"
    if live_ok:
        checks(f"{tag} live: hoptrace report --format json", live_report)
    out.append((live, got.get("r")))
    micro = caps.micro()
    runs = [("import ns", caps.files, IMPORT_NAMES, True), ("import µs", micro, IMPORT_NAMES, True)]
    if inferred:
        runs += [("import ns, no --role", caps.files, inferred, False),
                 ("import µs, no --role", micro, inferred, False)]
    for label, files, names, with_roles in runs:
        slug = re.sub(r"[^a-z0-9]+", "-", label.replace("µ", "u"))
        v = Variant(label, tmp / f"{tag.replace(' ', '')}-{slug}.db", dict(names))
        result: dict = {}

        def imp(v=v, files=files, with_roles=with_roles) -> str:
            do_import(hoptrace, v.db, files, v.names, {r: r for r in ROLES} if with_roles else None)
            result["r"] = report_json(hoptrace, v.db)
            return f"{sum(p['packets'] for p in result['r']['points'])} packets at {len(result['r']['points'])} points"
        how = "--role NAME=ROLE" if with_roles else "without --role"
        checks(f"{tag} {label}: hoptrace import {how} of the four tcpdump files", imp)
        out.append((v, result.get("r")))
    return out


def count(pkts: list[Pkt], pred: Callable[[Pkt], bool]) -> int:
    return sum(1 for p in pkts if pred(p))


def check_trace_ran(checks: Checks, tag: str, r: subprocess.CompletedProcess, caps: Captures) -> bool:
    def verdict() -> str:
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        drops = caps.dropped()
        expect(not drops, f"tcpdump kernel drops: {drops}")
        return f"{len(r.stdout.splitlines())} report lines; tcpdump: " + ", ".join(
            f"{IMPORT_NAMES[k]} {len(v)}" for k, v in caps.pkts.items())
    return checks(f"{tag}: hoptrace trace around the traffic exits 0, tcpdump dropped nothing", verdict) is not None


# --------------------------------------------------------------------------------------------
# Case 8: a loss after docker0 with no other traffic to that destination


PING8_IDENT, PING8_COUNT = 8808, 3


def case8(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 8"
    server, points = lab.ip["server"], Points(lab)
    lab.run("host", "iptables", "-N", "DOCKER-USER", check=False)
    lab.run("host", "iptables", "-I", "FORWARD", "1", "-j", "DOCKER-USER")
    lab.run("host", "iptables", "-I", "DOCKER-USER", "-d", server, "-p", "icmp", "-j", "DROP")
    try:
        lab.flush_conntrack()
        before = rule_packets(lab, "DOCKER-USER", server)
        caps = Captures(points, tmp, "c8")
        try:
            r = trace(hoptrace, lab, tmp / "c8-live.db",
                      [in_c1(lab, "ping", "-n", "-c", PING8_COUNT, "-i", "0.2", "-W", "1", "-e", PING8_IDENT, server)])
        finally:
            pkts = caps.stop()
        dropped = rule_packets(lab, "DOCKER-USER", server) - before
    finally:
        lab.run("host", "iptables", "-D", "DOCKER-USER", "-d", server, "-p", "icmp", "-j", "DROP", check=False)
        lab.run("host", "iptables", "-D", "FORWARD", "-j", "DOCKER-USER", check=False)
    live_ok = check_trace_ran(checks, tag, r, caps)

    def is_req(p: Pkt) -> bool:
        return p.proto == 1 and p.icmp_type == 8 and p.dst == server
    seen = {role: count(pkts[role], is_req) for role in ROLES}

    def reference() -> str:
        expect(dropped == PING8_COUNT, f"DOCKER-USER DROP counter {dropped}, {PING8_COUNT} pings sent")
        expect(seen == {"container": 3, "veth": 3, "bridge": 3, "uplink": 0},
               f"echo requests per point (tcpdump): {seen}")
        other = [p for p in pkts["uplink"] if p.dst == server or p.src == server
                 or p.dst == lab.ip["host"] and p.proto == 1]
        expect(not other, f"the uplink saw other traffic of that destination: {len(other)} packets")
        return (f"DROP counter {dropped} = pings sent; tcpdump: {seen['bridge']} requests at docker0, "
                f"{seen['uplink']} at the uplink, nothing else to {server} crossed it")
    checks(f"{tag}: references agree (rule counter, tcpdump per point, nothing else to the server)", reference)
    want_n = seen["bridge"] - seen["uplink"]

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c8-live.db", tmp, tag, live_ok):
        if report is None:
            continue

        def lost(v=v, report=report) -> str:
            f = one_flow(report, icmp_echo(PING8_IDENT), f"ICMP echo id {PING8_IDENT}")
            want = [{"after": v.name("bridge"), "expected": v.name("uplink"), "direction": "forward",
                     "count": want_n}]
            expect(projected(f["lost"]) == want, f"lost {projected(f['lost'])}, want {want} "
                   f"(DOCKER-USER counter {dropped}); path {f.get('path')}")
            expect(all(x.get("cause", "dropped") == "dropped" for x in f["lost"]),
                   f"causes {[x.get('cause') for x in f['lost']]}")
            return f"{want_n} lost after {v.name('bridge')}, expected at {v.name('uplink')}, cause dropped"
        checks(f"{tag} {v.label}: the pings are lost after docker0, expected at the uplink, count = rule counter",
               lost)


# --------------------------------------------------------------------------------------------
# Case 9: DF datagrams rejected with frag-needed

# Sends N datagrams of IP length SIZE with DF set on each (IP_PMTUDISC_PROBE: DF, learned PMTU ignored).
DF_SENDER = r"""
import socket, sys, time
dst, sport, dport, sizes, marker, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if fam == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, 10, 3)   # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE
    hdr = 28
else:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 3)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_PROBE
    s.setsockopt(socket.IPPROTO_IPV6, 62, 1)  # IPV6_DONTFRAG
    hdr = 48
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
sent = 0
for i, size in enumerate(int(x) for x in sizes.split(",")):
    body = f"{marker} seq={i:04d} size={size} ".encode()
    body += b"." * (size - hdr - len(body))
    try:
        s.sendto(body, (dst, dport))
        sent += 1
    except OSError as e:
        print("send failed:", i, size, e, file=sys.stderr)
    time.sleep(gap)
print(sent)
"""

DF9_N, DF9_SIZE, LOW_MTU = 5, 1400, 1280


def df_sender(lab: lablib.Lab, dst: str, sport: int, dport: int, sizes: Sequence[int], marker: str,
              gap: float = 0.05) -> list[str]:
    return in_c1(lab, sys.executable, "-c", DF_SENDER, dst, sport, dport, ",".join(map(str, sizes)), marker, gap)


def no_ratelimit(lab: lablib.Lab) -> None:
    for ns in ("host", "router", "server"):
        lab.run(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        lab.run(ns, "sysctl", "-qw", "net.ipv6.icmp.ratelimit=0", check=False)


def case9a(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 9a"
    server, points, dport = lab.ip["server"], Points(lab), 9991
    no_ratelimit(lab)
    lab.run("c1", "ip", "route", "flush", "cache")
    lab.run("host", "ip", "link", "set", lab.ifname["uplink"], "mtu", LOW_MTU)
    try:
        lab.flush_conntrack()
        caps = Captures(points, tmp, "c9a")
        try:
            r = trace(hoptrace, lab, tmp / "c9a-live.db",
                      [df_sender(lab, server, 40991, dport, [DF9_SIZE] * DF9_N, "trust9a")])
        finally:
            pkts = caps.stop()
    finally:
        lab.run("host", "ip", "link", "set", lab.ifname["uplink"], "mtu", 1500)
        lab.run("c1", "ip", "route", "flush", "cache")
    live_ok = check_trace_ran(checks, tag, r, caps)

    def is_dgram(p: Pkt) -> bool:
        return p.proto == 17 and p.dport == dport and p.ip_len == DF9_SIZE and p.df

    def is_fn(p: Pkt) -> bool:
        return p.is_frag_needed() and p.inner is not None and p.inner.proto == 17 and p.inner.dport == dport
    seen = {role: count(pkts[role], is_dgram) for role in ROLES}
    fn_seen = {role: count(pkts[role], is_fn) for role in ROLES}
    fns = [p for p in pkts["container"] if is_fn(p)]

    def reference() -> str:
        expect(seen == {"container": DF9_N, "veth": DF9_N, "bridge": DF9_N, "uplink": 0},
               f"{DF9_SIZE}-byte DF datagrams per point: {seen}, sent {DF9_N}")
        expect(fn_seen == {"container": DF9_N, "veth": DF9_N, "bridge": DF9_N, "uplink": 0},
               f"frag-needed per point: {fn_seen}")
        bad = [(p.src, p.icmp_mtu) for p in fns if p.src != lab.ip["bridge"] or p.icmp_mtu != LOW_MTU]
        expect(not bad, f"frag-needed not from {lab.ip['bridge']} with MTU {LOW_MTU}: {bad}")
        return (f"{DF9_N} DF datagrams reached docker0, 0 the uplink; {len(fns)} frag-needed "
                f"(MTU {LOW_MTU}, from {lab.ip['bridge']}) reached c1 eth0")
    checks(f"{tag}: references agree (sent, tcpdump per point, frag-needed MTU = the uplink MTU set)", reference)
    want_n = seen["bridge"] - seen["uplink"]

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c9a-live.db", tmp, tag, live_ok):
        if report is None:
            continue

        def lost(v=v, report=report) -> str:
            f = one_flow(report, udp_to(dport), f"udp/{dport}")
            want = [{"after": v.name("bridge"), "expected": v.name("uplink"), "direction": "forward",
                     "count": want_n}]
            expect(projected(f["lost"]) == want, f"lost {projected(f['lost'])}, want {want}; path {f.get('path')}")
            x = f["lost"][0]
            expect(x.get("cause") == "rejected", f"cause {x.get('cause')!r}, want 'rejected'")
            ev = x.get("evidence")
            want_ev = {"type": 3, "code": 4, "reporter": lab.ip["bridge"], "mtu": LOW_MTU}
            expect(isinstance(ev, dict) and {k: ev.get(k) for k in want_ev} == want_ev,
                   f"evidence {ev}, want {want_ev}")
            return f"{want_n} rejected after {v.name('bridge')}, evidence {want_ev}"
        checks(f"{tag} {v.label}: DF datagrams lost after docker0, cause rejected, evidence frag-needed MTU "
               f"{LOW_MTU} from {lab.ip['bridge']}", lost)

        def delivered(v=v, report=report) -> str:
            errs = [e for e in report.get("icmp_errors", []) if e.get("type") == 3 and e.get("code") == 4
                    and e.get("reporter") == lab.ip["bridge"]]
            expect(len(errs) == len(fns), f"{len(errs)} frag-needed in icmp_errors, tcpdump saw {len(fns)} at c1 eth0")
            bad = [e.get("lost", "missing") for e in errs if e.get("lost") != []]
            expect(not bad, f"delivered frag-needed with lost {bad[:3]}")
            return f"{len(errs)} frag-needed from {lab.ip['bridge']}, each with lost []"
        checks(f"{tag} {v.label}: the frag-needed errors reached c1 (icmp_errors[].lost == [])", delivered)


def case9b(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 9b"
    server, points, dport = lab.ip["server"], Points(lab), 9992
    rule = ["FORWARD", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]
    no_ratelimit(lab)
    lab.run("c1", "ip", "route", "flush", "cache")
    lab.run("router", "ip", "link", "set", lab.ifname["router_downlink"], "mtu", LOW_MTU)
    lab.run("host", "iptables", "-I", *rule)
    try:
        lab.flush_conntrack()
        before = rule_packets(lab, "FORWARD", "icmptype 3 code 4")
        caps = Captures(points, tmp, "c9b")
        try:
            r = trace(hoptrace, lab, tmp / "c9b-live.db",
                      [df_sender(lab, server, 40992, dport, [DF9_SIZE] * DF9_N, "trust9b")])
        finally:
            pkts = caps.stop()
        dropped = rule_packets(lab, "FORWARD", "icmptype 3 code 4") - before
    finally:
        lab.run("host", "iptables", "-D", *rule, check=False)
        lab.run("router", "ip", "link", "set", lab.ifname["router_downlink"], "mtu", 1500)
        lab.run("c1", "ip", "route", "flush", "cache")
    live_ok = check_trace_ran(checks, tag, r, caps)

    def is_dgram(p: Pkt) -> bool:
        return p.proto == 17 and p.dport == dport and p.ip_len == DF9_SIZE and p.df

    def is_fn(p: Pkt) -> bool:
        return p.is_frag_needed() and p.inner is not None and p.inner.proto == 17 and p.inner.dport == dport
    seen = {role: count(pkts[role], is_dgram) for role in ROLES}
    fn_seen = {role: count(pkts[role], is_fn) for role in ROLES}
    fns = [p for p in pkts["uplink"] if is_fn(p)]

    def reference() -> str:
        expect(seen == {r: DF9_N for r in ROLES}, f"DF datagrams per point: {seen}, sent {DF9_N}")
        expect(dropped == DF9_N, f"FORWARD frag-needed DROP counter {dropped}, want {DF9_N}")
        expect(fn_seen == {"container": 0, "veth": 0, "bridge": 0, "uplink": DF9_N}, f"frag-needed per point: {fn_seen}")
        bad = [(p.src, p.icmp_mtu) for p in fns if p.src != lab.ip["router"] or p.icmp_mtu != LOW_MTU]
        expect(not bad, f"frag-needed not from {lab.ip['router']} with MTU {LOW_MTU}: {bad}")
        return (f"{DF9_N} datagrams crossed all four points; {len(fns)} frag-needed (MTU {LOW_MTU}) from the router "
                f"at the uplink, none at docker0; DROP counter {dropped}")
    checks(f"{tag}: references agree (sent, tcpdump per point, the router's frag-needed, rule counter)", reference)
    want_total = fn_seen["uplink"] - fn_seen["bridge"]

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c9b-live.db", tmp, tag, live_ok):
        if report is None:
            continue

        def lost_in_host(v=v, report=report) -> str:
            errs = [e for e in report.get("icmp_errors", []) if e.get("type") == 3 and e.get("code") == 4
                    and e.get("reporter") == lab.ip["router"]]
            expect(len(errs) == len(fns), f"{len(errs)} frag-needed from {lab.ip['router']} in icmp_errors, "
                   f"tcpdump saw {len(fns)} at the uplink")
            bad, total = [], 0
            for e in errs:
                ls = e.get("lost")
                if not isinstance(ls, list) or not ls:
                    bad.append(ls)
                    continue
                for x in ls:
                    if x.get("after") != v.name("uplink") or x.get("expected") != v.name("bridge"):
                        bad.append(x)
                    total += int(x.get("count", 0))
            expect(not bad, f"icmp_errors[].lost not after {v.name('uplink')} expected at {v.name('bridge')}: {bad[:3]}")
            expect(total == want_total == dropped, f"lost count {total}, tcpdump uplink - docker0 {want_total}, "
                   f"rule counter {dropped}")
            return f"{len(errs)} frag-needed lost after {v.name('uplink')}, expected at {v.name('bridge')}, {total} in all"
        checks(f"{tag} {v.label}: the router's frag-needed is lost in the host (icmp_errors[].lost after the uplink)",
               lost_in_host)

        def not_in_host(v=v, report=report) -> str:
            f = one_flow(report, udp_to(dport), f"udp/{dport}")
            inside = [x for x in f["lost"] if x.get("after") != v.name("uplink")]
            expect(not inside, f"the datagrams crossed all four points (tcpdump), yet lost {inside}")
            return f"no loss inside the host; lost {[(x.get('after'), x.get('cause'), x.get('count')) for x in f['lost']]}"
        checks(f"{tag} {v.label}: the datagrams, seen at every point, are not lost inside the host", not_in_host)


# --------------------------------------------------------------------------------------------
# Case 10: one datagram of 40 dropped, later ones of the flow seen at the uplink within 100 ms


C10_N, C10_DPORT, C10_SPORT, C10_MARK = 40, 9996, 40996, "trust10"


def case10(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 10"
    server, points = lab.ip["server"], Points(lab)
    victim = f"{C10_MARK} seq={9:06d}"
    rule = ["FORWARD", "-p", "udp", "--dport", str(C10_DPORT), "-m", "string", "--algo", "bm", "--string", victim,
            "-j", "DROP"]
    lab.run("host", "iptables", "-I", *rule)
    try:
        with udp_sink(lab, C10_DPORT):
            lab.flush_conntrack()
            before = rule_packets(lab, "FORWARD", f"dpt:{C10_DPORT}")
            caps = Captures(points, tmp, "c10")
            try:
                r = trace(hoptrace, lab, tmp / "c10-live.db",
                          [in_c1(lab, sys.executable, "-c", PACED_UDP_SENDER, server, C10_SPORT, C10_DPORT, C10_N,
                                 C10_MARK, 0.001)])
            finally:
                pkts = caps.stop()
            dropped = rule_packets(lab, "FORWARD", f"dpt:{C10_DPORT}") - before
    finally:
        lab.run("host", "iptables", "-D", *rule, check=False)
    live_ok = check_trace_ran(checks, tag, r, caps)

    def ours(p: Pkt) -> bool:
        return p.proto == 17 and p.dport == C10_DPORT and p.payload.startswith(C10_MARK.encode())
    seqs = {role: [int(p.payload.split(b"seq=")[1][:6]) for p in pkts[role] if ours(p)] for role in ROLES}
    gap_ms: list[float] = []

    def reference() -> str:
        expect(dropped == 1, f"DROP counter {dropped}, want 1 (only seq 9)")
        for role in ("container", "veth", "bridge"):
            expect(seqs[role] == list(range(C10_N)), f"{IMPORT_NAMES[role]} saw seqs {seqs[role]}")
        expect(seqs["uplink"] == [i for i in range(C10_N) if i != 9], f"uplink saw seqs {seqs['uplink']}")
        lost_ts = next(p.ts_ns for p in pkts["bridge"] if ours(p) and b"seq=000009" in p.payload)
        last_uplink = max(p.ts_ns for p in pkts["uplink"])
        gap_ms.append((last_uplink - lost_ts) / 1e6)
        expect(0 < gap_ms[0] < 100, f"the uplink's last packet came {gap_ms[0]:.1f} ms after the lost one")
        return (f"DROP counter 1; 40 at docker0, 39 at the uplink (seq 9 missing); the uplink's last packet "
                f"{gap_ms[0]:.1f} ms after the lost one")
    checks(f"{tag}: references agree (rule counter, tcpdump seqs per point, uplink's last packet < 100 ms later)",
           reference)
    want_n = len(seqs["bridge"]) - len(seqs["uplink"])

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c10-live.db", tmp, tag, live_ok,
                              inferred=natural_names(lab)):
        if report is None:
            continue

        def lost(v=v, report=report) -> str:
            f = one_flow(report, udp_to(C10_DPORT), f"udp/{C10_DPORT}")
            want = [{"after": v.name("bridge"), "expected": v.name("uplink"), "direction": "forward",
                     "count": want_n}]
            expect(projected(f["lost"]) == want, f"lost {projected(f['lost'])}, want {want} (DROP counter "
                   f"{dropped}); {f.get('forward_journeys')} forward journeys, path {f.get('path')}")
            expect(f.get("forward_journeys") == C10_N, f"{f.get('forward_journeys')} forward journeys, sent {C10_N}")
            return f"exactly {want_n} lost after {v.name('bridge')}, expected at {v.name('uplink')}; {C10_N} journeys"
        checks(f"{tag} {v.label}: exactly 1 lost after docker0, expected at the uplink (= rule counter)", lost)


# --------------------------------------------------------------------------------------------
# Case 11: imported points with roles, inferred roles, re-correlation with a corrected role


C11_N, C11_DPORT, C11_SPORT, C11_MARK = 10, 9999, 40911, "trust11"
PING11_IDENT, PING11_COUNT = 1111, 3


def case11(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 11"
    server, points = lab.ip["server"], Points(lab)
    rule = ["FORWARD", "-p", "udp", "--dport", str(C11_DPORT), "-j", "DROP"]
    lab.run("host", "iptables", "-I", *rule)
    try:
        lab.flush_conntrack()
        before = rule_packets(lab, "FORWARD", f"dpt:{C11_DPORT}")
        caps = Captures(points, tmp, "c11")
        try:
            r = trace(hoptrace, lab, tmp / "c11-live.db", [
                in_c1(lab, sys.executable, "-c", PACED_UDP_SENDER, server, C11_SPORT, C11_DPORT, C11_N, C11_MARK, 0.02),
                in_c1(lab, "ping", "-n", "-c", PING11_COUNT, "-i", "0.2", "-W", "1", "-e", PING11_IDENT, server)])
        finally:
            pkts = caps.stop()
        dropped = rule_packets(lab, "FORWARD", f"dpt:{C11_DPORT}") - before
    finally:
        lab.run("host", "iptables", "-D", *rule, check=False)
    live_ok = check_trace_ran(checks, tag, r, caps)

    def ours(p: Pkt) -> bool:
        return p.proto == 17 and p.dport == C11_DPORT and p.payload.startswith(C11_MARK.encode())
    seen = {role: count(pkts[role], ours) for role in ROLES}
    pings = {role: count(pkts[role], lambda p: p.proto == 1 and p.icmp_type in (0, 8)) for role in ROLES}

    def reference() -> str:
        expect(dropped == C11_N, f"DROP counter {dropped}, sent {C11_N}")
        expect(seen == {"container": C11_N, "veth": C11_N, "bridge": C11_N, "uplink": 0}, f"tcpdump per point {seen}")
        expect(set(pings.values()) == {2 * PING11_COUNT}, f"ping requests+replies per point {pings}")
        return f"DROP counter {dropped} = sent; tcpdump {seen}; the ping crossed every point both ways"
    checks(f"{tag}: references agree (rule counter, tcpdump per point, the ping passed)", reference)
    want_n = seen["bridge"] - seen["uplink"]

    def loss_ok(v: Variant, report: dict) -> str:
        f = one_flow(report, udp_to(C11_DPORT), f"udp/{C11_DPORT}")
        want = [{"after": v.name("bridge"), "expected": v.name("uplink"), "direction": "forward", "count": want_n}]
        expect(projected(f["lost"]) == want, f"lost {projected(f['lost'])}, want {want}; path {f.get('path')}")
        ping = one_flow(report, icmp_echo(PING11_IDENT), f"ICMP echo id {PING11_IDENT}")
        expect(ping["lost"] == [], f"the ping's flow lost {ping['lost']}")
        return f"{want_n} lost after {v.name('bridge')}, expected at {v.name('uplink')}; the ping none"

    def text_ok(v: Variant) -> str:
        text = report_text(hoptrace, v.db)
        pat = re.compile(rf"LOST: {want_n}\b.*\bafter {re.escape(v.name('bridge'))}\b.*\b{re.escape(v.name('uplink'))}\b")
        lines = [ln.strip() for ln in text.splitlines() if pat.search(ln)]
        expect(lines, f"no 'LOST: {want_n} … after {v.name('bridge')} … {v.name('uplink')}' line in: "
               + short(" | ".join(ln for ln in text.splitlines() if "LOST" in ln or "lost" in ln) or text))
        return lines[0]

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c11-live.db", tmp, tag, live_ok):
        if report is None:
            continue
        checks(f"{tag} {v.label}: udp/{C11_DPORT} lost after docker0, expected at the uplink, count = rule counter",
               lambda v=v, report=report: loss_ok(v, report))
        checks(f"{tag} {v.label}: the text report says LOST: {want_n} after docker0, expected at the uplink",
               lambda v=v: text_ok(v))

    # Without --role: the inferred roles, printed on stderr and in points[].role, are the lab's truth.
    natural = natural_names(lab)
    v = Variant("import ns, roles inferred", tmp / "c11-inferred.db", natural)
    got: dict = {}

    def inferred() -> str:
        res = do_import(hoptrace, v.db, caps.files, natural, None)
        report = report_json(hoptrace, v.db)
        got["r"] = report
        roles = {p["name"]: p.get("role") for p in report["points"]}
        want = {natural[r]: r for r in ROLES}
        expect(roles == want, f"points[].role {roles}, the lab's truth {want}")
        no_ev = [p["name"] for p in report["points"] if not str(p.get("role_evidence") or "").strip()]
        expect(not no_ev, f"no role_evidence for {no_ev}")
        missing = [f"{n}={r}" for n, r in want.items()
                   if not any(n in ln and re.search(rf"\b{r}\b", ln) for ln in res.stderr.splitlines())]
        expect(not missing, f"stderr does not name the inferred role of {missing}: {short(res.stderr)}")
        return ", ".join(f"{p['name']}={p['role']} ({p.get('role_evidence')})" for p in report["points"])
    checks(f"{tag} {v.label}: stderr and points[].role give the lab's roles, with evidence", inferred)
    if "r" in got:
        checks(f"{tag} {v.label}: the loss is reported as with --role", lambda: loss_ok(v, got["r"]))

    # A wrong role at import, corrected by `hoptrace correlate --role`.
    v = Variant("import ns, role corrected by correlate", tmp / "c11-corrected.db", dict(IMPORT_NAMES))

    def corrected() -> str:
        roles = {r: r for r in ROLES}
        roles["uplink"] = "other"
        do_import(hoptrace, v.db, caps.files, v.names, roles)
        before_role = {p["name"]: p.get("role") for p in report_json(hoptrace, v.db)["points"]}
        expect(before_role.get(v.name("uplink")) == "other",
               f"imported with --role {v.name('uplink')}=other, points[].role says {before_role}")
        rc = run(hoptrace, "correlate", "--db", v.db, "--role", f"{v.name('uplink')}=uplink")
        expect(rc.returncode == 0, f"hoptrace correlate --role exited {rc.returncode}: {short(rc.stderr)}")
        report = report_json(hoptrace, v.db)
        after_role = {p["name"]: p.get("role") for p in report["points"]}
        expect(after_role == {v.name(r): r for r in ROLES}, f"after correlate --role: {after_role}")
        return f"{v.name('uplink')}: other -> uplink; " + loss_ok(v, report)
    checks(f"{tag} {v.label}: correlate --role NAME=ROLE changes the role in the JSON and the loss is reported",
           corrected)


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Case 12: fragmented datagrams reassembled on docker0 and dropped in FORWARD


C12_N, C12_DPORT, C12_SPORT, C12_MARK, C12_DROP = 10, 9994, 40994, "trust12", (3, 6)
FRAGMENTING_SENDER = r"""
import socket, sys, time
dst, sport, dport, n, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
drop = {int(x) for x in sys.argv[6].split(",")}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: no DF, the kernel fragments
s.bind(("0.0.0.0", sport))
s.connect((dst, dport))
for i in range(n):
    head = f"{mark} seq={i:06d} {'drop' if i in drop else 'pass'}|".encode()
    s.send(head + bytes(3000 - len(head)))
    time.sleep(0.005)
print(n)
"""


def case12(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    tag = "case 12"
    server, points = lab.ip["server"], Points(lab)
    rule = ["FORWARD", "-p", "udp", "--dport", str(C12_DPORT), "-m", "string", "--algo", "bm", "--string",
            "drop|", "-j", "DROP"]
    lab.run("host", "iptables", "-I", *rule)
    try:
        with udp_sink(lab, C12_DPORT):
            lab.flush_conntrack()
            before = rule_packets(lab, "FORWARD", f"dpt:{C12_DPORT}")
            caps = Captures(points, tmp, "c12")
            try:
                r = trace(hoptrace, lab, tmp / "c12-live.db",
                          [in_c1(lab, sys.executable, "-c", FRAGMENTING_SENDER, server, C12_SPORT, C12_DPORT, C12_N,
                                 C12_MARK, ",".join(map(str, C12_DROP)))], extra=["--trace-rules"])
            finally:
                pkts = caps.stop()
            dropped = rule_packets(lab, "FORWARD", f"dpt:{C12_DPORT}") - before
            forward_rules = lab.run("host", "iptables", "-S", "FORWARD").stdout.splitlines()
    finally:
        lab.run("host", "iptables", "-D", *rule, check=False)
    live_ok = check_trace_ran(checks, tag, r, caps)

    def ours(p: Pkt) -> bool:  # whole datagrams and first fragments (they carry the ports and the marker)
        return p.proto == 17 and p.dport == C12_DPORT and p.payload.startswith(C12_MARK.encode())

    def pieces(role: str) -> int:  # every fragment of the flow's datagrams (later ones carry no ports)
        return count(pkts[role], lambda p: p.proto == 17 and p.frag and p.dst in (server,))

    def reference() -> str:
        expect(dropped == len(C12_DROP), f"DROP counter {dropped}, want {len(C12_DROP)}")
        veth = [p for p in pkts["veth"] if ours(p)]
        expect(len(veth) == C12_N and all(p.frag for p in veth) and pieces("veth") == 3 * C12_N,
               f"veth: {len(veth)} first fragments, {pieces('veth')} fragments; want {C12_N}, {3 * C12_N}")
        whole = [p for p in pkts["bridge"] if ours(p) and not p.frag]
        expect(len(whole) == C12_N, f"docker0: {len(whole)} reassembled datagrams, want {C12_N}")
        up = [p for p in pkts["uplink"] if ours(p)]
        expect(len(up) == C12_N - len(C12_DROP) and pieces("uplink") == 3 * len(up),
               f"uplink: {len(up)} first fragments, {pieces('uplink')} fragments; want {C12_N - len(C12_DROP)}")
        return (f"DROP counter {dropped}; {3 * C12_N} fragments on the veth, {C12_N} whole datagrams on docker0, "
                f"{pieces('uplink')} fragments of {len(up)} datagrams on the uplink")
    checks(f"{tag}: references agree (rule counter, tcpdump: fragments on the veth and the uplink, whole datagrams "
           f"on docker0)", reference)

    for v, report in variants(checks, hoptrace, points, caps, tmp / "c12-live.db", tmp, tag, live_ok):
        if report is None:
            continue

        def lost(v=v, report=report) -> str:
            f = one_flow(report, udp_to(C12_DPORT), f"udp/{C12_DPORT}")
            want = [{"after": v.name("bridge"), "expected": v.name("uplink"), "direction": "forward",
                     "count": dropped}]
            expect(projected(f["lost"]) == want, f"lost {projected(f['lost'])}, want {want} (DROP counter "
                   f"{dropped}); path {f.get('path')}")
            expect(f.get("forward_journeys") == C12_N and (f.get("fragments") or {}).get("datagrams") == C12_N,
                   f"{f.get('forward_journeys')} forward journeys, fragments {f.get('fragments')}; sent {C12_N}")
            return f"exactly {dropped} datagrams lost after {v.name('bridge')}, expected at {v.name('uplink')}"
        checks(f"{tag} {v.label}: the dropped datagrams lost after docker0 (= rule counter), none after the veth",
               lost)
        if v.label != "live":
            continue

        def dropped_by(report=report) -> str:
            # --trace-rules: the hook saw each datagram whole; its verdict is the datagram's (iptables -S's text).
            text = [x[len("-A FORWARD "):] for x in forward_rules if f"--dport {C12_DPORT}" in x]
            f = one_flow(report, udp_to(C12_DPORT), f"udp/{C12_DPORT}")
            rules = f["lost"][0].get("rules") if f["lost"] else None
            expect(len(text) == 1 and rules and [(x["chain"], x["rule"], x["packets"]) for x in rules]
                   == [("FORWARD", text[0], dropped)], f"rules {rules}, iptables -S {text}, counter {dropped}")
            return f"dropped by filter FORWARD {text[0]} ({dropped} traced datagrams = counter)"
        checks(f"{tag} live --trace-rules: the drop rule named for the fragmented datagrams, once each", dropped_by)


CASES = (("case 8", case8), ("case 9a", case9a), ("case 9b", case9b), ("case 10", case10), ("case 11", case11),
         ("case 12", case12))


def run_all(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    only = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--case=")]
    for name, fn in CASES:
        if only and name.split()[1] not in only:
            continue
        t0 = time.monotonic()
        guarded(checks, f"{name} ran to its end", fn, checks, hoptrace, lab, tmp)
        print(f"  ({name}: {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)


def main() -> int:
    return run_lab_test("trust-losses", "trust: losses", run_all, watchdog_s=175)


if __name__ == "__main__":
    sys.exit(main())
