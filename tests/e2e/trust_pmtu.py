#!/usr/bin/env python3
"""End-to-end trust test of PMTU reporting (issue #9, case 13).

c1 sends one UDP flow of DF datagrams of mixed IP sizes (1000, 1280 and 1500 bytes; IP_PMTUDISC_PROBE:
DF on every datagram, the PMTU c1 learns ignored) to a sink on the server, while `hoptrace trace --netns c1
--host-netns host` captures live and the test's own tcpdump runs at c1 eth0, its veth, docker0, the uplink
and the server's eth0. A link on the way has MTU 1280, so the 1500-byte datagrams die there and the 1000-
and 1280-byte ones pass:

 A. "returned": the host's uplink has MTU 1280; the host sends frag-needed (MTU 1280) from 172.17.0.1.
 B. "none", a PMTU black hole: as A, but the host's own frag-needed is dropped in OUTPUT (no point sees it).
 C. "dropped-in-host": the router's link to the server has MTU 1280; the router's frag-needed (from
    192.168.43.1) arrives at the uplink and the host drops it in FORWARD.
 D. IPv6 (Lab(ipv6="nat")): as A with ICMPv6 packet too big (MTU 1280) from the host (fd00:17::1).
 E. IPv6: as C, the router's packet too big (from fd00:43::1) dropped in the host's ip6tables FORWARD.
    (IPv6: the JSON and the DB are checked, not the text sentence, whose words the contract gives for IPv4.)

Checks, for the live database and the imports (--role per file) of the tcpdump files at ns and µs:
 - DB `packets.icmp_mtu` per point = the next-hop MTU field tcpdump's frag-needed / packet-too-big carry
   at that point (parsed from the raw bytes), NULL on every other packet;
 - JSON flow `pmtu` = {lost_min_size, passed_max_size, mtu, reporter, frag_needed}: the smallest datagram
   that never reached the server, the largest that did (the server's tcpdump), the MTU the test set (and
   tcpdump read in the ICMP error), the error's source, and where the error went;
 - the text report's sentence ("1500-byte DF packets lost after docker0, packets up to 1280 bytes pass;
   frag-needed (MTU 1280) came back from 172.17.0.1", "… no frag-needed came back: a PMTU black hole",
   "frag-needed arrived on eth0 but was dropped in the host").

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import Checks, expect, guarded, netns_left, query, short, workdir  # noqa: E402
from trust_losses import (ROLES, Captures, Pkt, Points, df_sender, no_ratelimit, one_flow,  # noqa: E402
                          read_pcap, report_text, rule_packets, trace, udp_to, variants)

SIZES = [1000, 1280, 1500, 1280, 1500, 1000, 1500, 1280]
LOW_MTU = 1280


@contextmanager
def sink(lab: lablib.Lab, port: int, v6: bool) -> Iterator[subprocess.Popen]:
    """Swallows the datagrams on the server (no port unreachable back)."""
    proc = lab.popen("server", "socat", "-u", f"UDP{'6' if v6 else ''}-RECV:{port},reuseaddr", "/dev/null",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Scenario:
    def __init__(self, key: str, title: str, dport: int, v6: bool = False):
        self.key, self.title, self.dport, self.v6 = key, title, dport, v6
        self.tag = f"PMTU {key}"


def run_scenario(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, sc: Scenario) -> None:
    points = Points(lab)
    server = lab.ip6["server"] if sc.v6 else lab.ip["server"]
    bridge_ip = lab.ip6["bridge"] if sc.v6 else lab.ip["bridge"]
    router_ip = lab.ip6["router"] if sc.v6 else lab.ip["router"]
    ip6t = "ip6tables" if sc.v6 else "iptables"
    no_ratelimit(lab)
    lab.run("c1", "ip", "route", "flush", "cache")
    lab.run("c1", "ip", "-6", "route", "flush", "cache", check=False)
    undo: list[list] = []
    rule_chain, rule_pat, rule = None, None, None
    if sc.key in ("A", "B", "D"):
        lab.run("host", "ip", "link", "set", lab.ifname["uplink"], "mtu", LOW_MTU)
        undo.append(["host", "ip", "link", "set", lab.ifname["uplink"], "mtu", 1500])
        mtu_where, want_reporter = "the host's uplink", bridge_ip
    else:
        lab.run("router", "ip", "link", "set", lab.ifname["router_downlink"], "mtu", LOW_MTU)
        undo.append(["router", "ip", "link", "set", lab.ifname["router_downlink"], "mtu", 1500])
        mtu_where, want_reporter = "the router's link to the server", router_ip
    if sc.key == "B":
        rule_chain, rule_pat = "OUTPUT", "icmptype 3 code 4"
        rule = ["OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]
    elif sc.key == "C":
        rule_chain, rule_pat = "FORWARD", "icmptype 3 code 4"
        rule = ["FORWARD", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]
    elif sc.key == "E":
        rule_chain, rule_pat = "FORWARD", "ipv6-icmptype 2"
        rule = ["FORWARD", "-p", "icmpv6", "--icmpv6-type", "packet-too-big", "-j", "DROP"]
    if rule:
        lab.run("host", ip6t, "-I", *rule)
        undo.append(["host", ip6t, "-D", *rule])
    marker = f"pmtu{sc.key}"
    try:
        with sink(lab, sc.dport, sc.v6):
            lab.flush_conntrack()
            before = rule_packets(lab, rule_chain, rule_pat, tool=ip6t) if rule else 0
            caps = Captures(points, tmp, f"pmtu{sc.key}")
            srv = lablib.Tcpdump(lab.ns["server"], lab.ifname["server"], tmp / f"pmtu{sc.key}-server.pcap",
                                 buffer_kib=4096)
            try:
                r = trace(hoptrace, lab, tmp / f"pmtu{sc.key}-live.db",
                          [df_sender(lab, server, 41000 + sc.dport % 1000, sc.dport, SIZES, marker)])
            finally:
                pkts = caps.stop()
                srv.stop(settle=0)
                at_server = read_pcap(srv.path)
            dropped = (rule_packets(lab, rule_chain, rule_pat, tool=ip6t) - before) if rule else 0
    finally:
        for u in undo:
            lab.run(u[0], *u[1:], check=False)
        lab.run("c1", "ip", "route", "flush", "cache")
        lab.run("c1", "ip", "-6", "route", "flush", "cache", check=False)

    def ours(p: Pkt) -> bool:
        return p.proto == 17 and p.dport == sc.dport and p.payload.startswith(marker.encode())

    def is_err(p: Pkt) -> bool:
        return p.is_frag_needed() and p.inner is not None and p.inner.proto == 17 and p.inner.dport == sc.dport
    sent = [p for p in pkts["container"] if ours(p)]
    arrived = [p for p in at_server if ours(p)]
    seq = lambda p: p.payload.split(b"seq=")[1][:4]  # noqa: E731
    arrived_seqs = {seq(p) for p in arrived}
    lost_sizes = sorted(p.ip_len for p in sent if seq(p) not in arrived_seqs)
    passed_sizes = sorted(p.ip_len for p in arrived)
    errs = {role: [p for p in pkts[role] if is_err(p)] for role in ROLES}
    err_mtus = {role: collections.Counter(p.icmp_mtu for p in errs[role]) for role in ROLES}
    n_big = SIZES.count(max(SIZES))

    def ran() -> str:
        expect(r.returncode == 0, f"hoptrace trace exit {r.returncode}: {short(r.stderr)}")
        expect(not caps.dropped() and not srv.dropped, f"tcpdump kernel drops: {caps.dropped()}, server {srv.dropped}")
        return f"{len(r.stdout.splitlines())} report lines"
    live_ok = checks(f"{sc.tag} ({sc.title}): hoptrace trace around the datagrams exits 0", ran) is not None

    def reference() -> str:
        expect([p.ip_len for p in sent] == SIZES and all(p.df for p in sent),
               f"c1 eth0 saw sizes {[p.ip_len for p in sent]} (DF {[p.df for p in sent]}), sent {SIZES}")
        expect(lost_sizes == [max(SIZES)] * n_big, f"never reached the server: sizes {lost_sizes}")
        expect(passed_sizes == sorted(s for s in SIZES if s <= LOW_MTU), f"reached the server: {passed_sizes}")
        everywhere = [p for role in ROLES for p in errs[role]]
        bad = [(p.src, p.icmp_mtu, p.inner.ip_len) for p in everywhere
               if p.src != want_reporter or p.icmp_mtu != LOW_MTU or p.inner.ip_len != max(SIZES)]
        expect(not bad, f"ICMP errors not from {want_reporter} with MTU {LOW_MTU} quoting {max(SIZES)} bytes: {bad}")
        per_point = {role: len(errs[role]) for role in ROLES}
        if sc.key in ("A", "D"):
            want = {"container": n_big, "veth": n_big, "bridge": n_big, "uplink": 0}
        elif sc.key == "B":
            want = {role: 0 for role in ROLES}
            expect(dropped == n_big, f"OUTPUT frag-needed DROP counter {dropped}, want {n_big}")
        else:
            want = {"container": 0, "veth": 0, "bridge": 0, "uplink": n_big}
            expect(dropped == n_big, f"FORWARD {'packet-too-big' if sc.v6 else 'frag-needed'} DROP counter "
                   f"{dropped}, want {n_big}")
        expect(per_point == want, f"ICMP errors per point (tcpdump) {per_point}, want {want}")
        return (f"MTU {LOW_MTU} on {mtu_where}; lost sizes {lost_sizes}, passed {passed_sizes} (server tcpdump); "
                f"errors per point {per_point}" + (f"; DROP counter {dropped}" if rule else ""))
    checks(f"{sc.tag}: references agree (sent, the server's tcpdump, the ICMP errors' MTU field, rule counter)",
           reference)

    frag_needed = {"A": "returned", "B": "none", "C": "dropped-in-host", "D": "returned",
                   "E": "dropped-in-host"}[sc.key]
    want_pmtu = {"lost_min_size": min(lost_sizes) if lost_sizes else None,
                 "passed_max_size": max(passed_sizes) if passed_sizes else None,
                 "mtu": LOW_MTU if sc.key != "B" else None,
                 "reporter": want_reporter if sc.key != "B" else None,
                 "frag_needed": frag_needed}

    for v, report in variants(checks, hoptrace, points, caps, tmp / f"pmtu{sc.key}-live.db", tmp, sc.tag, live_ok):
        if report is None:
            continue

        def icmp_mtu(v=v) -> str:
            rows = query(v.db, "SELECT p.name, k.icmp_mtu FROM packets k JOIN points p ON p.id = k.point_id "
                               "WHERE k.icmp_mtu IS NOT NULL")
            got = {role: collections.Counter(m for n, m in rows if n == v.name(role)) for role in ROLES}
            expect(got == err_mtus, f"packets.icmp_mtu per point {dict(got)}, tcpdump's MTU fields {dict(err_mtus)}")
            return ", ".join(f"{v.name(r)} {dict(c) or 'none'}" for r, c in got.items()) + " (= tcpdump)"
        checks(f"{sc.tag} {v.label}: packets.icmp_mtu = the MTU field of each frag-needed/packet-too-big (tcpdump)",
               icmp_mtu)

        def pmtu(v=v, report=report) -> str:
            f = one_flow(report, udp_to(sc.dport), f"udp/{sc.dport}")
            pm = f.get("pmtu")
            expect(isinstance(pm, dict), f"flow has no pmtu object: pmtu={pm!r}; lost {f.get('lost')}")
            got = {k: pm.get(k) for k in want_pmtu}
            expect(got == want_pmtu, f"pmtu {got}, want {want_pmtu}")
            return str(got)
        checks(f"{sc.tag} {v.label}: the flow's pmtu object (frag_needed {frag_needed})", pmtu)

        if sc.v6:
            continue

        def text(v=v) -> str:
            t = report_text(hoptrace, v.db)
            lost, passed = want_pmtu["lost_min_size"], want_pmtu["passed_max_size"]
            phrases = [f"packets up to {passed} bytes pass"]
            if sc.key in ("A", "B"):
                phrases.insert(0, f"{lost}-byte DF packets lost after {v.name('bridge')}")
            if sc.key == "A":
                phrases.append(f"frag-needed (MTU {LOW_MTU}) came back from {want_reporter}")
            elif sc.key == "B":
                phrases.append("no frag-needed came back: a PMTU black hole")
            else:
                phrases.append(f"frag-needed arrived on {v.name('uplink')} but was dropped in the host")
            flat = " ".join(t.split())
            missing = [ph for ph in phrases if ph not in flat]
            near = [ln.strip() for ln in t.splitlines() if "DF" in ln or "frag" in ln or "MTU" in ln or "PMTU" in ln]
            expect(not missing, f"text report lacks {missing}; lines about it: {short(' | '.join(near) or '(none)')}")
            return " … ".join(phrases)
        checks(f"{sc.tag} {v.label}: the text report says it in words", text)


SCENARIOS_V4 = (Scenario("A", "frag-needed returned from the host", 9131),
                Scenario("B", "frag-needed dropped at its source: a black hole", 9132),
                Scenario("C", "the router's frag-needed dropped in the host", 9133))
SCENARIOS_V6 = (Scenario("D", "IPv6 packet too big returned from the host", 9134, v6=True),
                Scenario("E", "IPv6: the router's packet too big dropped in the host", 9135, v6=True))


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(175)
    only = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--case=")]
    checks = Checks()
    prefixes: list[str] = []
    with workdir("hoptrace-trust-pmtu-") as tmp:
        if not only or set(only) & {"A", "B", "C"}:
            with lablib.Lab() as lab:
                prefixes.append(lab.prefix)
                for sc in SCENARIOS_V4:
                    if not only or sc.key in only:
                        t0 = time.monotonic()
                        guarded(checks, f"{sc.tag} ran to its end", run_scenario, checks, hoptrace, lab, tmp, sc)
                        print(f"  ({sc.tag}: {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        if not only or set(only) & {"D", "E"}:
            def v6() -> None:
                with lablib.Lab(ipv6="nat") as lab6:
                    prefixes.append(lab6.prefix)
                    for sc in SCENARIOS_V6:
                        if not only or sc.key in only:
                            t0 = time.monotonic()
                            guarded(checks, f"{sc.tag} ran to its end", run_scenario, checks, hoptrace, lab6, tmp, sc)
                            print(f"  ({sc.tag}: {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
            guarded(checks, "IPv6 lab (Lab(ipv6='nat'))", v6)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"none of {', '.join(p + '-*' for p in prefixes)}")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
