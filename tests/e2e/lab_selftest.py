#!/usr/bin/env python3
"""End-to-end test of the lab itself (examples/lab.sh + tests/e2e/lablib.py), without hoptrace.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). Prints one line per check and, last, exactly "N passed, M failed".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402

results: list[bool] = []


def check(name: str, fn) -> object:
    """Runs one check; fn returns a detail string (or value) or raises."""
    try:
        detail = fn()
        print(f"PASS {name}" + (f": {detail}" if detail else ""), flush=True)
        results.append(True)
        return detail
    except Exception as e:  # noqa: BLE001 - a failed check is reported, the rest still run
        msg = str(e).strip().replace("\n", " | ") or type(e).__name__
        print(f"FAIL {name}: {msg}", flush=True)
        if os.environ.get("HOPTRACE_TEST_VERBOSE"):
            traceback.print_exc()
        results.append(False)
        return None


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def lab_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(lablib.LAB_SH), *args], capture_output=True, text=True, timeout=120)


def check_topology(lab: lablib.Lab) -> str:
    expect(set(lab.ns.values()) <= netns_list(), "a namespace is missing")
    for c in ("c1", "c2"):
        veth = lab.veth[c]
        expect(len(veth) <= 15 and veth.startswith("veth"), f"bad veth name {veth}")
        link = lab.run("host", "ip", "-o", "link", "show", "dev", veth).stdout
        expect("master docker0" in link and "UP" in link, f"{veth} not an up port of docker0: {link}")
        eth0 = lab.run(c, "ip", "-o", "link", "show", "dev", "eth0").stdout
        expect(lab.mac[c] in eth0, f"{c} eth0 has no MAC {lab.mac[c]}: {eth0}")
        # The container's eth0 is the veth's peer: eth0@ifN with N the veth's ifindex.
        expect(f"eth0@if{lab.ifindex('host', veth)}:" in eth0, f"{c} eth0 is not the peer of {veth}")
        route = lab.run(c, "ip", "route", "show", "default").stdout
        expect("via 172.17.0.1" in route, f"{c} default route: {route}")
    nat = lab.run("host", "iptables", "-t", "nat", "-S", "POSTROUTING").stdout
    expect("-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in nat, f"no MASQUERADE rule: {nat}")
    routes = lab.run("router", "ip", "route").stdout
    expect("172.17" not in routes and "default" not in routes, f"router has extra routes: {routes}")
    return f"prefix {lab.prefix}, veths {lab.veth['c1']} {lab.veth['c2']}"


def main() -> int:
    lablib.require_root_or_skip()
    lablib.arm_watchdog(float(os.environ.get("HOPTRACE_SELFTEST_DEADLINE_S", "170")))
    with tempfile.TemporaryDirectory(prefix="hoptrace-labtest-") as tmpdir:
        return run_checks(Path(tmpdir))


def run_checks(tmp: Path) -> int:
    prefixes: list[str] = []

    with lablib.Lab() as lab:
        prefixes.append(lab.prefix)
        check("topology", lambda: check_topology(lab))

        r = lab_sh("up", lab.prefix)
        check("up on an existing lab refuses",
              lambda: expect(r.returncode != 0 and "already exists" in r.stderr, f"rc {r.returncode}: {r.stderr}")
              or r.stderr.strip())

        # --- ping with the same id from both containers, captured at four places
        caps = [lablib.Tcpdump(lab.ns["c1"], "eth0", tmp / "c1-eth0.pcap"),
                lablib.Tcpdump(lab.ns["c2"], "eth0", tmp / "c2-eth0.pcap"),
                lablib.Tcpdump(lab.ns["host"], "eth0", tmp / "uplink.pcap"),
                lablib.tcpdump_any(lab.ns["host"], tmp / "host-any.pcap"),
                lablib.Tcpdump(lab.ns["server"], "eth0", tmp / "server.pcap")]
        try:
            pings = lablib.ping_both(lab)
        finally:
            lablib.stop_all(caps)
        for c in ("c1", "c2"):
            p = pings[c]
            check(f"{c} pings the server",
                  lambda p=p: expect(p.received == p.transmitted == lablib.PING_COUNT, p.output)
                  or f"{p.received}/{p.transmitted} replies")

        fields = ["frame.time_epoch", "ip.src", "ip.dst", "icmp.type", "icmp.ident", "icmp.seq"]
        server_rows = lablib.tshark_fields(tmp / "server.pcap", fields, "icmp.type == 8")
        check("server sees the masqueraded source",
              lambda: expect(len(server_rows) == 2 * lablib.PING_COUNT
                             and {r[1] for r in server_rows} == {lab.ip["host"]},
                             f"echo request sources at the server: {sorted({r[1] for r in server_rows})}, "
                             f"{len(server_rows)} requests")
              or f"{len(server_rows)} echo requests, all from {lab.ip['host']}")

        def container_ids() -> str:
            for c in ("c1", "c2"):
                rows = lablib.tshark_fields(tmp / f"{c}-eth0.pcap", fields, "icmp.type == 8")
                ids = {int(r[4]) for r in rows}
                expect(ids == {lablib.PING_IDENT}, f"{c} sent ids {ids}, wanted {lablib.PING_IDENT} (ping -e)")
            return f"both containers sent id {lablib.PING_IDENT}"
        check("ping -e sets the ICMP id", container_ids)

        icmp = [e for e in lab.conntrack() if e.proto == "icmp"]

        def conntrack_icmp() -> str:
            by_src = {e.original.src: e for e in icmp}
            expect(set(by_src) == {lab.ip["c1"], lab.ip["c2"]}, f"icmp flows from {sorted(by_src)}")
            e1, e2 = by_src[lab.ip["c1"]], by_src[lab.ip["c2"]]
            expect(e1.original.id == e2.original.id == lablib.PING_IDENT, "original ids differ from 7777")
            expect(e1.reply.dst == e2.reply.dst == lab.ip["host"], "reply tuples not to the host address")
            expect(e1.reply.id != e2.reply.id, f"both flows keep id {e1.reply.id}: no rewrite")
            # c1 started first and keeps its id; c2's is rewritten. Record what the kernel did.
            expect(e1.reply.id == lablib.PING_IDENT, f"c1's id rewritten to {e1.reply.id}")
            uplink_ids = {int(r[4]) for r in lablib.tshark_fields(tmp / "uplink.pcap", fields, "icmp.type == 8")}
            expect(uplink_ids == {e1.reply.id, e2.reply.id}, f"uplink ids {uplink_ids} vs conntrack")
            return f"c1 id {e1.original.id} -> {e1.reply.id}, c2 id {e2.original.id} -> {e2.reply.id}"
        check("conntrack: the second container's ICMP id is rewritten", conntrack_icmp)

        def timestamps() -> str:
            magic = (tmp / "uplink.pcap").read_bytes()[:4]
            expect(magic == bytes.fromhex("4d3cb2a1"), f"pcap magic {magic.hex()}: not nanosecond")
            t_c1 = lablib.tshark_fields(tmp / "c1-eth0.pcap", fields, "icmp.type == 8 && icmp.seq == 1")
            t_up = lablib.tshark_fields(tmp / "uplink.pcap", fields, f"icmp.type == 8 && icmp.seq == 1 && "
                                        f"icmp.ident == {lablib.PING_IDENT}")
            t_srv = lablib.tshark_fields(tmp / "server.pcap", fields, f"icmp.type == 8 && icmp.seq == 1 && "
                                         f"icmp.ident == {lablib.PING_IDENT}")
            expect(len(t_c1) == len(t_up) == len(t_srv) == 1, "seq 1 not seen once at each point")
            frac = t_c1[0][0].split(".")[1]
            expect(len(frac) == 9, f"tshark prints {t_c1[0][0]}: not 9 decimals")
            ns = [int(t[0][0].replace(".", "")) for t in (t_c1, t_up, t_srv)]
            expect(ns[0] < ns[1] < ns[2], f"not increasing across namespaces: {ns}")
            return f"c1 eth0 -> uplink {ns[1] - ns[0]} ns, uplink -> server {ns[2] - ns[1]} ns"
        check("nanosecond timestamps, one clock across namespaces", timestamps)

        def host_any() -> str:
            links = lab.links("host")
            names = {int(l.split(":")[0]): l.split(":")[1].strip().split("@")[0] for l in links.splitlines()}
            rows = lablib.tshark_fields(tmp / "host-any.pcap", ["sll.ifindex", "ip.src"], "icmp.type == 8")
            seen = sorted({names.get(int(r[0]), r[0]) for r in rows})
            want = sorted([lab.veth["c1"], lab.veth["c2"], "docker0", "eth0"])
            expect(seen == want, f"-i any saw {seen}, want {want}")
            expect(len(rows) == 3 * 2 * lablib.PING_COUNT, f"{len(rows)} echo requests, want 30")
            return "requests seen on " + " ".join(seen)
        check("tcpdump -i any -y LINUX_SLL2: ifindexes map to host links", host_any)

        # --- UDP from the same source port, then TCP
        lab.flush_conntrack()
        udp = lablib.udp_both(lab)
        for c in ("c1", "c2"):
            u = udp[c]
            check(f"udp echo from {c}", lambda u=u: expect(all(u.echoed), f"echoed {u.echoed}")
                  or f"{len(u.sent)}/{len(u.sent)} echoed")

        def conntrack_udp() -> str:
            flows = {e.original.src: e for e in lab.conntrack() if e.proto == "udp"}
            expect(set(flows) == {lab.ip["c1"], lab.ip["c2"]}, f"udp flows from {sorted(flows)}")
            e1, e2 = flows[lab.ip["c1"]], flows[lab.ip["c2"]]
            expect(e1.original.sport == e2.original.sport == lablib.UDP_SPORT, "original sports")
            expect(e1.translated().sport == lablib.UDP_SPORT, f"c1's port rewritten to {e1.translated().sport}")
            expect(e2.translated().sport != lablib.UDP_SPORT, "c2's port not rewritten")
            return (f"c1 sport {e1.original.sport} -> {e1.translated().sport}, "
                    f"c2 sport {e2.original.sport} -> {e2.translated().sport}")
        check("conntrack: the second container's UDP port is rewritten", conntrack_udp)

        def tcp() -> str:
            got = lablib.tcp_upload(lab, 1)
            expect(got == 1 << 20, f"server received {got} bytes")
            return f"{got} bytes"
        check("tcp upload of 1 MiB", tcp)

        # --- a second lab next to the first
        with lablib.Lab() as lab2:
            prefixes.append(lab2.prefix)

            def two_labs() -> str:
                expect(lab2.prefix != lab.prefix, "same prefix twice")
                expect(set(lab.ns.values()) | set(lab2.ns.values()) <= netns_list(), "namespaces missing")
                p = lablib.ping_both(lab2, count=2, interval=0.2)
                q = lablib.ping_both(lab, count=2, interval=0.2)
                expect(all(r.received == 2 for r in (*p.values(), *q.values())), "pings failed in a lab")
                return f"{lab.prefix} and {lab2.prefix} both up and answering"
            check("two labs at once", two_labs)

            def no_masquerade() -> str:
                lab2.run("host", "iptables", "-t", "nat", "-F", "POSTROUTING")
                lab2.flush_conntrack()
                with lablib.Tcpdump(lab2.ns["server"], "eth0", tmp / "lab2-server.pcap") as cap:
                    r = lab2.run("c1", "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", lab2.ip["server"],
                                 check=False)
                srcs = {row[0] for row in lablib.tshark_fields(cap.path, ["ip.src"], "icmp.type == 8")}
                expect(r.returncode != 0, "ping succeeded without MASQUERADE")
                expect(srcs == {lab2.ip["c1"]}, f"server saw sources {srcs}")
                return f"server saw {lab2.ip['c1']} unmasqueraded, replies unroutable"
            check("without MASQUERADE the router cannot route replies", no_masquerade)

    def all_gone() -> str:
        left = {n for n in netns_list() if any(n.startswith(p + "-") for p in prefixes)}
        expect(not left, f"left behind: {sorted(left)}")
        r = lab_sh("down", prefixes[0])
        expect(r.returncode == 0, f"second down failed: {r.stderr}")
        return f"no namespace of {' '.join(prefixes)} left; a second down is fine"
    check("down leaves nothing behind", all_gone)

    def reap() -> str:
        prefix = "ht" + os.urandom(3).hex()
        r = lab_sh("up", prefix)
        expect(r.returncode == 0, r.stderr)
        lablib.OWNER_DIR.mkdir(exist_ok=True)
        (lablib.OWNER_DIR / prefix).write_text("999999999 0\n")  # an owner that does not exist
        reaped = lablib.reap_stale_labs()
        left = {n for n in netns_list() if n.startswith(prefix + "-")}
        if left:
            lab_sh("down", prefix)
        expect(prefix in reaped and not left, f"reaped {reaped}, left {sorted(left)}")
        return f"stale lab {prefix} removed"
    check("labs of a killed run are reaped", reap)

    r = lab_sh("up", "Bad_Prefix")
    check("bad prefix rejected", lambda: expect(r.returncode != 0 and "bad prefix" in r.stderr, r.stderr)
          or r.stderr.strip())

    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
