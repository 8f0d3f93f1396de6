#!/usr/bin/env python3
"""End-to-end test of the lab itself (examples/lab.sh + tests/e2e/lablib.py), without hoptrace.

A default lab (IPv4 only, nothing published), a second one with `--publish 8080:80 --publish
5300:53/udp --ipv6` and a third with `--ipv6=routed --usernet`, checked against iptables-save,
ip6tables-save, ip, tcpdump/tshark and conntrack inside the labs' namespaces; lab.sh's usage errors.

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
from typing import Sequence

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


def lab_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """lab.sh ARGS; env: variables added to (or, with None values, removed from) this environment."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([str(lablib.LAB_SH), *args], capture_output=True, text=True, timeout=120, env=full)


LABLIB_PY = str(Path(lablib.__file__).resolve())
# lab.sh's variables unset, so that only the arguments count.
LAB_VARS = {"HOPTRACE_LAB_PUBLISH": None, "HOPTRACE_LAB_IPV6": None, "HOPTRACE_LAB_USERNET": None}
PUBLISH = ["8080:80", "5300:53/udp"]


def check_defaults(lab: lablib.Lab) -> str:
    """Without --publish and --ipv6 the lab is what it was: IPv6 off, no DOCKER chains."""
    expect(lab.ipv6 == "" and lab.ip6 == {} and lab.published == [],
           f"ipv6 {lab.ipv6!r}, ip6 {lab.ip6}, published {lab.published}")
    for ns in ("c1", "host", "server"):
        off = lab.run(ns, "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6").stdout.strip()
        expect(off == "1", f"{ns}: net.ipv6.conf.all.disable_ipv6 = {off}")
        addrs = lab.run(ns, "ip", "-6", "-o", "addr").stdout
        expect(addrs.strip() == "", f"{ns} has IPv6 addresses: {addrs}")
    saved = lab.run("host", "iptables-save").stdout
    expect("DOCKER" not in saved and "DNAT" not in saved, f"host iptables-save: {saved}")
    return "IPv6 disabled in every namespace, no DOCKER chain, no DNAT"


def tcp_to_c1(lab: lablib.Lab, client: str, dest: str, port: int, nbytes: int, c1_port: int) -> int:
    """A client in namespace `client` uploads nbytes to dest:port; returns what a listener on c1's
    c1_port received (IPv4 and IPv6)."""
    # Into a file: a pipe nobody reads yet would stop socat after 64 KiB, and with it the upload.
    with tempfile.TemporaryFile() as received:
        listener = lab.popen("c1", "socat", "-u", f"TCP6-LISTEN:{c1_port},reuseaddr,ipv6only=0", "STDOUT",
                             stdin=subprocess.DEVNULL, stdout=received, stderr=subprocess.DEVNULL)
        try:
            lab.wait_listening("c1", "tcp", c1_port)
            lab.run(client, sys.executable, LABLIB_PY, "_tcp-client", dest, port, nbytes, timeout=30)
            listener.wait(10)
            return received.seek(0, os.SEEK_END)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()


def check_published_rules(lab: lablib.Lab) -> str:
    c1, br = lab.ip["c1"], lab.ifname["bridge"]
    expect(lab.published == [lablib.PublishedPort(8080, 80, "tcp"), lablib.PublishedPort(5300, 53, "udp")],
           f"lab.published {lab.published}")
    nat = lab.run("host", "iptables-save", "-t", "nat").stdout.splitlines()
    filt = lab.run("host", "iptables-save", "-t", "filter").stdout.splitlines()
    want_nat = [":DOCKER - [0:0]",
                "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
                f"-A POSTROUTING -s {c1}/32 -d {c1}/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
                f"-A POSTROUTING -s {c1}/32 -d {c1}/32 -p udp -m udp --dport 53 -j MASQUERADE",
                f"-A DOCKER -i {br} -j RETURN",
                f"-A DOCKER ! -i {br} -p tcp -m tcp --dport 8080 -j DNAT --to-destination {c1}:80",
                f"-A DOCKER ! -i {br} -p udp -m udp --dport 5300 -j DNAT --to-destination {c1}:53"]
    want_filter = [":DOCKER - [0:0]",
                   f"-A FORWARD -o {br} -j DOCKER",
                   f"-A DOCKER -d {c1}/32 ! -i {br} -o {br} -p tcp -m tcp --dport 80 -j ACCEPT",
                   f"-A DOCKER -d {c1}/32 ! -i {br} -o {br} -p udp -m udp --dport 53 -j ACCEPT"]
    missing = [r for r in want_nat if r not in nat] + [r for r in want_filter if r not in filt]
    expect(not missing, f"missing {missing}; nat: {' | '.join(nat)}; filter: {' | '.join(filt)}")
    return f"{len(want_nat) - 1} nat and {len(want_filter) - 1} filter rules, as Docker's -p installs them"


