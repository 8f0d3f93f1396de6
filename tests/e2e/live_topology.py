#!/usr/bin/env python3
"""End-to-end test of `hoptrace topology` in the lab (examples/lab.sh up --usernet).

hoptrace discovers each container's path with netlink; the test compares it with what the lab
built (lab.sh env: names, MACs, addresses) and with `ip -o link` of the namespaces (ifindex,
veth peer index, bridge master), parsed independently here:
  c1 and c2: eth0 (container) -> their veth -> docker0 (bridge) -> eth0 (uplink), MASQUERADE;
  c3 on the user-defined network: eth0 -> its veth -> br-<12 hex> -> eth0;
  --dest, --point NS:IF=NAME, --pid, several targets, text mode, a host without masquerade, and a
  --point on a tun device (raw IP: the stored link type and the export must say so, tshark reads it).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import Checks, expect, expected_points, netns_left, run, short  # noqa: E402

LINK_RE = re.compile(r"^(\d+):\s+([^:@\s]+)(?:@if(\d+)|@NONE)?:\s.*?link/\S+\s+([0-9a-f:]{17})?")


def ip_links(ns: str) -> dict[str, dict]:
    """`ip -n NS -o link` as {ifname: {ifindex, peer, master, mac, up}}; master is a name."""
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = {}
    for line in out.splitlines():
        m = LINK_RE.match(line)
        if not m:
            continue
        master = re.search(r"\smaster (\S+)\s", line)
        flags = re.search(r"<([^>]*)>", line)
        links[m.group(2)] = {"ifindex": int(m.group(1)), "peer": int(m.group(3)) if m.group(3) else 0,
                             "master": master.group(1) if master else None, "mac": m.group(4),
                             "up": bool(flags and "UP" in flags.group(1).split(","))}
    return links


def ip_addrs(ns: str, ifname: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", ifname], capture_output=True,
                         text=True, check=True).stdout
    return re.findall(r"inet (\S+)", out)


def topology(hoptrace: Path, *args) -> dict:
    r = run(hoptrace, "topology", *args, "--json", timeout=30)
    expect(r.returncode == 0, f"hoptrace topology {' '.join(map(str, args))} exited {r.returncode}: "
                              f"{short(r.stderr)}")
    return json.loads(r.stdout)


def check_path(lab: lablib.Lab, topo: dict, containers: tuple[str, ...], rename: dict[str, str] | None = None,
               labels: dict[str, str] | None = None) -> str:
    """The JSON's points are the containers' paths, each field as `ip` and the lab say."""
    rename = rename or {}
    labels = labels or {}
    host = lab.ns["host"]
    host_links = ip_links(host)
    want = expected_points(lab, containers)
    got_names = [p["name"] for p in topo["points"]]
    want_names = [rename.get(n, n) for n, *_ in want]
    for c, label in labels.items():  # --pid targets are named "pid<PID>:eth0"
        want_names = [f"{label}:eth0" if n == f"{lab.ns[c]}:eth0" else n for n in want_names]
    expect(got_names == want_names, f"points {got_names}, want {want_names}")
    for p, (name, role, ns, ifname) in zip(topo["points"], want):
        where = f"point {p['name']}"
        expect(p["role"] == role, f"{where}: role {p['role']}, want {role}")
        expect(p["ifname"] == ifname, f"{where}: ifname {p['ifname']}, want {ifname}")
        expect(p["up"] is True, f"{where}: not up")
        links = host_links if ns == host else ip_links(ns)
        link = links[ifname]
        expect(p["ifindex"] == link["ifindex"], f"{where}: ifindex {p['ifindex']}, ip says {link['ifindex']}")
        expect(p["mac"] == link["mac"], f"{where}: mac {p['mac']}, ip says {link['mac']}")
        expect(sorted(a for a in p["addresses"] if ":" not in a) == sorted(ip_addrs(ns, ifname)),
               f"{where}: addresses {p['addresses']}, ip says {ip_addrs(ns, ifname)}")
        if role == "container":
            c = next(c for c in containers if lab.ns[c] == ns)
            if c in labels:  # --pid PID: the namespace has no name; hoptrace says "pid PID"
                pid = labels[c].removeprefix("pid")
                expect(p["netns"].replace(" ", "") == labels[c], f"{where}: netns {p['netns']!r}, want 'pid {pid}'")
            else:
                expect(p["netns"] == ns, f"{where}: netns {p['netns']}, want {ns}")
            expect(p["mac"] == lab.mac[c], f"{where}: mac {p['mac']}, the lab set {lab.mac[c]}")
            expect(f"{lab.ip[c]}/16" in p["addresses"], f"{where}: addresses {p['addresses']}, want {lab.ip[c]}/16")
            veth = host_links[lab.veth[c]]
            expect(link["peer"] == veth["ifindex"] and p["peer_ifindex"] == veth["ifindex"],
                   f"{where}: peer_ifindex {p['peer_ifindex']}, ip: eth0@if{link['peer']}, "
                   f"{lab.veth[c]} is {veth['ifindex']}")
            expect(p["kind"] == "veth", f"{where}: kind {p['kind']}")
        else:
            expect(p["netns"] == host, f"{where}: netns {p['netns']}, want {host}")
        if role == "veth":
            c = next(c for c in containers if lab.veth[c] == ifname)
            eth0 = ip_links(lab.ns[c])["eth0"]
            expect(p["peer_ifindex"] == eth0["ifindex"] == link["peer"],
                   f"{where}: peer_ifindex {p['peer_ifindex']}, ip: {ifname}@if{link['peer']}, "
                   f"{lab.ns[c]} eth0 is {eth0['ifindex']}")
            bridge = lab.ifname["usernet_bridge"] if c == "c3" else lab.ifname["bridge"]
            expect(link["master"] == bridge, f"ip says {ifname} is a port of {link['master']}, not {bridge}")
            expect(p["master"] == host_links[bridge]["ifindex"],
                   f"{where}: master {p['master']}, {bridge} is ifindex {host_links[bridge]['ifindex']}")
            expect(p["kind"] == "veth", f"{where}: kind {p['kind']}")
        if role == "bridge":
            expect(p["kind"] == "bridge", f"{where}: kind {p['kind']}")
            key = "usernet_bridge" if ifname != lab.ifname["bridge"] else "bridge"
            expect(f"{lab.ip[key]}/16" in p["addresses"], f"{where}: addresses {p['addresses']}")
        if role == "uplink":
            expect(f"{lab.ip['host']}/24" in p["addresses"], f"{where}: addresses {p['addresses']}")
            router_eth0 = ip_links(lab.ns["router"])[lab.ifname["router_uplink"]]
            expect(p["peer_ifindex"] == router_eth0["ifindex"] == link["peer"],
                   f"{where}: peer_ifindex {p['peer_ifindex']}, router's end is {router_eth0['ifindex']}")
    return " → ".join(f"{p['name']}({p['role']}, if{p['ifindex']})" for p in topo["points"])


def check_nat(topo: dict, subnets: set[str], bridges: dict[str, str]) -> str:
    expect(topo["masquerade"] is True, f"masquerade {topo['masquerade']}")
    rules = [n for n in topo["nat"] if n["kind"] == "MASQUERADE" and n["chain"] == "POSTROUTING"]
    want = {f"-A POSTROUTING -s {s} ! -o {bridges[s]} -j MASQUERADE" for s in subnets}
    got = {n["rule"] for n in rules}
    expect(got == want, f"nat rules {sorted(got)}, want {sorted(want)} (only those of the path)")
    return "masquerade, " + "; ".join(sorted(got))


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(110)
    checks = Checks()
    prefixes = []
    with lablib.Lab(usernet=True) as lab:
        prefixes.append(lab.prefix)
        host = lab.ns["host"]
        subnet = {"c1": "172.17.0.0/16", "c2": "172.17.0.0/16", "c3": "172.18.0.0/16"}
        bridges = {"172.17.0.0/16": lab.ifname["bridge"], "172.18.0.0/16": lab.ifname["usernet_bridge"]}

        for c in ("c1", "c2", "c3"):
            topo: dict = {}

            def discover(c=c) -> str:
                topo.update(topology(hoptrace, "--netns", lab.ns[c], "--host-netns", host))
                return check_path(lab, topo, (c,))
            bridge = "br-… (user-defined network)" if c == "c3" else "docker0"
            if checks(f"{c}: eth0 → {lab.veth[c]} → {bridge} → eth0, as ip -o link says", discover) is not None:
                checks(f"{c}: masquerade and its rule", lambda c=c, topo=topo: check_nat(topo, {subnet[c]}, bridges)
                       + ("" if topo["dest"] == "" else f" (dest {topo['dest']!r}?)"))

        def dest() -> str:
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--host-netns", host, "--dest", lab.ip["server"])
            expect(topo["dest"] == lab.ip["server"], f"dest {topo['dest']!r}")
            check_path(lab, topo, ("c1",))
            return f"uplink {topo['points'][-1]['name']} for --dest {lab.ip['server']}, as for the default route"
        checks("--dest 198.51.100.10 gives the same uplink", dest)

        def host_found() -> str:
            # No --host-netns: the host is where c1's veth peer is, the lab's host namespace (ip -o link in it shows
            # the peer), not hoptrace's own; the path is the same one, and stderr says which namespace was taken.
            r = run(hoptrace, "topology", "--netns", lab.ns["c1"], "--dest", lab.ip["server"], "--json", timeout=60)
            expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
            topo = json.loads(r.stdout)
            check_path(lab, topo, ("c1",))
            notes = [line for line in r.stderr.splitlines() if "veth peer" in line]
            expect(len(notes) == 1 and host in notes[0], f"stderr {short(r.stderr)}")
            return notes[0].strip()
        checks("without --host-netns: the host namespace is found from c1's veth peer", host_found)

        def rename() -> str:
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--host-netns", host, "--point", f"{host}:eth0=wan")
            check_path(lab, topo, ("c1",), rename={"eth0": "wan"})
            up = topo["points"][-1]
            expect(up["role"] == "uplink" and up["ifname"] == "eth0", f"renamed point {up}")
            return f"uplink named {up['name']}, still role {up['role']} on {up['ifname']}"
        checks("--point HOST:eth0=wan renames the uplink", rename)

        def extra_point() -> str:
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--host-netns", host, "--point",
                            f"{lab.ns['router']}:{lab.ifname['router_downlink']}=router-eth1")
            names = [p["name"] for p in topo["points"]]
            expect(len(names) == 5 and names[-1] == "router-eth1", f"points {names}")
            extra = topo["points"][-1]
            link = ip_links(lab.ns["router"])[lab.ifname["router_downlink"]]
            expect(extra["role"] == "other" and extra["netns"] == lab.ns["router"]
                   and extra["ifindex"] == link["ifindex"], f"extra point {extra}, ip says {link}")
            return f"{extra['name']} ({extra['role']}, {extra['netns']} if{extra['ifindex']}) added"
        checks("--point ROUTER:eth1=NAME adds a point in another namespace", extra_point)

        def two_targets() -> str:
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--netns", lab.ns["c2"], "--host-netns", host)
            path = check_path(lab, topo, ("c1", "c2"))
            check_nat(topo, {subnet["c1"]}, bridges)
            return f"6 points, docker0 and eth0 once: {path}"
        checks("--netns c1 --netns c2: six points, shared bridge and uplink once", two_targets)

        def three_targets() -> str:
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--netns", lab.ns["c3"], "--host-netns", host)
            check_path(lab, topo, ("c1", "c3"))
            check_nat(topo, {subnet["c1"], subnet["c3"]}, bridges)
            return "c1 and c3: both bridges, one uplink, both masquerade rules"
        checks("--netns c1 --netns c3: two networks, two bridges", three_targets)

        def by_pid() -> str:
            sleeper = lab.popen("c2", "sleep", "30", stdin=subprocess.DEVNULL)
            try:
                # `ip netns exec` enters the namespace, then execs sleep in the same process.
                deadline = time.monotonic() + 5
                while True:
                    where = subprocess.run(["ip", "netns", "identify", str(sleeper.pid)], capture_output=True,
                                           text=True).stdout.strip()
                    if where == lab.ns["c2"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                expect(where == lab.ns["c2"], f"pid {sleeper.pid} is in namespace {where!r}")
                topo = topology(hoptrace, "--pid", sleeper.pid, "--host-netns", host)
                check_path(lab, topo, ("c2",), labels={"c2": f"pid{sleeper.pid}"})
                return f"--pid {sleeper.pid}: {topo['points'][0]['name']} → {topo['points'][1]['name']} → …"
            finally:
                sleeper.kill()
                sleeper.wait()
        checks("--pid PID of a process in c2 finds c2's path", by_pid)

        def text_mode() -> str:
            r = run(hoptrace, "topology", "--netns", lab.ns["c1"], "--host-netns", host, timeout=30)
            expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
            first = r.stdout.splitlines()[0] if r.stdout else ""
            hops = first.split(" → ")
            want = [f"container {lab.ns['c1']}:eth0 ({lab.ip['c1']}/16, {lab.mac['c1']})", f"veth {lab.veth['c1']}",
                    f"bridge docker0 ({lab.ip['bridge']}/16)",
                    f"uplink eth0 ({lab.ip['host']}/24) [MASQUERADE]"]
            expect(hops == want, f"first line {first!r}, want {' → '.join(want)!r}")
            expect("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in r.stdout,
                   "the MASQUERADE rule is not listed")
            return first
        checks("text mode: the path with → and [MASQUERADE]", text_mode)

        def no_masquerade() -> str:
            lab.run("host", "iptables", "-t", "nat", "-F", "POSTROUTING")
            topo = topology(hoptrace, "--netns", lab.ns["c1"], "--host-netns", host)
            expect(topo["masquerade"] is False and topo["nat"] == [],
                   f"masquerade {topo['masquerade']}, nat {topo['nat']} after flushing POSTROUTING")
            r = run(hoptrace, "topology", "--netns", lab.ns["c1"], "--host-netns", host, timeout=30)
            expect("[MASQUERADE]" not in r.stdout, f"text still says MASQUERADE: {short(r.stdout)}")
            return "masquerade false, no nat rules, no [MASQUERADE] in text"
        checks("without the MASQUERADE rule: masquerade false", no_masquerade)

        def raw_ip_point() -> str:
            # A tun device delivers raw IP (no link-layer header): the live point must say so, or the export
            # (and anything else reading points.link_type) would take IP headers for Ethernet ones.
            import sqlite3
            tmp = Path(tempfile.mkdtemp(prefix="hoptrace-tun-"))
            tun = lab.popen("server", "socat", "-u", "TUN:10.77.0.1/24,tun-name=tun0,up,iff-no-pi", "/dev/null",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 5
                while "tun0" not in lab.run("server", "ip", "-o", "link", check=False).stdout:
                    expect(time.monotonic() < deadline, "socat made no tun0 in the server's namespace")
                    time.sleep(0.05)
                db, out = tmp / "tun.db", tmp / "tun.pcapng"
                r = run(hoptrace, "capture", "--db", db, "--quiet", "--host-netns", lab.ns["server"], "--point",
                        f"{lab.ns['server']}:tun0=tun", "--", "ip", "netns", "exec", lab.ns["server"], "ping", "-c",
                        "2", "-W", "1", "10.77.0.9", timeout=60)
                expect(r.returncode == 0, f"capture exit {r.returncode}: {short(r.stderr)}")
                con = sqlite3.connect(db)
                (link,), = con.execute("SELECT link_type FROM points WHERE name = 'tun'").fetchall()
                con.close()
                expect(link == 101, f"points.link_type {link}, want 101 (LINKTYPE_RAW)")
                e = run(hoptrace, "export", "--db", db, "-o", out)
                expect(e.returncode == 0, f"export exit {e.returncode}: {short(e.stderr)}")
                dst = [f[0] for f in lablib.tshark_fields(out, ["ip.dst"])]
                expect(dst.count("10.77.0.9") == 2, f"tshark reads the export's ip.dst as {dst}")
                return "link type 101 stored; tshark reads the export's 2 pings to 10.77.0.9 as IP"
            finally:
                tun.terminate()
                tun.wait(5)
                shutil.rmtree(tmp, ignore_errors=True)
        checks("a --point on a tun device is raw IP in points and in the export", raw_ip_point)

    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
