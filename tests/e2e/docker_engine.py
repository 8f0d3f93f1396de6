#!/usr/bin/env python3
"""End-to-end test against a real Docker engine (issue #14, items 1-2).

dockerlib.Engine runs Debian's dockerd in a network namespace of its own (PREFIX-engine, with an uplink eth0
203.0.113.2 to a router and a far server 198.51.100.10 behind it), with an image built offline from
busybox-static. hoptrace is pointed at that namespace with --host-netns and at the engine with DOCKER_HOST.
What hoptrace says is checked against references the test computes itself, never against hoptrace's output:

- --container by name, by short ID and by full ID: the same points as the test's own walk of the links (`ip
  -j link` in the container's namespace and the engine's: eth0's peer veth, its master bridge, the uplink);
- a ping from a container on the default bridge (docker0), on a user-defined network (br-…), and from a
  container on two networks (the interface of its route to the server): hoptrace's journeys = those the
  independent matcher of trust_reference.py builds from the test's own tcpdump files at every point and
  `conntrack -L` (same sightings, to the nanosecond); the MASQUERADE rewrite = the source address tcpdump saw
  on the uplink and conntrack's reply tuple; every hop's count/min/p50/p90/p99/max = the differences of
  tcpdump's timestamps along the reference journeys;
- a published port (-p 8080:80, busybox httpd) fetched from the far server: the DNAT rewrite of dst and dport
  = what tcpdump saw on the uplink and on docker0, and conntrack's entry;
- two containers pinging with the same ICMP id at once (each ping is PID 1 of a `--network container:`
  sidecar, so both use id 1): one flow and the right number of journeys per container (counted in the test's
  capture on each container's eth0), no journey holding sightings of both (the reference matcher);
- a sidecar (`--network container:alpha`) and alpha together (one network namespace, per /proc/PID/ns/net): one
  target, alpha's points once (the test's walk) and a note; the same for one container given twice; the sidecar
  alone: alpha's points;
- a stopped container: one clear line, exit 1, no database;
- a fetch of the published port from the host itself (nat OUTPUT): the flow tied to conntrack's entry
  (before-path, the host's original tuple), against the test's conntrack -L and its SYN on docker0;
- --dest the host's own addresses (the uplink's, docker0's): "delivered to the host", no lo and no uplink point
  (the kernel's `ip route get` says local); --dest a container on the user network: "blocked by Docker's network
  isolation" (Docker's own DROP rule counts the pings alpha sends there, which fail).
- --trace-rules (the firewall's verdicts), each against the test's own `iptables -S CHAIN` (the rule's text),
  `iptables -L CHAIN -v -x` before and after (its counter) and `nft -a monitor trace` in the engine's namespace
  during the run (the kernel's trace events, by the rule's handle from `nft -a list chain`): a DROP the test inserts
  in DOCKER-USER for alpha's pings to the far server, and Docker's DOCKER-ISOLATION-STAGE-2 DROP for alpha's pings
  to gamma on the user network — the flow's lost entry names table, chain, the rule's text, packets = the counter's
  growth = the drop verdicts nft saw = the requests ping sent (JSON, and the text report's LOST line); a fetch from
  alpha (docker0) and from gamma (user network) to an httpd on the far server — the src rewrite names that
  network's MASQUERADE rule (`iptables -t nat -S POSTROUTING`, the subnet per `docker network inspect`); the far
  server's fetch of the published port — the dst rewrite names the DNAT rule of chain DOCKER (`iptables -t nat -S
  DOCKER`); while each run's command runs, `nft list tables` shows `inet hoptrace_<hoptrace's pid>`, after it no
  hoptrace_ table.

Exit 0 if every check passed, 1 otherwise, 77 without root or docker.io/busybox-static (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import dockerlib  # noqa: E402
import lablib  # noqa: E402
import trust_reference as ref  # noqa: E402
from live_common import Checks, expect, guarded, report_json, run, short, workdir  # noqa: E402

WATCHDOG_S = 150  # well below ctest's TIMEOUT; the test takes ~45 s
PING_COUNT = 5
PING_INTERVAL = "0.2"
SAME_ID_COUNT = 8  # 1.4 s of pinging from each of the two containers: they overlap
HTTP_PORT = 8080
FAR_PORT = 8000  # the far server's httpd (--trace-rules: MASQUERADE of a container's fetch)
USER_NET = "htnet"
# Where a dockerd/containerd left to its defaults writes on the machine: the test's engine must create none of them.
MACHINE_DOCKER_PATHS = ("/run/docker", "/run/containerd", "/run/docker.sock", "/var/run/docker.pid", "/var/lib/docker",
                        "/var/lib/containerd", "/etc/docker/key.json", "/opt/containerd")


def require_engine_or_skip() -> None:
    lablib.skip_unless_usable(dockerlib.unusable_reason())


class Scene:
    """The engine, hoptrace and the scratch directory, with the few things every part needs."""

    def __init__(self, checks: Checks, hoptrace: Path, engine: dockerlib.Engine, tmp: Path):
        self.checks, self.hoptrace, self.engine, self.tmp = checks, hoptrace, engine, tmp
        self.E = engine.ns["engine"]
        self.server = engine.ip["server"]
        self.uplink_ip = engine.ip["uplink"]

    def hoptrace_run(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(self.hoptrace, *args, timeout=timeout, env=self.engine.env())

    def target_args(self, *containers: str) -> list[str]:
        out = []
        for c in containers:
            out += ["--container", c]
        return out + ["--host-netns", self.E, "--dest", self.server]

    def docker_argv(self, *args: str) -> list[str]:
        return [self.engine.client, "-H", self.engine.host, *args]

    # -- the test's own view of the links (ip -j link), never hoptrace's

    def links(self, ns: str) -> list[dict]:
        return json.loads(self.engine.run_in(ns, "ip", "-j", "-d", "addr", "show").stdout)

    def expected_points(self, container: str, label: str | None = None) -> list[dict]:
        """The path of a container's route to the server, walked by the test: the interface `ip route get`
        names in the container's namespace, its veth peer in the engine namespace (ifindex = the interface's
        link index), the veth's master bridge, and the engine's route to the server (the uplink). Each as
        {name, role, ifname, ifindex, mac}; the container point is named LABEL:IFNAME, LABEL = the container's name."""
        ns = self.engine.attach(container)
        route = json.loads(self.engine.run_in(ns, "ip", "-j", "route", "get", self.server).stdout)[0]
        inner = next(link for link in self.links(ns) if link["ifname"] == route["dev"])
        host = self.links(self.E)
        veth = next(link for link in host if link["ifindex"] == inner["link_index"])
        bridge = next(link for link in host if link["ifname"] == veth["master"])
        up_dev = json.loads(self.engine.run_in(self.E, "ip", "-j", "route", "get", self.server).stdout)[0]["dev"]
        uplink = next(link for link in host if link["ifname"] == up_dev)

        def point(name: str, role: str, link: dict) -> dict:
            return {"name": name, "role": role, "ifname": link["ifname"], "ifindex": link["ifindex"],
                    "mac": link["address"]}
        return [point(f"{label or container}:{inner['ifname']}", "container", inner),
                point(veth["ifname"], "veth", veth), point(bridge["ifname"], "bridge", bridge),
                point(uplink["ifname"], "uplink", uplink)]

    def topology(self, *containers: str) -> list[dict]:
        r = self.hoptrace_run("topology", *self.target_args(*containers), "--json")
        expect(r.returncode == 0, f"hoptrace topology {' '.join(containers)}: exit {r.returncode}: {short(r.stderr)}")
        return [{k: p[k] for k in ("name", "role", "ifname", "ifindex", "mac")} for p in json.loads(r.stdout)["points"]]

    def netns_inode(self, container: str) -> int:
        return os.stat(f"/proc/{self.engine.pid(container)}/ns/net").st_ino


def without_names(points: list[dict]) -> list[tuple]:
    return [(p["role"], p["ifname"], p["ifindex"], p["mac"]) for p in points]


# --------------------------------------------------------------------------------------------
# Captured traffic, checked against the test's own tcpdump files and conntrack