def check_published_tcp(lab: lablib.Lab) -> str:
    host = lab.ip["host"]
    lab.flush_conntrack()
    got = tcp_to_c1(lab, "server", host, 8080, 100000, 80)
    expect(got == 100000, f"c1:80 received {got} of 100000 bytes")
    ct = [e for e in lab.conntrack() if e.proto == "tcp" and e.original.dport == 8080]
    expect(len(ct) == 1, f"conntrack: {[e.raw for e in lab.conntrack()]}")
    e = ct[0]
    expect((e.original.src, e.original.dst) == (lab.ip["server"], host), f"original tuple: {e.raw}")
    expect((e.reply.src, e.reply.sport) == (lab.ip["c1"], 80), f"reply tuple: {e.raw}")
    counters = lab.run("host", "iptables", "-L", "DOCKER", "-v", "-n", "-x").stdout
    accepted = [line for line in counters.splitlines() if "ACCEPT" in line and "dpt:80" in line]
    expect(accepted and int(accepted[0].split()[0]) > 0, f"FORWARD accept counters: {counters}")
    return (f"{got} bytes from {lab.ip['server']} via {host}:8080 to {lab.ip['c1']}:80; conntrack "
            f"{e.original.dst}:{e.original.dport} ⇄ {e.reply.src}:{e.reply.sport}; FORWARD accept "
            f"counted {accepted[0].split()[0]} packets")