class Captured:
    """hoptrace trace of CMD with the test's own tcpdump on each expected point."""

    def __init__(self, scene: Scene, name: str, containers: list[str], points: list[dict], cmd: list[str]):
        self.scene, self.name, self.points = scene, name, points
        self.db = scene.tmp / f"{name}.db"
        engine = scene.engine
        dumps = []
        try:
            for p in points:
                ns = engine.attach(p["container"]) if p["role"] == "container" else scene.E
                dumps.append(lablib.Tcpdump(ns, p["ifname"], scene.tmp / f"{name}-{p['name'].replace(':', '_')}.pcap"))
            self.result = scene.hoptrace_run("trace", *scene.target_args(*containers), "--db", self.db,
                                             "--user", "root", "--", *cmd, timeout=90)
        finally:
            files = lablib.stop_all(dumps)
        self.files = {p["name"]: f for p, f in zip(points, files)}
        self.conntrack = engine.conntrack()
        self.report = report_json(scene.hoptrace, self.db) if self.result.returncode == 0 else {}

    def fields(self, point: str, fields: list[str], filter: str) -> list[tuple[str, ...]]:
        return lablib.tshark_fields(self.files[point], fields, filter)

    def reference(self, owners: dict[str, set[str]]) -> ref.Reference:
        """trust_reference's journeys from the test's tcpdump files: owners = container -> its addresses;
        the engine's own addresses (bridges' gateways, the uplink) are local, the uplink's is the masquerade's."""
        pts = {p["name"]: (p["role"], p.get("container")) for p in self.points}
        local = {self.scene.uplink_ip} | {g for p in self.points if p["role"] == "bridge" for g in p["gateways"]}
        bcast = {"255.255.255.255"} | {b for p in self.points if p["role"] == "bridge" for b in p["broadcasts"]}
        topo = ref.Topology(pts, owners, local, {self.scene.uplink_ip}, bcast)
        captures = {name: ref.read_capture(f) for name, f in self.files.items()}
        return ref.build(topo, captures, self.conntrack)

    def flows(self, proto: str, **original) -> list[dict]:
        return [f for f in self.report.get("flows", []) if f["proto"] == proto
                and all(f["original"].get(k) == v for k, v in original.items())]


def with_addresses(scene: Scene, points: list[dict], container: str) -> list[dict]:
    """Adds the container's name to its points, and each bridge's gateway and broadcast addresses (ip -j addr)."""
    host = {link["ifname"]: link for link in scene.links(scene.E)}
    out = []
    for p in points:
        p = dict(p)
        if p["role"] in ("container", "veth"):
            p["container"] = container
        if p["role"] == "bridge":
            infos = [a for a in host[p["ifname"]]["addr_info"] if a["family"] == "inet"]
            p["gateways"] = {a["local"] for a in infos}
            p["broadcasts"] = {a.get("broadcast") for a in infos if a.get("broadcast")}
        out.append(p)
    return out


def hop_samples(reference: ref.Reference, relevant) -> dict[tuple, list[int]]:
    """(orig tuple, direction, from, to) -> the differences of tcpdump's timestamps along each reference journey."""
    out: dict[tuple, list[int]] = collections.defaultdict(list)
    for j in reference.journeys:
        if j.undecidable or not relevant(j):
            continue
        for a, b in zip(j.sightings, j.sightings[1:]):
            out[(j.orig, j.direction, a.point, b.point)].append(b.ts_ns - a.ts_ns)
    return out


def stats(values: list[int]) -> dict[str, int]:
    out = {"count": len(values), "min_ns": min(values), "max_ns": max(values)}
    for key, p in (("p50_ns", 50), ("p90_ns", 90), ("p99_ns", 99)):
        out[key] = lablib.nearest_rank(values, p)
    return out


def check_ping(scene: Scene, label: str, container: str, points: list[dict], cap: Captured, ip: str) -> None:
    """The checks of one container's ping to the far server, against cap's tcpdump files and conntrack."""
    checks = scene.checks
    owners = {container: {ip}}
    names = [p["name"] for p in points]
    eth0, veth, bridge, uplink = names

    if checks(f"{label}: hoptrace trace around the ping exits 0",
              lambda: expect(cap.result.returncode == 0, f"exit {cap.result.returncode}: {short(cap.result.stderr)}")
              or f"flows in the report: {len(cap.report.get('flows', []))}") is None:
        return

    requests = cap.fields(eth0, ["icmp.ident", "icmp.seq"], f"icmp.type==8 && ip.src=={ip}")
    replies = cap.fields(eth0, ["icmp.ident", "icmp.seq"], f"icmp.type==0 && ip.dst=={ip}")
    ident = int(requests[0][0]) if requests else None

    def counted() -> str:
        expect(len(requests) == PING_COUNT and len(replies) == PING_COUNT,
               f"tcpdump on {eth0}: {len(requests)} requests, {len(replies)} replies, want {PING_COUNT} each")
        return f"tcpdump on {eth0}: {len(requests)} echo requests (id {ident}) and {len(replies)} replies"
    checks(f"{label}: the test's capture saw the ping", counted)

    reference = cap.reference(owners)

    def icmp_of_container(j: ref.Journey) -> bool:
        return j.owner == container and j.orig is not None and j.orig[0] == 1

    def journeys() -> str:
        ht = ref.load_hoptrace(cap.db)
        res = ref.compare(reference, ht, relevant=icmp_of_container)
        expect(res["decided"] == 2 * PING_COUNT, f"reference: {ref.summary(reference)}")
        for k in ("wrong", "merged", "missing", "undecidable", "flagged"):
            expect(res[k] == 0, f"{k} {res[k]}: {'; '.join(res['examples'])}")
        paths = {tuple(s.point for s in j.sightings) for j in reference.journeys if icmp_of_container(j)}
        expect(paths == {(eth0, veth, bridge, uplink), (uplink, bridge, veth, eth0)}, f"reference paths {paths}")
        return (f"{res['decided']} journeys eth0 → {veth} → {bridge} → {uplink} and back, each = the reference's "
                "sightings to the ns")
    checks(f"{label}: journeys = the reference matcher's on the test's tcpdump files", journeys)

    flows = cap.flows("icmp", src=ip, dst=scene.server)

    def masquerade() -> str:
        expect(len(flows) == 1, f"{len(flows)} icmp flows from {ip}: {[f['original'] for f in cap.report['flows']]}")
        seen = {r[0] for r in cap.fields(uplink, ["ip.src"], f"icmp.type==8 && ip.dst=={scene.server}")}
        expect(seen == {scene.uplink_ip}, f"tcpdump on {uplink}: echo requests from {seen}")
        ct = [e for e in cap.conntrack if e.proto == "icmp" and e.original.src == ip and e.original.dst == scene.server]
        expect(len(ct) == 1, f"conntrack -L: {[e.raw for e in cap.conntrack]}")
        t = ct[0].translated()
        expect(t.src == scene.uplink_ip, f"conntrack translates to {t.src}")
        rewrites = {(x["field"], str(x["from"]), str(x["to"]), tuple(x["between"]), x["direction"])
                    for x in flows[0]["rewrites"]}
        want = ("src", ip, t.src, (bridge, uplink), "forward")
        expect(want in rewrites, f"rewrites {sorted(rewrites)}, want {want}")
        expect(flows[0]["translated"]["src"] == t.src and flows[0]["translated"].get("id") == t.id,
               f"translated {flows[0]['translated']}, conntrack {ct[0].raw}")
        return f"src {ip} → {t.src} between {bridge} and {uplink} (tcpdump on {uplink}, conntrack -L)"
    checks(f"{label}: MASQUERADE rewrite = tcpdump's source on the uplink and conntrack's", masquerade)

    def hops() -> str:
        expect(len(flows) == 1, "no single flow")
        samples = hop_samples(reference, icmp_of_container)
        want = {(d, a, b): stats(v) for (_, d, a, b), v in samples.items()}
        got = {(h["direction"], h["from"], h["to"]): {k: h[k] for k in ("count", "min_ns", "p50_ns", "p90_ns",
                                                                        "p99_ns", "max_ns")}
               for h in flows[0]["hops"]}
        expect(set(got) == set(want), f"hops {sorted(got)}, reference {sorted(want)}")
        bad = [f"{k}: {got[k]} vs {want[k]}" for k in want if got[k] != want[k]]
        expect(not bad, "; ".join(bad))
        fwd = [want[k]["p50_ns"] for k in want if k[0] == "forward"]
        return f"{len(want)} hops × {PING_COUNT} samples; forward p50s {fwd} ns = tcpdump's differences"
    checks(f"{label}: per-hop latencies = tcpdump's timestamp differences (count, min, p50/90/99, max)", hops)


# --------------------------------------------------------------------------------------------
# The parts of the scenario


def start_containers(scene: Scene) -> dict[str, str]:
    """The containers, and their default-network addresses as `docker inspect` gives them."""
    e = scene.engine
    img = e.image
    e.docker("network", "create", USER_NET)
    e.docker("run", "-d", "--name", "alpha", img, "sleep", "600")
    e.docker("run", "-d", "--name", "web", "-p", f"{HTTP_PORT}:80", img, "httpd", "-f", "-p", "80", "-h", "/www")
    e.docker("run", "-d", "--name", "gamma", "--network", USER_NET, img, "sleep", "600")
    e.docker("run", "-d", "--name", "delta", img, "sleep", "600")
    e.docker("network", "connect", USER_NET, "delta")
    e.docker("run", "-d", "--name", "side", "--network", "container:alpha", img, "sleep", "600")
    e.docker("run", "-d", "--name", "c1", img, "sleep", "600")
    e.docker("run", "-d", "--name", "c2", img, "sleep", "600")
    e.docker("run", "-d", "--name", "stopped", img, "sleep", "600")
    e.docker("stop", "-t", "0", "stopped")
    ips = {}
    for c in ("alpha", "web", "gamma", "delta", "c1", "c2"):
        nets = e.inspect(c)["NetworkSettings"]["Networks"]
        ips[c] = {n: v["IPAddress"] for n, v in nets.items()}
    return ips


def check_identity(scene: Scene) -> None:
    e = scene.engine
    full = e.inspect("alpha")["Id"]
    want = scene.expected_points("alpha")

    def by(label: str, ident: str) -> str:
        got = scene.topology(ident)
        expect(without_names(got) == without_names(want), f"points {got}, the test's walk {want}")
        # Named after the container's own name (docker inspect's .Name), however it was given.
        expect(got[0]["name"] == f"{e.inspect('alpha')['Name'].lstrip('/')}:eth0",
               f"container point named {got[0]['name']!r}")
        return " ".join(p["name"] for p in got)
    checks = scene.checks
    checks("--container alpha (by name): the test's walk of the links", lambda: by("name", "alpha"))
    checks("--container by short ID (12 hex): the same points", lambda: by("short", full[:12]))
    checks("--container by full ID (64 hex): the same points", lambda: by("full", full))
    checks("--container /alpha (docker's own spelling of the name): the same points", lambda: by("slash", "/alpha"))

    def by_pid() -> str:
        # --pid of the container's process: the engine is asked which container's namespace that is.
        pid = e.inspect("alpha")["State"]["Pid"]
        r = scene.hoptrace_run("topology", "--pid", str(pid), "--host-netns", scene.E, "--dest", scene.server, "--json")
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        got = [{k: p[k] for k in ("name", "role", "ifname", "ifindex", "mac")} for p in json.loads(r.stdout)["points"]]
        expect(without_names(got) == without_names(want), f"points {got}, the test's walk {want}")
        expect(got[0]["name"] == f"{e.inspect('alpha')['Name'].lstrip('/')}:eth0",
               f"container point named {got[0]['name']!r} for --pid {pid}")
        return f"--pid {pid}: " + " ".join(p["name"] for p in got)
    checks("--pid of alpha's process: the same points, named after the container", by_pid)


def ping_cmd(scene: Scene, container: str) -> list[str]:
    return scene.docker_argv("exec", container, "ping", "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "2",
                             scene.server)


def check_ping_from(scene: Scene, label: str, container: str, ip: str, bridge_check=None) -> None:
    points = with_addresses(scene, scene.expected_points(container), container)
    if bridge_check is not None:
        scene.checks(f"{label}: the path's bridge", lambda: bridge_check(points))

    def topology() -> str:
        got = scene.topology(container)
        expect(without_names(got) == without_names(points) and [p["name"] for p in got] == [p["name"] for p in points],
               f"points {got}, the test's walk {points}")
        return " → ".join(p["name"] for p in got)
    scene.checks(f"{label}: hoptrace topology = the test's walk of the links", topology)
    cap = Captured(scene, label.replace(" ", "-"), [container], points, ping_cmd(scene, container))
    check_ping(scene, label, container, points, cap, ip)


def traced_fetch(scene: Scene, name: str, points: list[dict], ns: str, label: str, where: str) -> Captured | None:
    """hoptrace trace of web's path around a fetch of the published port from namespace ns; None (after a FAIL
    line) when the trace or the fetch failed."""
    url = f"http://{scene.uplink_ip}:{HTTP_PORT}/"
    fetch = ["ip", "netns", "exec", ns, sys.executable, "-c",
             f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode(), end='')"]
    cap = Captured(scene, name, ["web"], points, fetch)
    ok = scene.checks(f"{label}: hoptrace trace around a fetch from {where} exits 0, page fetched",
                      lambda: expect(cap.result.returncode == 0 and "hoptrace docker e2e" in cap.result.stdout,
                                     f"exit {cap.result.returncode}: {short(cap.result.stderr)}") or url)
    return None if ok is None else cap