def check_published_udp(lab: lablib.Lab) -> str:
    echo = lab.popen("c1", "socat", "-T", "2", "UDP-RECVFROM:53,fork,reuseaddr", "PIPE",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("c1", "udp", 53)
        payloads = [f"published udp {i}\n".encode().hex() for i in range(3)]
        out = lab.run("server", sys.executable, LABLIB_PY, "_udp-client", lab.ip["host"],
                      5300, 41000, 0.05, *payloads).stdout.split()
    finally:
        echo.terminate()
        echo.wait(5)
    expect(out == ["ok"] * 3, f"udp client: {out}")
    ct = [e for e in lab.conntrack() if e.proto == "udp" and e.original.dport == 5300]
    expect(len(ct) == 1 and (ct[0].reply.src, ct[0].reply.sport) == (lab.ip["c1"], 53),
           f"conntrack: {[e.raw for e in ct]}")
    return f"3/3 datagrams echoed by c1:53 through {lab.ip['host']}:5300"


def check_published_local(lab: lablib.Lab) -> str:
    got = tcp_to_c1(lab, "host", lab.ip["host"], 8080, 5000, 80)
    expect(got == 5000, f"c1:80 received {got} of 5000 bytes")
    return f"the host's own connection to {lab.ip['host']}:8080 reached c1:80 (nat OUTPUT)"


def check_published_not_from_containers(lab: lablib.Lab) -> str:
    # c1 listens, so a DNAT would not be refused (c1's answer would bypass the host and be reset).
    listener = lab.popen("c1", "socat", "-u", "TCP-LISTEN:80,reuseaddr", "/dev/null", stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("c1", "tcp", 80)
        r = lab.run("c2", sys.executable, LABLIB_PY, "_tcp-client", lab.ip["host"], 8080, 10,
                    check=False, timeout=30)
        expect(r.returncode != 0 and "Connection refused" in r.stderr, f"rc {r.returncode}: {r.stderr.strip()}")
        expect(listener.poll() is None, "c1's listener got a connection")
    finally:
        listener.kill()
        listener.wait()
    return "c2 → host:8080 refused by the host (Docker's RETURN: docker-proxy's job, and the lab has none)"


def check_ipv6_addresses(lab: lablib.Lab) -> str:
    e = lab.env
    where = (("c1", "eth0", "c1"), ("c2", "eth0", "c2"), ("host", lab.ifname["bridge"], "bridge"),
             ("host", lab.ifname["uplink"], "host"), ("router", e["ROUTER_UPLINK"], "router"),
             ("router", e["ROUTER_DOWNLINK"], "router_server"), ("server", e["SERVER_IF"], "server"))
    for ns, dev, role in where:
        out = lab.run(ns, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global").stdout
        expect(f" {lab.ip6[role]}/64 " in out and "tentative" not in out, f"{ns} {dev}: {out.strip()!r}")
    for ns, gw in (("c1", "bridge"), ("c2", "bridge"), ("host", "router"), ("server", "router_server")):
        route = lab.run(ns, "ip", "-6", "route", "show", "default").stdout
        expect(f"via {lab.ip6[gw]} " in route, f"{ns} default route {route.strip()!r}")
    return ", ".join(f"{ns} {dev} {lab.ip6[role]}/64" for ns, dev, role in where)


def ping6_sources(lab: lablib.Lab, path: Path, containers: Sequence[str]) -> tuple[dict, set[str]]:
    """Each container pings the server's IPv6 address 3 times; returns the ping results and the
    source addresses of the echo requests seen on the server's eth0 (tshark)."""
    results = {}
    with lablib.Tcpdump(lab.ns["server"], lab.ifname["server"], path, filter="icmp6"):
        for c in containers:
            results[c] = lab.run(c, "ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", lab.ip6["server"],
                                 check=False)
    rows = lablib.tshark_fields(path, ["ipv6.src"], "icmpv6.type == 128")
    return results, {r[0] for r in rows}


def check_ipv6_masquerade(lab: lablib.Lab, tmp: Path) -> str:
    nat = lab.run("host", "ip6tables-save", "-t", "nat").stdout.splitlines()
    rule = f"-A POSTROUTING -s {lab.env['BRIDGE_SUBNET6']} ! -o {lab.ifname['bridge']} -j MASQUERADE"
    if rule not in nat:
        # --ipv6 (auto) falls back to routed IPv6 where the kernel has no ip6 nat; say so in the map.
        expect("IPv6 (routed)" in lab.map, f"no '{rule}' in ip6tables-save and the map says: {lab.map}")
        return "no ip6 nat in this kernel: the lab is routed (as its map says)"
    c1, br = lab.ip6["c1"], lab.ifname["bridge"]
    for want in (f"-A DOCKER ! -i {br} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [{c1}]:80",
                 f"-A DOCKER ! -i {br} -p udp -m udp --dport 5300 -j DNAT --to-destination [{c1}]:53"):
        expect(want in nat, f"no '{want}' in ip6tables-save: {' | '.join(nat)}")
    pings, sources = ping6_sources(lab, tmp / "lab2-server6.pcap", ["c1"])
    expect(pings["c1"].returncode == 0 and " 0% packet loss" in pings["c1"].stdout, pings["c1"].stdout)
    expect(sources == {lab.ip6["host"]}, f"the server saw echo requests from {sources}")
    return f"ip6tables MASQUERADE and DNAT; c1's ping6 answered 3/3, the server saw {lab.ip6['host']}"


def check_ipv6_published(lab: lablib.Lab) -> str:
    if "IPv6 (masquerade)" not in lab.map:
        return "skipped: routed IPv6 here (no ip6 nat), published ports are IPv4 only then"
    got = tcp_to_c1(lab, "server", lab.ip6["host"], 8080, 20000, 80)
    expect(got == 20000, f"c1:80 received {got} of 20000 bytes")
    return f"{got} bytes from {lab.ip6['server']} via [{lab.ip6['host']}]:8080 to [{lab.ip6['c1']}]:80"


def check_ipv6_routed(lab: lablib.Lab, tmp: Path) -> str:
    expect(lab.ipv6 == "routed" and "c3" in lab.ip6, f"ipv6 {lab.ipv6!r}, ip6 {lab.ip6}")
    nat = lab.run("host", "ip6tables-save", "-t", "nat").stdout
    expect("MASQUERADE" not in nat, f"routed, yet ip6tables-save: {nat}")
    routes = lab.run("router", "ip", "-6", "route").stdout
    for subnet in (lab.env["BRIDGE_SUBNET6"], lab.env["USERNET_SUBNET6"]):
        expect(f"{subnet} via {lab.ip6['host']} " in routes, f"router has no {subnet} via the host: {routes}")
    pings, sources = ping6_sources(lab, tmp / "lab3-server6.pcap", ["c1", "c3"])
    for c, r in pings.items():
        expect(r.returncode == 0 and " 0% packet loss" in r.stdout, f"{c}: {r.stdout}")
    expect(sources == {lab.ip6["c1"], lab.ip6["c3"]}, f"the server saw echo requests from {sources}")
    return f"no masquerade, router routes to both prefixes; the server saw {' and '.join(sorted(sources))}"


def check_env_output() -> str:
    r = lab_sh("env", "htenv", "--publish", "8080:80", "--publish=53/udp", "--ipv6", env=LAB_VARS)
    expect(r.returncode == 0, r.stderr)
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    expect(env["PUBLISHED_PORTS"] == "8080:80/tcp,53:53/udp" and env["IPV6"] == "auto",
           f"PUBLISHED_PORTS={env['PUBLISHED_PORTS']} IPV6={env['IPV6']}")
    for key in ("HOST_IP6", "C1_IP6", "C2_IP6", "SERVER_IP6", "BRIDGE_IP6", "ROUTER_IP6", "C3_IP6"):
        expect(key in env, f"no {key} in lab.sh env")
    r = lab_sh("env", "htenv", env={**LAB_VARS, "HOPTRACE_LAB_PUBLISH": "8080:80, 9090/udp",
                                    "HOPTRACE_LAB_IPV6": "routed"})
    env2 = dict(line.split("=", 1) for line in r.stdout.splitlines())
    expect((env2["PUBLISHED_PORTS"], env2["IPV6"]) == ("8080:80/tcp,9090:9090/udp", "routed"),
           f"from the variables: {env2['PUBLISHED_PORTS']} {env2['IPV6']}")
    r = lab_sh("env", "htenv", "--publish", "1:2", "--ipv6=nat", env={**LAB_VARS, "HOPTRACE_LAB_PUBLISH": "8080:80",
                                                                     "HOPTRACE_LAB_IPV6": "routed"})
    env3 = dict(line.split("=", 1) for line in r.stdout.splitlines())
    expect((env3["PUBLISHED_PORTS"], env3["IPV6"]) == ("1:2/tcp", "nat"), f"options over variables: {env3}")
    return (f"PUBLISHED_PORTS={env['PUBLISHED_PORTS']} IPV6={env['IPV6']} HOST_IP6={env['HOST_IP6']}; "
            "the variables work, options win over them")


USAGE_ERRORS = [(["--publish"], {}), (["--publish", "0:80"], {}), (["--publish", "80:65536"], {}),
                (["--publish", "8080:80/sctp"], {}), (["--publish", "http"], {}),
                (["--publish", "8080:80", "--publish", "8080:81"], {}), (["--ipv6=yes"], {}), (["--frobnicate"], {}),
                ([], {"HOPTRACE_LAB_IPV6": "yes"}), ([], {"HOPTRACE_LAB_PUBLISH": "8080:80:90"})]


def check_usage_errors() -> str:
    prefix = "ht" + os.urandom(3).hex()
    lines = []
    for args, env in USAGE_ERRORS:
        r = lab_sh("up", prefix, *args, env={**LAB_VARS, **env})
        what = " ".join(args + [f"{k}={v}" for k, v in env.items()])
        expect(r.returncode == 2, f"{what}: exit {r.returncode}, want 2: {r.stderr.strip()}")
        err = r.stderr.strip().splitlines()
        expect(len(err) == 1 and err[0].startswith("lab.sh: "), f"{what}: stderr {err}")
        lines.append(err[0])
    left = {n for n in netns_list() if n.startswith(prefix + "-")}
    expect(not left, f"a rejected up made namespaces: {sorted(left)}")
    return f"{len(USAGE_ERRORS)} bad arguments, each exit 2 with one line, e.g. {lines[1]!r}"


def check_status(lab: lablib.Lab) -> str:
    r = lab_sh("status", lab.prefix)
    expect(r.returncode == 0, r.stderr)
    for want in (lab.ip6["c1"], lab.ip6["host"], lab.ip6["server"], "-- nat6", "-- filter",
                 f"--dport 8080 -j DNAT --to-destination {lab.ip['c1']}:80",
                 f"default via {lab.ip6['router']}"):
        expect(want in r.stdout, f"no {want!r} in lab.sh status")
    return "addresses, IPv6 routes, nat/nat6 and filter rules shown"


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
        check("without --publish/--ipv6: no IPv6, no DOCKER chains", lambda: check_defaults(lab))

        # --- a second lab next to the first, with published ports and IPv6
        with lablib.Lab(publish=PUBLISH, ipv6=True) as lab2:
            prefixes.append(lab2.prefix)

            def two_labs() -> str:
                expect(lab2.prefix != lab.prefix, "same prefix twice")
                expect(set(lab.ns.values()) | set(lab2.ns.values()) <= netns_list(), "namespaces missing")
                p = lablib.ping_both(lab2, count=2, interval=0.2)
                q = lablib.ping_both(lab, count=2, interval=0.2)
                expect(all(r.received == 2 for r in (*p.values(), *q.values())), "pings failed in a lab")
                return f"{lab.prefix} and {lab2.prefix} both up and answering"
            check("two labs at once", two_labs)

            check("--publish: Docker's nat and filter rules (iptables-save)", lambda: check_published_rules(lab2))
            check("--publish: TCP from the server to HOST_IP:8080 reaches c1:80", lambda: check_published_tcp(lab2))
            check("--publish: UDP from the server to HOST_IP:5300 reaches c1:53", lambda: check_published_udp(lab2))
            check("--publish: the host's own connection is DNATed too", lambda: check_published_local(lab2))
            check("--publish: containers are not DNATed", lambda: check_published_not_from_containers(lab2))
            check("--ipv6: addresses and default routes (ip -6)", lambda: check_ipv6_addresses(lab2))
            check("--ipv6: ip6tables MASQUERADE, ping6 c1 → server masqueraded",
                  lambda: check_ipv6_masquerade(lab2, tmp))
            check("--ipv6 --publish: TCP from the server to [HOST_IP6]:8080 reaches c1:80",
                  lambda: check_ipv6_published(lab2))
            check("status shows IPv6 and published ports", lambda: check_status(lab2))

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

        # --- routed IPv6 (Docker without ip6tables), with the user-defined network
        with lablib.Lab(ipv6="routed", usernet=True) as lab3:
            prefixes.append(lab3.prefix)
            check("--ipv6=routed: no masquerade, c1 and c3 reach the server with their own addresses",
                  lambda: check_ipv6_routed(lab3, tmp))

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
    check("lab.sh env: IPv6 addresses, PUBLISHED_PORTS, options and variables", check_env_output)
    check("usage errors: one line, exit 2, nothing built", check_usage_errors)

    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