def check_published_port(scene: Scene, web_ip: str) -> None:
    checks = scene.checks
    points = with_addresses(scene, scene.expected_points("web"), "web")
    eth0, veth, bridge, uplink = (p["name"] for p in points)
    cap = traced_fetch(scene, "dnat", points, scene.engine.ns["server"], "published port", "the far server")
    if cap is None:
        return

    def rule() -> str:
        nat = scene.engine.iptables_save("nat")
        want = f"-A DOCKER ! -i docker0 -p tcp -m tcp --dport {HTTP_PORT} -j DNAT --to-destination {web_ip}:80"
        expect(want in nat, f"no '{want}' in iptables-save: {short(' | '.join(nat))}")
        return want
    checks("published port: Docker's DNAT rule in the engine's namespace", rule)

    def dnat() -> str:
        syn = "tcp.flags.syn==1 && tcp.flags.ack==0"
        at_up = set(cap.fields(uplink, ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"], syn))
        at_br = set(cap.fields(bridge, ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"], syn))
        expect(len(at_up) == 1 and len(at_br) == 1, f"SYNs on {uplink} {at_up}, on {bridge} {at_br}")
        (src, sport, odst, odport), (_, _, tdst, tdport) = next(iter(at_up)), next(iter(at_br))
        ct = [x for x in cap.conntrack if x.proto == "tcp" and x.original.dport == HTTP_PORT]
        expect(len(ct) == 1, f"conntrack -L: {[x.raw for x in cap.conntrack]}")
        t = ct[0].translated()
        expect((t.dst, str(t.dport)) == (tdst, tdport), f"conntrack {ct[0].raw} vs tcpdump {tdst}:{tdport}")
        flows = cap.flows("tcp", dst=odst, dport=int(odport))
        expect(len(flows) == 1,
               f"{len(flows)} flows to {odst}:{odport}: {[f['original'] for f in cap.report['flows']]}")
        # The replies, undone on their way out: the SYN-ACK leaves docker0 from the container, the uplink from
        # the published address.
        synack = "tcp.flags.syn==1 && tcp.flags.ack==1"
        r_br = set(cap.fields(bridge, ["ip.src", "tcp.srcport"], synack))
        r_up = set(cap.fields(uplink, ["ip.src", "tcp.srcport"], synack))
        expect(r_br == {(tdst, tdport)} and r_up == {(odst, odport)},
               f"SYN-ACKs on {bridge} {r_br}, on {uplink} {r_up}")
        got = {(x["field"], str(x["from"]), str(x["to"]), tuple(x["between"]), x["direction"])
               for x in flows[0]["rewrites"]}
        want = {("dst", odst, tdst, (uplink, bridge), "forward"),
                ("dport", odport, tdport, (uplink, bridge), "forward"),
                ("src", tdst, odst, (bridge, uplink), "reply"), ("sport", tdport, odport, (bridge, uplink), "reply")}
        expect(got == want, f"rewrites {sorted(got)}, want {sorted(want)}")
        expect(flows[0]["original"]["src"] == src and str(flows[0]["original"]["sport"]) == sport,
               f"original {flows[0]['original']}, tcpdump {src}:{sport}")
        return f"{src}:{sport} → {odst}:{odport} ⇒ {tdst}:{tdport} between {uplink} and {bridge}"
    checks("published port: DNAT rewrites = tcpdump's SYN and SYN-ACK on the uplink vs on docker0, and conntrack's",
           dnat)

    def identity() -> str:
        # What the engine itself says (docker inspect's JSON, read here), against points[].container.
        info = scene.engine.inspect("web")
        published = sorted(f"{b['HostIp']}:{b['HostPort']}->{port}"
                           for port, binds in (info["NetworkSettings"]["Ports"] or {}).items() for b in binds or [])
        want = {"name": info["Name"].lstrip("/"), "id": info["Id"], "image": info["Config"]["Image"],
                "networks": sorted(info["NetworkSettings"]["Networks"]), "ports": published}
        pts = [x for x in cap.report["points"] if x["name"] == eth0]
        expect(len(pts) == 1, f"no point {eth0}: {[x['name'] for x in cap.report['points']]}")
        got = dict(pts[0].get("container") or {})
        got["networks"], got["ports"] = sorted(got.get("networks", [])), sorted(got.get("ports", []))
        expect(got == want, f"points[{eth0}].container {got}, docker inspect says {want}")
        others = [x["name"] for x in cap.report["points"] if x["name"] != eth0 and "container" in x]
        expect(not others, f"the host's points say a container: {others}")
        flows = cap.flows("tcp", dport=HTTP_PORT)
        expect(len(flows) == 1, f"{len(flows)} flows to port {HTTP_PORT}")
        want_pub = [f"{x} (web)" for x in published if x.split(":")[-1].startswith(f"{HTTP_PORT}->")]
        expect(flows[0].get("published") == want_pub, f"published {flows[0].get('published')}, want {want_pub}")
        text = cap.result.stdout
        expect(f"published port: {want_pub[0]}" in text and f"container web ({info['Id'][:12]})" in text,
               "the text report names neither the container nor the published port")
        return (f"{eth0}: container web {info['Id'][:12]}, image {want['image']}, networks {want['networks']}, "
                f"ports {published}; the flow: published {want_pub}")
    checks("published port: points[].container = docker inspect (name, ID, image, networks, ports); the DNATed "
           "flow names the published port", identity)


def check_host_sent(scene: Scene, web_ip: str) -> None:
    """A fetch of the published port from the engine's namespace itself (the host): Docker's nat OUTPUT rule
    (`-A OUTPUT … --dst-type LOCAL -j DOCKER`) translates it before any point sees it. The flow hoptrace reports
    must be tied to conntrack's entry (state before-path, the host's original tuple) — checked against the
    test's own `conntrack -L` and its tcpdump SYN on docker0."""
    checks = scene.checks
    points = with_addresses(scene, scene.expected_points("web"), "web")
    bridge = points[2]["name"]
    cap = traced_fetch(scene, "host-sent", points, scene.E, "host-sent", "the host itself")
    if cap is None:
        return

    def before_path() -> str:
        nat = scene.engine.iptables_save("nat")
        expect(any(line.startswith("-A OUTPUT") and "-j DOCKER" in line for line in nat), f"no OUTPUT rule: {nat}")
        # The host's own entry (the far server's fetch of the published-port check is there too).
        ct = [x for x in cap.conntrack if x.proto == "tcp" and x.original.dport == HTTP_PORT
              and x.original.dst == scene.uplink_ip and x.original.src == scene.uplink_ip]
        expect(len(ct) == 1, f"conntrack -L: {[x.raw for x in cap.conntrack]}")
        syn = set(cap.fields(bridge, ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"],
                             "tcp.flags.syn==1 && tcp.flags.ack==0"))
        expect(len(syn) == 1, f"SYNs on {bridge}: {syn}")
        src, sport, dst, dport = next(iter(syn))
        t = ct[0].translated()
        expect((t.src, str(t.sport), t.dst, str(t.dport)) == (src, sport, dst, dport) and dst == web_ip,
               f"conntrack {ct[0].raw} vs the SYN on {bridge} {syn}")
        flows = cap.flows("tcp", dst=dst, dport=int(dport))
        expect(len(flows) == 1, f"{len(flows)} flows to {dst}:{dport}")
        c = flows[0].get("conntrack", {})
        o = ct[0].original
        expect(c.get("state") == "before-path" and c.get("original", {}).get("dst") == o.dst
               and c["original"].get("dport") == o.dport and c["original"].get("src") == o.src,
               f"report conntrack {c}, conntrack -L original {o}")
        return f"{o.src}:{o.sport} → {o.dst}:{o.dport} sent by the host, translated to {dst}:{dport} before {bridge}"
    checks("host-sent: the flow is tied to conntrack's entry, translated before the first point (nat OUTPUT)",
           before_path)


def docker_proxies(scene: Scene) -> list[dict]:
    """The docker-proxy processes in the engine's namespace, read here from /proc (their command lines)."""
    engine_ino = os.stat(f"/run/netns/{scene.E}").st_ino
    out = []
    for pid in (d for d in os.listdir("/proc") if d.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not argv or Path(argv[0].decode()).name != "docker-proxy":
                continue
            if os.stat(f"/proc/{pid}/ns/net").st_ino != engine_ino:
                continue
        except OSError:
            continue
        args = [a.decode() for a in argv if a]
        opt = {args[i].lstrip("-"): args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("-")}
        out.append({"pid": int(pid), **opt})
    return out


def check_docker_proxy(scene: Scene, ips: dict[str, dict[str, str]]) -> None:
    """alpha fetches the engine's published port at the engine's own address: Docker does not DNAT what comes in
    on docker0 (`-A DOCKER -i docker0 -j RETURN`), so the host's docker-proxy accepts it and opens a connection of
    its own to web. hoptrace must report the two flows linked, relayed by that docker-proxy."""
    checks = scene.checks
    points, seen = [], set()
    for c in ("alpha", "web"):
        for p in with_addresses(scene, scene.expected_points(c), c):
            if p["name"] not in seen:
                seen.add(p["name"])
                points.append(p)
    url = f"http://{scene.uplink_ip}:{HTTP_PORT}/"
    fetch = scene.docker_argv("exec", "alpha", "wget", "-q", "-O", "-", url)
    cap = Captured(scene, "proxy", ["alpha", "web"], points, fetch)
    proxies = [x for x in docker_proxies(scene) if x.get("host-port") == str(HTTP_PORT) and x.get("proto") == "tcp"]
    if checks("docker-proxy: hoptrace trace of alpha and web around alpha's fetch of the published port exits 0",
              lambda: expect(cap.result.returncode == 0 and "hoptrace docker e2e" in cap.result.stdout
                             and len(proxies) == 1,
                             f"exit {cap.result.returncode}: {short(cap.result.stderr)}; docker-proxy {proxies}")
              or f"docker-proxy pid {proxies[0]['pid']}: {proxies[0]}") is None:
        return
    px = proxies[0]
    bridge = next(p["name"] for p in points if p["role"] == "bridge")

    def linked() -> str:
        # The two connections, as the test's own tcpdump saw their SYNs on docker0.
        syn = "tcp.flags.syn==1 && tcp.flags.ack==0"
        syns = cap.fields(bridge, ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"], syn)
        client = [x for x in syns if x[0] == ips["alpha"]["bridge"] and x[2:] == (scene.uplink_ip, str(HTTP_PORT))]
        dialled = [x for x in syns if x[2:] == (px["container-ip"], px["container-port"])]
        expect(len(client) == 1 and len(dialled) == 1, f"SYNs on {bridge}: {syns}")
        c = cap.flows("tcp", src=ips["alpha"]["bridge"], dport=HTTP_PORT)
        d = cap.flows("tcp", dst=px["container-ip"], dport=int(px["container-port"]))
        expect(len(c) == 1 and len(d) == 1, f"flows {[f['original'] for f in cap.report['flows']]}")
        rc, rd = c[0].get("relay") or {}, d[0].get("relay") or {}
        want = {"by": "docker-proxy", "pid": px["pid"], "listens": f"{px['host-ip']}:{px['host-port']}/tcp",
                "to": f"{px['container-ip']}:{px['container-port']}"}
        expect({k: rc.get(k) for k in want} == want and rc.get("side") == "client" and rc.get("peer_flow") == d[0]["id"],
               f"client flow's relay {rc}, want {want}, side client, peer {d[0]['id']}")
        expect({k: rd.get(k) for k in want} == want and rd.get("side") == "container" and rd.get("peer_flow") == c[0]["id"],
               f"proxy's flow's relay {rd}, want {want}, side container, peer {c[0]['id']}")
        expect(f"relayed by docker-proxy (pid {px['pid']}" in cap.result.stdout, "the text report does not say it")
        return (f"flow {c[0]['id']} {client[0][0]}:{client[0][1]} → :{HTTP_PORT} relayed by docker-proxy "
                f"{px['pid']} as flow {d[0]['id']} {dialled[0][0]}:{dialled[0][1]} → {dialled[0][2]}:{dialled[0][3]}")
    checks("docker-proxy: the client's flow and the proxy's own flow to web are linked, 'relayed by docker-proxy' "
           "(= /proc's docker-proxy, tcpdump's two SYNs on docker0)", linked)


def check_same_icmp_id(scene: Scene, ips: dict[str, str]) -> None:
    """c1 and c2 each get a sidecar whose PID 1 is ping: busybox ping's id is its pid, so both send id 1."""
    checks = scene.checks
    points = []
    for c in ("c1", "c2"):
        points += with_addresses(scene, scene.expected_points(c), c)
    # One bridge and one uplink for both.
    seen, unique = set(), []
    for p in points:
        if p["name"] not in seen:
            seen.add(p["name"])
            unique.append(p)
    # c2's ping starts a little after c1's (the masquerade then keeps c1's id and rewrites c2's, as it would
    # for two real clients), and both run long enough to overlap even when `docker run` is slow to start one.
    pingers = " & sleep 0.2; ".join(" ".join(scene.docker_argv(
        "run", "--rm", "--network", f"container:{c}", scene.engine.image, "ping", "-c", str(SAME_ID_COUNT), "-i",
        PING_INTERVAL, "-W", "2", scene.server) + [">/dev/null"]) for c in ("c1", "c2"))
    cap = Captured(scene, "same-id", ["c1", "c2"], unique, ["sh", "-c", pingers + " & wait"])
    if checks("same ICMP id: hoptrace trace around both pings exits 0",
              lambda: expect(cap.result.returncode == 0, f"exit {cap.result.returncode}: {short(cap.result.stderr)}")
              or f"flows in the report: {len(cap.report.get('flows', []))}") is None:
        return
    counts = {}
    for c in ("c1", "c2"):
        eth0 = f"{c}:eth0"
        req = cap.fields(eth0, ["icmp.ident"], f"icmp.type==8 && ip.src=={ips[c]}")
        rep = cap.fields(eth0, ["icmp.ident"], f"icmp.type==0 && ip.dst=={ips[c]}")
        stamps = [lablib.epoch_ns(r[1]) for r in cap.fields(eth0, ["icmp.ident", "frame.time_epoch"],
                                                           f"icmp.type==8 && ip.src=={ips[c]}")]
        counts[c] = (len(req), len(rep), {r[0] for r in req}, min(stamps, default=0), max(stamps, default=0))

    def same_id() -> str:
        ids = {c: v[2] for c, v in counts.items()}
        expect(ids["c1"] == ids["c2"] and len(ids["c1"]) == 1, f"ids at each eth0: {ids}")
        expect(all(v[0] == v[1] == SAME_ID_COUNT for v in counts.values()), f"requests/replies {counts}")
        overlap_ns = min(counts["c1"][4], counts["c2"][4]) - max(counts["c1"][3], counts["c2"][3])
        expect(overlap_ns > 0, f"the two pings did not overlap in time: {counts}")
        up = {r[0] for r in cap.fields("eth0", ["icmp.ident"], f"icmp.type==8 && ip.dst=={scene.server}")}
        expect(len(up) == 2, f"ids on the uplink {up}: the masquerade should keep one and rewrite the other")
        return (f"both send id {next(iter(ids['c1']))}, {overlap_ns / 1e9:.2f} s at once; the uplink sees ids "
                f"{sorted(up, key=int)}")
    if checks("same ICMP id: the test's capture saw one id in both containers, two on the uplink", same_id) is None:
        return

    def per_container() -> str:
        out = []
        for c in ("c1", "c2"):
            flows = cap.flows("icmp", src=ips[c], dst=scene.server)
            expect(len(flows) == 1, f"{len(flows)} flows from {c} {ips[c]}")
            f = flows[0]
            want = counts[c][0] + counts[c][1]
            n = f["forward_journeys"] + f["reply_journeys"]
            expect(f["forward_journeys"] == counts[c][0] and f["reply_journeys"] == counts[c][1],
                   f"{c}: {f['forward_journeys']} forward + {f['reply_journeys']} reply journeys, tcpdump "
                   f"{counts[c][0]} + {counts[c][1]}")
            out.append(f"{c} {n} = {want}")
        return ", ".join(out)
    checks("same ICMP id: one flow per container, its journeys = the requests and replies on its eth0", per_container)

    def not_merged() -> str:
        reference = cap.reference({"c1": {ips["c1"]}, "c2": {ips["c2"]}})
        res = ref.compare(reference, ref.load_hoptrace(cap.db),
                          relevant=lambda j: j.owner in ("c1", "c2") and j.orig is not None and j.orig[0] == 1)
        expect(res["decided"] == 4 * SAME_ID_COUNT, f"reference: {ref.summary(reference)}")
        for k in ("merged", "wrong", "missing"):
            expect(res[k] == 0, f"{k} {res[k]}: {'; '.join(res['examples'])}")
        return f"{res['decided']} journeys = the reference's, none holds sightings of both containers"
    checks("same ICMP id: no journey merged across the containers (reference matcher)", not_merged)


def check_sidecar(scene: Scene) -> None:
    checks = scene.checks

    def same_ns() -> str:
        a, s = scene.netns_inode("alpha"), scene.netns_inode("side")
        expect(a == s, f"alpha net:[{a}], side net:[{s}]")
        return f"both net:[{a}] (/proc/PID/ns/net)"
    if checks("sidecar: --network container:alpha shares alpha's namespace", same_ns) is None:
        return

    def merged() -> str:
        # One namespace, one target: the points of the test's walk from alpha, each once, named after alpha.
        want = scene.expected_points("alpha")
        db = scene.tmp / "sidecar.db"
        r = scene.hoptrace_run("capture", *scene.target_args("alpha", "side"), "--db", db, "--duration", "1")
        expect(r.returncode == 0, f"exit {r.returncode}, stderr {short(r.stderr)}")
        notes = [line for line in r.stderr.splitlines() if "same network namespace" in line]
        expect(len(notes) == 1 and "alpha" in notes[0] and "side" in notes[0], f"stderr {short(r.stderr)}")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        stored = [row[0] for row in con.execute("SELECT name FROM points ORDER BY id")]
        con.close()
        expect(sorted(stored) == sorted(p["name"] for p in want), f"points stored {stored}, the walk {want}")
        got = scene.topology("alpha", "side")
        expect(got == want, f"topology alpha + side {got}, the walk from alpha {want}")
        return f"one set of points ({', '.join(stored)}); {notes[0].strip()}"
    checks("sidecar: --container alpha --container side are one target: alpha's points once, and a note", merged)

    def twice() -> str:
        full = scene.engine.inspect("alpha")["Id"]
        r = scene.hoptrace_run("topology", *scene.target_args("alpha", full[:12]), "--json")
        notes = [line for line in r.stderr.splitlines() if "same network namespace" in line]
        expect(r.returncode == 0 and len(notes) == 1, f"exit {r.returncode}, stderr {short(r.stderr)}")
        got = [{k: p[k] for k in ("name", "role", "ifname", "ifindex", "mac")} for p in json.loads(r.stdout)["points"]]
        want = scene.expected_points("alpha")
        expect(got == want, f"points {got}, the walk from alpha {want}")
        return f"exit 0, {len(got)} points: {notes[0].strip()}"
    checks("sidecar: one container given twice (name and short ID) is one target the same way", twice)

    def alone() -> str:
        got = scene.topology("side")
        want = scene.expected_points("alpha", label="side")
        expect(without_names(got) == without_names(want) and got[0]["name"] == "side:eth0",
               f"points {got}, alpha's {want}")
        return " ".join(p["name"] for p in got)
    checks("sidecar: --container side alone gives alpha's points", alone)


def check_stopped(scene: Scene) -> None:
    def stopped() -> str:
        state = scene.engine.inspect("stopped")["State"]
        expect(not state["Running"] and state["Pid"] == 0, f"docker inspect: {state}")
        db = scene.tmp / "stopped.db"
        r = scene.hoptrace_run("trace", *scene.target_args("stopped"), "--db", db, "--", "true")
        lines = r.stderr.strip().splitlines()
        expect(r.returncode == 1, f"exit {r.returncode}")
        expect(len(lines) == 1 and "stopped" in lines[0] and "not running" in lines[0], f"stderr {lines}")
        left = [p.name for p in scene.tmp.iterdir() if p.name.startswith("stopped.db")]
        expect(not left, f"created {left}")
        return f"exit 1: {lines[0]}"
    scene.checks("stopped container: one clear line, exit 1, no database", stopped)


def check_destinations(scene: Scene, ips: dict[str, dict[str, str]]) -> None:
    """--dest the host itself (its uplink address, docker0's gateway) and --dest a container on another Docker network:
    the kernel's own answer (`ip -j route get` in the engine namespace: type local) and Docker's own verdict (a ping
    across the networks fails and the DOCKER-ISOLATION-STAGE-2 DROP rule's counter for that bridge grows)."""
    e, checks = scene.engine, scene.checks

    def topology_to(dest: str) -> tuple[subprocess.CompletedProcess, dict]:
        r = scene.hoptrace_run("topology", "--container", "alpha", "--host-netns", scene.E, "--dest", dest, "--json")
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        return r, json.loads(r.stdout)

    docker0 = next(link for link in scene.links(scene.E) if link["ifname"] == "docker0")
    gateway = next(a["local"] for a in docker0["addr_info"] if a["family"] == "inet")
    for label, dest in (("the engine's uplink address", scene.uplink_ip), ("docker0's own address", gateway)):
        def local(dest=dest) -> str:
            route = json.loads(e.run_in(scene.E, "ip", "-j", "route", "get", dest).stdout)[0]
            expect(route.get("type") == "local", f"ip route get {dest}: {route}")
            r, topo = topology_to(dest)
            roles = [(p["role"], p["ifname"]) for p in topo["points"]]
            expect(topo.get("destination") == "host" and not any(i == "lo" for _, i in roles)
                   and not any(role == "uplink" for role, _ in roles), f"destination {topo.get('destination')!r}, "
                   f"points {roles}")
            expect("delivered to the host" in r.stderr, f"stderr {short(r.stderr)}")
            return f"{dest}: kernel says local; hoptrace: delivered to the host, points {[i for _, i in roles]}"
        checks(f"--dest {label}: delivered to the host, lo never an uplink", local)

    def isolated() -> str:
        target = ips["gamma"][USER_NET]
        net_id = e.docker("network", "inspect", "-f", "{{.Id}}", USER_NET).stdout.strip()
        bridge = "br-" + net_id[:12]

        def drops() -> int:
            rows = e.run_in(scene.E, "iptables", "-t", "filter", "-L", "DOCKER-ISOLATION-STAGE-2", "-v", "-x", "-n")
            for line in rows.stdout.splitlines():
                w = line.split()
                if len(w) >= 7 and w[2] == "DROP" and bridge in w:
                    return int(w[0])
            raise AssertionError(f"no DROP rule for {bridge} in DOCKER-ISOLATION-STAGE-2: {rows.stdout}")
        before = drops()
        ping = e.docker("exec", "alpha", "ping", "-c", "2", "-W", "1", target, check=False)
        after = drops()
        expect(ping.returncode != 0 and after >= before + 2, f"ping alpha → gamma exit {ping.returncode}, the DROP "
               f"rule's packets {before} → {after}")
        r, topo = topology_to(target)
        expect(topo.get("destination") == "isolated" and bridge in topo.get("destination_note", ""),
               f"destination {topo.get('destination')!r}: {topo.get('destination_note')!r}")
        expect("network isolation" in r.stderr, f"stderr {short(r.stderr)}")
        return f"Docker dropped {after - before} of alpha's pings to {target} on {bridge}; hoptrace: " \
               f"{topo['destination_note'][:80]}…"
    checks("--dest a container on another Docker network: blocked by Docker's network isolation", isolated)


# --------------------------------------------------------------------------------------------
# --trace-rules: the rules hoptrace names, against iptables' own text and counters and nft's own trace monitor


class RuleTraced:
    """`hoptrace trace --trace-rules` of CMD, with the test's own evidence around it: the packet counters of the
    chains named (iptables -L -v -x, before and after), `nft -a monitor trace` in the engine's namespace during the
    run, `nft list tables` while CMD runs (from inside CMD) and after hoptrace has exited."""

    def __init__(self, scene: Scene, name: str, container: str, dest: str, cmd: list[str],
                 chains: list[tuple[str, str]]):
        e = scene.engine
        self.scene, self.name = scene, name
        self.db = scene.tmp / f"{name}.db"
        tables_file = scene.tmp / f"{name}.tables"
        before = {c: e.rule_counters(c[1], c[0]) for c in chains}
        # CMD lists the engine's tables first (hoptrace's own is in place by then), then runs; its exit status is
        # printed, so that a failing ping (the point of a drop) is not hoptrace's exit status.
        wrapped = ["sh", "-c", f'ip netns exec {scene.E} nft list tables >{tables_file}; "$@"; echo "cmd exit $?"',
                   "sh", *cmd]
        monitor = e.nft_monitor_trace(scene.tmp / f"{name}.nft-trace")
        try:
            argv = [str(scene.hoptrace), "trace", "--trace-rules", "--container", container, "--host-netns", scene.E,
                    "--dest", dest, "--db", str(self.db), "--user", "root", "--", *wrapped]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e.env())
            self.pid = proc.pid
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            self.result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        finally:
            self.monitor = monitor.stop()
        self.tables_after = e.nft_tables()
        self.tables_during = [line.split(None, 1)[1] for line in tables_file.read_text().splitlines()
                              if line.startswith("table ")] if tables_file.exists() else []
        self.delta = {c: [b - a for a, b in zip(before[c], e.rule_counters(c[1], c[0]))] for c in chains}
        self.report = report_json(scene.hoptrace, self.db) if self.result.returncode == 0 else {}

    def ran(self) -> str:
        expect(self.result.returncode == 0, f"exit {self.result.returncode}: {short(self.result.stderr)}")
        expect("rule_traces" in self.report, f"no rule_traces in the JSON report: {sorted(self.report)}")
        rt = self.report["rule_traces"]
        keys = {"events", "walks", "packets", "tied", "untied", "lost_events"}
        expect(keys <= set(rt), f"rule_traces {rt}, want the keys {sorted(keys)}")
        expect(rt["lost_events"] == 0 and rt["tied"] + rt["untied"] == rt["walks"], f"rule_traces {rt}")
        return f"rule_traces {rt}"

    def verdicts(self, table: str, chain: str, handle: int, verdict: str) -> int:
        """How many trace events of the test's own monitor name that rule (by handle) with that verdict."""
        return sum(1 for m in self.monitor if (m["family"], m["table"], m["chain"], m["handle"], m["verdict"])
                   == ("ip", table, chain, handle, verdict))

    def table_checks(self) -> None:
        """While CMD ran: exactly one `inet hoptrace_<hoptrace's pid>`; after hoptrace exited: no hoptrace_ table."""
        checks = self.scene.checks

        def during() -> str:
            ours = [t for t in self.tables_during if "hoptrace_" in t]
            expect(ours == [f"inet hoptrace_{self.pid}"], f"nft list tables during the run: {self.tables_during} "
                   f"(hoptrace's pid {self.pid})")
            return f"nft list tables: {', '.join(self.tables_during)}"
        checks(f"{self.name}: while it runs, the engine's namespace has hoptrace's table inet hoptrace_PID", during)

        def after() -> str:
            left = [t for t in self.tables_after if "hoptrace_" in t]
            expect(not left, f"nft list tables after the run: {self.tables_after}")
            return f"nft list tables: {', '.join(self.tables_after)}"
        checks(f"{self.name}: after it, nft list tables lists no hoptrace_ table", after)

    def text_report(self) -> str:
        r = run(self.scene.hoptrace, "report", "--db", self.db)
        expect(r.returncode == 0, f"hoptrace report: exit {r.returncode}: {short(r.stderr)}")
        return r.stdout


def rule_index(rules: list[str], chain: str, *words: str) -> int:
    """The position of the one rule (iptables -S text) holding every one of words."""
    found = [i for i, r in enumerate(rules) if all(w in r.split() for w in words)]
    expect(len(found) == 1, f"iptables -S {chain}: {len(found)} rules with {' '.join(words)}: {rules}")
    return found[0]


def flow_check(scene: Scene, label: str, run_: RuleTraced, proto: str, **original) -> dict | None:
    """The one flow of the report with that protocol and original tuple's fields (a check), or None."""
    found = []

    def one() -> str:
        found.append(the_flow(run_, proto, **original))
        f = found[0]
        return f"{f['original']}, {f['forward_journeys']} forward and {f['reply_journeys']} reply journeys"
    scene.checks(f"{label}: one {proto} flow {' '.join(f'{k}={v}' for k, v in original.items())}", one)
    return found[0] if found else None


def the_flow(run_: RuleTraced, proto: str, **original) -> dict:
    flows = [f for f in run_.report.get("flows", []) if f["proto"] == proto
             and all(f["original"].get(k) == v for k, v in original.items())]
    expect(len(flows) == 1, f"{len(flows)} {proto} flows {original}: "
           f"{[(f['proto'], f['original']) for f in run_.report.get('flows', [])]}")
    return flows[0]


def check_rule_drop(scene: Scene, label: str, run_: RuleTraced, flow: dict, chain: str, index: int, rule: str,
                    handle: int, sent) -> None:
    """A lost entry of flow names the rule at chain[index] of filter: its text (iptables -S), its packets = the rule's
    counter delta = the drop verdicts the test's nft monitor saw for the rule's handle (read while the rule was
    there) = the requests ping sent (sent(): read from ping's own output)."""
    checks = scene.checks
    sent_by = sent
    delta = run_.delta[("filter", chain)][index]
    seen = run_.verdicts("filter", chain, handle, "drop")

    def evidence() -> str:
        sent = sent_by()
        expect(delta == sent and seen == sent, f"the rule's counter grew by {delta}, nft monitor trace saw {seen} drop "
               f"verdicts of handle {handle}; ping sent {sent}")
        return f"'{rule}' (handle {handle}): counter +{delta}, nft monitor trace {seen} drop verdicts, ping {sent} sent"
    checks(f"{label}: the test's evidence: the rule's counter and nft's own trace count every request", evidence)

    def named() -> str:
        want = {"netns": scene.E, "family": "ip", "table": "filter", "chain": chain, "rule": rule, "verdict": "drop",
                "packets": delta}
        lost = flow.get("lost", [])
        expect(len(lost) == 1, f"lost {lost}")
        expect(lost[0].get("rules") == [want], f"lost[0].rules {lost[0].get('rules')}, want [{want}]")
        expect(lost[0]["count"] == delta, f"lost {lost[0]['count']} packets, the rule dropped {delta}")
        text = run_.text_report()
        line = f"dropped by filter {chain} {rule} ({delta} traced packets)"
        expect(any("LOST:" in t and line in t for t in text.splitlines()),
               f"no LOST line with '{line}': {short(text, 2000)}")
        return f"lost {lost[0]['count']} after {lost[0]['after']}: {line}"
    checks(f"{label}: the lost entry names filter {chain}, the rule's iptables -S text, packets = its counter (JSON "
           "and text)", named)


def check_rule_rewrite(scene: Scene, label: str, run_: RuleTraced, flow: dict, field: str, chain: str, index: int,
                       rule: str, handle: int) -> None:
    """flow's forward FIELD rewrite names the nat rule at chain[index]: its text (iptables -t nat -S), its packets =
    the rule's counter delta = the accept verdicts the test's nft monitor saw for its handle."""
    checks = scene.checks
    delta = run_.delta[("nat", chain)][index]
    seen = run_.verdicts("nat", chain, handle, "accept")

    def named() -> str:
        expect(delta == 1, f"the rule's counter grew by {delta}, want 1 (one connection)")
        rewrites = [r for r in flow["rewrites"] if r["field"] == field and r["direction"] == "forward"]
        expect(len(rewrites) == 1, f"forward {field} rewrites: {flow['rewrites']}")
        want = {"netns": scene.E, "family": "ip", "table": "nat", "chain": chain, "rule": rule, "verdict": "accept",
                "packets": delta}
        got = rewrites[0].get("rule")
        why = "" if seen else (" (nft monitor trace saw no event of that rule: the connection's first packet, the "
                               "only one nat rules see, was not traced)")
        # Which packets the kernel reported under the same trace id as the rule's event (their IPv4 ids, as nft
        # printed their headers): more than one, and a reader that takes one id for one packet cannot tell them apart.
        ids = {m["id"] for m in run_.monitor if (m["table"], m["chain"], m["handle"]) == ("nat", chain, handle)}
        for tid in sorted(ids):
            ip_ids = sorted({m["text"].split(" ip id ", 1)[1].split()[0] for m in run_.monitor
                             if m["id"] == tid and m["kind"] == "packet" and " ip id " in m["text"]}, key=int)
            why += f"; nft monitor: trace id {tid} (the rule's event) also carried the packets of ip id {ip_ids}"
        expect(got == want, f"the {field} rewrite's rule {got}, want {want}; nft monitor trace saw {seen} accept "
               f"verdicts of handle {handle}{why}; rule_traces {run_.report.get('rule_traces')}")
        expect(seen == delta, f"nft monitor trace saw {seen} accept verdicts of handle {handle}, the counter {delta}")
        text = run_.text_report()
        by = f"by nat {chain} {rule}"
        expect(by in text, f"no '{by}' in the text report: {short(text, 2000)}")
        return f"{rewrites[0]['from']} → {rewrites[0]['to']} {by} (counter +{delta}, nft monitor {seen})"
    checks(f"{label}: the {field} rewrite names nat {chain} and the rule's iptables -t nat -S text, packets = its "
           "counter", named)


def check_trace_rules(scene: Scene, ips: dict[str, dict[str, str]]) -> None:
    """--trace-rules: the rule that dropped a lost packet, and the nat rule of a rewrite, as hoptrace names them,
    against the test's own `iptables -S` (the text), `iptables -L -v -x` (the counters, before and after) and `nft
    monitor trace` (the kernel's trace events, by the rule's handle)."""
    e, checks = scene.engine, scene.checks
    alpha = ips["alpha"]["bridge"]
    count = 3

    def pinged(r: RuleTraced) -> int:
        line = next((x for x in r.result.stdout.splitlines() if "packets transmitted" in x), "")
        expect(line and "cmd exit" in r.result.stdout, f"ping's output: {short(r.result.stdout)}")
        return int(line.split()[0])

    # 1. DOCKER-USER: a rule of the test's own drops alpha's pings to the far server.
    e.run_in(scene.E, "iptables", "-I", "DOCKER-USER", "-d", scene.server, "-p", "icmp", "-j", "DROP")
    try:
        rules = e.iptables_rules("DOCKER-USER")
        i = rule_index(rules, "DOCKER-USER", "-j", "DROP", "icmp")
        handle = e.nft_rule_handles("DOCKER-USER")[i]
        cmd = scene.docker_argv("exec", "alpha", "ping", "-c", str(count), "-i", PING_INTERVAL, "-W", "1",
                                scene.server)
        r = RuleTraced(scene, "rules-docker-user", "alpha", scene.server, cmd, [("filter", "DOCKER-USER")])
    finally:
        e.run_in(scene.E, "iptables", "-D", "DOCKER-USER", "-d", scene.server, "-p", "icmp", "-j", "DROP")
    label = "--trace-rules DOCKER-USER drop"
    if checks(f"{label}: hoptrace trace --trace-rules around alpha's pings exits 0", r.ran) is not None:
        flow = flow_check(scene, label, r, "icmp", src=alpha, dst=scene.server)
        if flow is not None:
            check_rule_drop(scene, label, r, flow, "DOCKER-USER", i, rules[i], handle, lambda: pinged(r))
    r.table_checks()

    # 2. Docker's network isolation: alpha (docker0) pings gamma (USER_NET), DOCKER-ISOLATION-STAGE-2 drops them.
    gamma = ips["gamma"][USER_NET]
    bridge = "br-" + e.docker("network", "inspect", "-f", "{{.Id}}", USER_NET).stdout.strip()[:12]
    chain = "DOCKER-ISOLATION-STAGE-2"
    rules = e.iptables_rules(chain)
    i = rule_index(rules, chain, "-o", bridge, "DROP")
    handle = e.nft_rule_handles(chain)[i]
    cmd = scene.docker_argv("exec", "alpha", "ping", "-c", str(count), "-i", PING_INTERVAL, "-W", "1", gamma)
    r = RuleTraced(scene, "rules-isolation", "alpha", gamma, cmd, [("filter", chain)])
    label = "--trace-rules isolation drop"
    if checks(f"{label}: hoptrace trace --trace-rules around alpha's pings to gamma exits 0", r.ran) is not None:
        flow = flow_check(scene, label, r, "icmp", src=alpha, dst=gamma)
        if flow is not None:
            check_rule_drop(scene, label, r, flow, chain, i, rules[i], handle, lambda: pinged(r))
    r.table_checks()

    # 3. MASQUERADE: a fetch from a container (docker0, USER_NET) to an httpd on the far server.
    www = scene.tmp / "server-www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("far server\n")
    httpd = e.popen_in(e.ns["server"], dockerlib.static_busybox(), "httpd", "-f", "-p", f"{scene.server}:{FAR_PORT}",
                       "-h", www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        e.run_in(e.ns["server"], sys.executable, "-c", "import socket, time\nfor _ in range(100):\n    try:\n"
                 f"        socket.create_connection(({scene.server!r}, {FAR_PORT}), 1).close(); break\n"
                 "    except OSError: time.sleep(0.05)")
        for container, network in (("alpha", "bridge"), ("gamma", USER_NET)):
            ip = ips[container][network]
            cfg = json.loads(e.docker("network", "inspect", network).stdout)[0]
            subnet = cfg["IPAM"]["Config"][0]["Subnet"]
            out_if = "docker0" if network == "bridge" else "br-" + cfg["Id"][:12]
            rules = e.iptables_rules("POSTROUTING", "nat")
            i = rule_index(rules, "POSTROUTING", "-s", subnet, out_if, "MASQUERADE")
            handle = e.nft_rule_handles("POSTROUTING", "nat")[i]
            cmd = scene.docker_argv("exec", container, "wget", "-q", "-O", "-", f"http://{scene.server}:{FAR_PORT}/")
            r = RuleTraced(scene, f"rules-masquerade-{container}", container, scene.server, cmd,
                           [("nat", "POSTROUTING")])
            label = f"--trace-rules MASQUERADE ({network})"
            if checks(f"{label}: hoptrace trace --trace-rules around {container}'s fetch from the far server exits 0, "
                      "page fetched", lambda: r.ran() if "far server" in r.result.stdout else
                      expect(False, f"stdout {short(r.result.stdout)}")) is not None:
                flow = flow_check(scene, label, r, "tcp", src=ip, dst=scene.server, dport=FAR_PORT)
                if flow is not None:
                    check_rule_rewrite(scene, label, r, flow, "src", "POSTROUTING", i, rules[i], handle)
            r.table_checks()
    finally:
        httpd.terminate()
        httpd.wait(5)

    # 4. DNAT: the far server fetches web's published port.
    rules = e.iptables_rules("DOCKER", "nat")
    i = rule_index(rules, "DOCKER", "--dport", str(HTTP_PORT), "DNAT")
    handle = e.nft_rule_handles("DOCKER", "nat")[i]
    url = f"http://{scene.uplink_ip}:{HTTP_PORT}/"
    fetch = ["ip", "netns", "exec", e.ns["server"], sys.executable, "-c",
             f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode(), end='')"]
    r = RuleTraced(scene, "rules-dnat", "web", scene.server, fetch, [("nat", "DOCKER")])
    label = "--trace-rules DNAT (published port)"
    if checks(f"{label}: hoptrace trace --trace-rules around the far server's fetch exits 0, page fetched",
              lambda: r.ran() if "hoptrace docker e2e" in r.result.stdout else
              expect(False, f"stdout {short(r.result.stdout)}")) is not None:
        flow = flow_check(scene, label, r, "tcp", dst=scene.uplink_ip, dport=HTTP_PORT)
        if flow is not None:
            check_rule_rewrite(scene, label, r, flow, "dst", "DOCKER", i, rules[i], handle)
    r.table_checks()


def run_scenario(checks: Checks, hoptrace: Path, engine: dockerlib.Engine, tmp: Path) -> None:
    scene = Scene(checks, hoptrace, engine, tmp)
    t0 = time.monotonic()
    ips = start_containers(scene)
    checks("engine: dockerd in its own namespace, containers from the offline busybox image",
           lambda: f"dockerd {engine.server_version} in {scene.E}, 9 containers in {time.monotonic() - t0:.1f} s")
    guarded(checks, "--container by name, short and full ID", check_identity, scene)
    guarded(checks, "default bridge", check_ping_from, scene, "default bridge", "alpha", ips["alpha"]["bridge"])

    def user_bridge(points: list[dict]) -> str:
        net_id = engine.docker("network", "inspect", "-f", "{{.Id}}", USER_NET).stdout.strip()
        expect(points[2]["ifname"] == "br-" + net_id[:12], f"bridge {points[2]['ifname']}, network {net_id[:12]}")
        return points[2]["ifname"]
    guarded(checks, "user-defined network", check_ping_from, scene, "user-defined network", "gamma",
            ips["gamma"][USER_NET], user_bridge)

    def routed_bridge(points: list[dict]) -> str:
        # delta is on docker0 (eth0, its default route) and htnet (eth1): the path is its route's.
        expect(points[0]["ifname"] == "eth0" and points[2]["ifname"] == "docker0", f"points {points}")
        return f"route to the server via {points[0]['ifname']} on {points[2]['ifname']}, eth1 on {USER_NET} not on it"
    guarded(checks, "two networks", check_ping_from, scene, "two networks", "delta", ips["delta"]["bridge"],
            routed_bridge)
    guarded(checks, "published port", check_published_port, scene, ips["web"]["bridge"])
    guarded(checks, "host-sent", check_host_sent, scene, ips["web"]["bridge"])
    guarded(checks, "docker-proxy", check_docker_proxy, scene, ips)
    guarded(checks, "same ICMP id", check_same_icmp_id, scene, {c: ips[c]["bridge"] for c in ("c1", "c2")})
    guarded(checks, "sidecar", check_sidecar, scene)
    guarded(checks, "stopped container", check_stopped, scene)
    guarded(checks, "destinations", check_destinations, scene, ips)
    guarded(checks, "--trace-rules", check_trace_rules, scene, ips)


def main() -> int:
    lablib.require_root_or_skip()
    require_engine_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(WATCHDOG_S)
    checks = Checks()
    t0 = time.monotonic()
    prefix = None
    machine_before = {p: os.path.lexists(p) for p in MACHINE_DOCKER_PATHS}
    with workdir("hoptrace-docker-") as tmp:
        engine = dockerlib.Engine()
        prefix = engine.prefix
        try:
            engine.up()
        except Exception as e:  # noqa: BLE001
            checks("engine: dockerd in its own namespace", lambda: expect(False, f"{type(e).__name__}: {e}"))
        else:
            with engine:
                guarded(checks, "docker engine scenario", run_scenario, checks, hoptrace, engine, tmp)

    def nothing_left() -> str:
        left = dockerlib.namespaces_of(prefix)
        left += [str(p) for p in (dockerlib.DATA_PARENT / prefix, dockerlib.OWNER_DIR / prefix) if p.exists()]
        procs = dockerlib.pids_of(prefix, set())
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if prefix in line]
        expect(not left and not procs and not mounts, f"left: {left}, processes {procs}, mounts {mounts}")
        made = [p for p in MACHINE_DOCKER_PATHS if os.path.lexists(p) and not machine_before[p]]
        expect(not made, f"created on the machine: {made}")
        return (f"no {prefix} namespace, root, process, cgroup member or mount; none of the machine's Docker paths "
                "created")
    checks("engine removed: nothing left behind", nothing_left)
    print(f"run time {time.monotonic() - t0:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
