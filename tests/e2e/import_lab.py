#!/usr/bin/env python3
"""End-to-end test: `hoptrace import` of captures taken at every point of two containers' paths.

In a fresh lab, tcpdump (nanosecond timestamps) runs at c1 eth0, c1's veth, c2 eth0, c2's veth,
docker0 and the uplink, plus `tcpdump -i any` in the host namespace, while both containers ping
the server with the same ICMP id and send UDP from the same source port (so MASQUERADE must
rewrite the second one's). The six per-interface files are imported; the JSON report must show:

- per flow: the translated tuple conntrack reports (the rewritten id/port, whatever the kernel
  picked), the masquerade rewrites forward (docker0 -> uplink) and back (uplink -> docker0), one
  journey per packet sent and per reply, nothing lost;
- per hop: every journey's consecutive sightings differ by what tshark reads from the same frames,
  to the nanosecond, and the hop statistics are those of tshark's timestamps (nearest rank);
- importing c1/c2 eth0 plus the host's `-i any` capture (`--link-names`) gives the same journeys.

Expected values come from what the test sent, `conntrack -L` and tshark; the database is only
read to find which frames hoptrace put in which journey.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). Prints one line per check and, last, exactly "N passed, M failed".
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from lablib import expect  # noqa: E402

checks = lablib.Checks()
# The six per-interface capture points (lab.points() may list more, e.g. a user-defined network's).
PER_INTERFACE_POINTS = ("c1-eth0", "c1-veth", "c2-eth0", "c2-veth", "docker0", "uplink")
PERCENTILES = (("p50_ns", 50), ("p90_ns", 90), ("p99_ns", 99))
TSHARK_FIELDS = ["frame.time_epoch", "sll.ifindex", "ip.id", "ip.proto", "ip.len", "icmp.seq", "data.data"]


# --------------------------------------------------------------------------------------------
# Independent evidence: the frames as tshark reads them


@dataclasses.dataclass(frozen=True)
class Frame:
    ts_ns: int
    ip_id: str
    proto: str
    ip_len: str
    icmp_seq: str
    data: str

    def identity(self) -> tuple[str, ...]:
        """What NAT and forwarding leave alone, as tshark shows it."""
        return (self.ip_id, self.proto, self.ip_len, self.icmp_seq, self.data)


def read_frames(pcap: Path) -> list[tuple[str, Frame]]:
    """(sll.ifindex or "", Frame) per frame of pcap, in file order."""
    rows = lablib.tshark_fields(pcap, TSHARK_FIELDS)
    return [(r[1], Frame(lablib.epoch_ns(r[0]), *r[2:])) for r in rows]


def frames_per_point(sources: dict[str, tuple[Path, str | None]]) -> dict[str, list[Frame]]:
    """point name -> its frames in file order. sources: point -> (file, ifindex or None); a
    `-i any` file holds several points, told apart by sll.ifindex."""
    cache: dict[Path, list[tuple[str, Frame]]] = {}
    out = {}
    for point, (path, ifindex) in sources.items():
        if path not in cache:
            cache[path] = read_frames(path)
        out[point] = [f for idx, f in cache[path] if ifindex is None or idx == ifindex]
    return out


# --------------------------------------------------------------------------------------------
# hoptrace's output: which frame is in which journey


@dataclasses.dataclass
class Sighting:
    point: str
    k: int  # index of the frame among its point's packets (= its frame in the capture, tshark order)
    hop: int
    ts_ns: int


@dataclasses.dataclass
class Journey:
    id: int
    flow_id: int
    direction: str
    sightings: list[Sighting]


@dataclasses.dataclass
class Db:
    path: Path
    points: dict[str, list[int]]  # name -> packets.ts_ns in id order
    ifindex: dict[str, int]
    journeys: dict[int, Journey]
    unmatched: int  # packets in no journey


def load_db(path: Path) -> Db:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        names = {pid: (name, ifindex) for pid, name, ifindex in con.execute("SELECT id, name, ifindex FROM points")}
        points: dict[str, list[int]] = {name: [] for name, _ in names.values()}
        journeys = {jid: Journey(jid, fid, d, []) for jid, fid, d in
                    con.execute("SELECT id, flow_id, direction FROM journeys")}
        unmatched = 0
        for point_id, ts, jid, hop in con.execute(
                "SELECT point_id, ts_ns, journey_id, hop FROM packets ORDER BY point_id, id"):
            name = names[point_id][0]
            k = len(points[name])
            points[name].append(ts)
            if jid is None:
                unmatched += 1
            else:
                journeys[jid].sightings.append(Sighting(name, k, hop, ts))
    for j in journeys.values():
        j.sightings.sort(key=lambda s: s.hop)
    return Db(path, points, {n: i for n, i in names.values()}, journeys, unmatched)


# --------------------------------------------------------------------------------------------
# Running hoptrace


def hoptrace_run(hoptrace: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"hoptrace {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}")
    return r


def import_and_report(hoptrace: Path, db: Path, specs: list[str], extra: list[str]) -> dict | None:
    """Imports specs into db (a check line), returns the JSON report or None."""
    result: dict = {}

    def run() -> str:
        r = hoptrace_run(hoptrace, "import", "--db", db, *extra, *specs)
        out = db.with_suffix(".json")
        hoptrace_run(hoptrace, "report", "--db", db, "--format", "json", "-o", out)
        report = json.loads(out.read_text())
        expect(report.get("schema") == "hoptrace-report/1", f"schema {report.get('schema')!r}")
        result["report"] = report
        return " | ".join(line for line in r.stderr.splitlines() if line.strip())
    checks(f"hoptrace import {' '.join(extra + [s.split('=')[0] + '=…' for s in specs])}", run)
    return result.get("report")


# --------------------------------------------------------------------------------------------
# Checks


def check_stored_frames(label: str, db: Db, frames: dict[str, list[Frame]]) -> None:
    def verdict() -> str:
        expect(set(db.points) == set(frames), f"points {sorted(db.points)}, want {sorted(frames)}")
        bad = []
        for name, stamps in db.points.items():
            want = [f.ts_ns for f in frames[name]]
            if len(stamps) != len(want):
                bad.append(f"{name}: {len(stamps)} packets stored, tshark reads {len(want)}")
            elif stamps != want:
                k = next(i for i, (a, b) in enumerate(zip(stamps, want)) if a != b)
                bad.append(f"{name}: packet {k} stored at {stamps[k]} ns, tshark {want[k]} ns")
        expect(not bad, "; ".join(bad))
        return ", ".join(f"{n} {len(s)}" for n, s in db.points.items()) + " packets, timestamps = tshark's"
    checks(f"{label}: every frame stored in file order with tshark's timestamp", verdict)


def tshark_deltas(db: Db, frames: dict[str, list[Frame]]) -> tuple[dict, list[str]]:
    """Hop samples from tshark's timestamps of the frames in each journey:
    {(flow_id, direction, from, to): [ns…]}, plus the problems met on the way."""
    samples: dict[tuple, list[int]] = collections.defaultdict(list)
    problems = []
    for j in db.journeys.values():
        s = j.sightings
        if [x.hop for x in s] != list(range(len(s))):
            problems.append(f"journey {j.id}: hops {[x.hop for x in s]}")
            continue
        if len({x.point for x in s}) != len(s):
            problems.append(f"journey {j.id}: a point twice: {[x.point for x in s]}")
        for a, b in zip(s, s[1:]):
            ours = b.ts_ns - a.ts_ns
            theirs = frames[b.point][b.k].ts_ns - frames[a.point][a.k].ts_ns
            if ours != theirs:
                problems.append(f"journey {j.id} {a.point}->{b.point}: {ours} ns, tshark {theirs} ns")
            samples[(j.flow_id, j.direction, a.point, b.point)].append(theirs)
    return samples, problems


def check_hop_deltas(label: str, db: Db, frames: dict[str, list[Frame]]) -> dict:
    samples, problems = tshark_deltas(db, frames)

    def verdict() -> str:
        expect(db.journeys, "no journeys")
        expect(not problems, f"{len(problems)} problems: " + "; ".join(problems[:5]))
        hops = sum(len(v) for v in samples.values())
        return f"{len(db.journeys)} journeys, {hops} hops, each = tshark's delta to the ns"
    checks(f"{label}: every hop of every journey = tshark's timestamp difference", verdict)

    def same_packet() -> str:
        bad = []
        for j in db.journeys.values():
            ids = {frames[s.point][s.k].identity() for s in j.sightings}
            if len(ids) != 1:
                bad.append(f"journey {j.id} at {[s.point for s in j.sightings]}: {sorted(ids)}")
        expect(not bad, f"{len(bad)} journeys mix packets: " + "; ".join(bad[:3]))
        return "IP id, length, ICMP seq and payload identical at every sighting"
    checks(f"{label}: each journey is one packet (tshark)", same_packet)
    return samples


def stats(values: list[int]) -> dict[str, int]:
    out = {"count": len(values), "min_ns": min(values), "max_ns": max(values)}
    for key, p in PERCENTILES:
        out[key] = lablib.nearest_rank(values, p)
    return out


def compare_hops(reported: list[dict], samples: dict[tuple[str, str, str], list[int]]) -> list[str]:
    got = {(h["from"], h["to"], h["direction"]): h for h in reported}
    want = {(f, t, d): stats(v) for (d, f, t), v in samples.items()}
    problems = []
    if set(got) != set(want):
        problems.append(f"hop entries {sorted(got)} vs recomputed {sorted(want)}")
    for key in sorted(set(got) & set(want)):
        diff = {k: (got[key].get(k), v) for k, v in want[key].items() if got[key].get(k) != v}
        if diff:
            wrong = ", ".join(f"{k} {a} want {b}" for k, (a, b) in diff.items())
            problems.append(f"{key[0]}->{key[1]} {key[2]}: {wrong}")
    return problems


def check_hop_stats(label: str, report: dict, samples: dict) -> None:
    def per_flow() -> str:
        problems, n = [], 0
        expect(report["flows"], "no flows in the report")
        for flow in report["flows"]:
            mine = {(d, f, t): v for (fid, d, f, t), v in samples.items() if fid == flow["id"]}
            problems += [f"flow {flow['id']} {p}" for p in compare_hops(flow["hops"], mine)]
            n += len(flow["hops"])
        expect(not problems, "; ".join(problems[:6]))
        return f"{n} hop entries in {len(report['flows'])} flows: count/min/p50/p90/p99/max = tshark's"
    checks(f"{label}: per-flow hop statistics = tshark's (nearest rank)", per_flow)

    def totals() -> str:
        merged: dict[tuple, list[int]] = collections.defaultdict(list)
        for (_, d, f, t), v in samples.items():
            merged[(d, f, t)] += v
        expect("hop_totals" in report, "no hop_totals in the report")
        problems = compare_hops(report["hop_totals"], merged)
        expect(not problems, "; ".join(problems[:6]))
        return f"{len(report['hop_totals'])} entries"
    checks(f"{label}: hop_totals = tshark's over all flows", totals)


def check_flows(lab: lablib.Lab, report: dict, conntrack: list[lablib.ConntrackEntry],
                pings: dict[str, lablib.PingResult], udp: dict[str, lablib.UdpResult]) -> None:
    host, server = lab.ip["host"], lab.ip["server"]
    fwd_between, reply_between = ["docker0", "uplink"], ["uplink", "docker0"]
    for proto in ("icmp", "udp"):
        translated_ports = {}
        for c in ("c1", "c2"):
            cip = lab.ip[c]

            def verdict(c=c, cip=cip, proto=proto) -> str:
                entries = [e for e in conntrack if e.proto == proto and e.original.src == cip
                           and e.original.dst == server]
                expect(len(entries) == 1, f"conntrack has {len(entries)} {proto} entries from {cip}")
                e, t = entries[0], entries[0].translated()
                if proto == "icmp":
                    key, reply_key, sent = "id", "id", lablib.PING_IDENT
                    expect(e.original.id == sent, f"conntrack original id {e.original.id}, sent {sent}")
                    original = {"src": cip, "dst": server, "id": sent}
                    translated = {"src": t.src, "dst": t.dst, "id": t.id}
                    n_fwd, n_reply = pings[c].transmitted, pings[c].received
                    new = t.id
                else:
                    key, reply_key, sent = "sport", "dport", lablib.UDP_SPORT
                    expect(e.original.sport == sent, f"conntrack original sport {e.original.sport}, sent {sent}")
                    original = {"src": cip, "dst": server, "sport": sent, "dport": lablib.UDP_DPORT}
                    translated = {"src": t.src, "dst": t.dst, "sport": t.sport, "dport": t.dport}
                    n_fwd, n_reply = len(udp[c].sent), sum(udp[c].echoed)
                    new = t.sport
                translated_ports[c] = new
                expect(t.src == host, f"conntrack translates {cip} to {t.src}, not the host's {host}")
                flows = [f for f in report["flows"] if f["proto"] == proto and f["original"].get("src") == cip
                         and f["original"].get("dst") == server]
                expect(len(flows) == 1, f"{len(flows)} {proto} flows from {cip} in the report")
                f = flows[0]
                expect(f["original"] == original, f"original {f['original']}, want {original}")
                expect(f["translated"] == translated, f"translated {f['translated']}, want {translated} (conntrack)")
                want = {("src", cip, host, *fwd_between, "forward"), ("dst", host, cip, *reply_between, "reply")}
                if new != sent:
                    want |= {(key, sent, new, *fwd_between, "forward"), (reply_key, new, sent, *reply_between, "reply")}
                got = {(w["field"], w["from"], w["to"], *w["between"], w["direction"]) for w in f["rewrites"]}
                expect(got == want, f"rewrites {sorted(got, key=str)}, want {sorted(want, key=str)}")
                expect(f.get("forward_journeys") == n_fwd and f.get("reply_journeys") == n_reply,
                       f"journeys forward {f.get('forward_journeys')} reply {f.get('reply_journeys')}, "
                       f"sent {n_fwd}, answered {n_reply}")
                expect(f["lost"] == [], f"lost {f['lost']}")
                path = [f"{c}-eth0", f"{c}-veth", "docker0", "uplink"]
                expect(f.get("path") == path, f"path {f.get('path')}, want {path}")
                return (f"{key} {sent} -> {new}{' (rewritten)' if new != sent else ''}, src -> {host}; "
                        f"{n_fwd} forward + {n_reply} reply journeys, none lost")
            checks(f"{proto} flow from {c}: conntrack's translation, rewrites, journeys", verdict)

        def clash(proto=proto) -> str:
            expect(len(translated_ports) == 2, "a flow check failed before")
            expect(translated_ports["c1"] != translated_ports["c2"], f"both translated to {translated_ports}")
            return f"translated {'id' if proto == 'icmp' else 'sport'}s {translated_ports}"
        checks(f"{proto}: the kernel told the two containers apart (the rewrite was needed)", clash)


def journey_signatures(db: Db, rename: dict[str, str], window: tuple[int, int]) -> tuple[collections.Counter, int]:
    """Journeys as comparable values: (direction, anchor, points, deltas). The anchor is the
    sighting at a container's eth0 (the same file in both imports), else the first sighting.
    Only journeys that start inside `window` (when every capture was running) are compared."""
    out: collections.Counter = collections.Counter()
    outside = 0
    for j in db.journeys.values():
        s = j.sightings
        if not (window[0] <= s[0].ts_ns <= window[1]):
            outside += 1
            continue
        names = tuple(rename.get(x.point, x.point) for x in s)
        eth0 = [x for x in s if x.point.endswith("-eth0")]
        anchor = (eth0[0].point, eth0[0].k) if eth0 else (names[0], s[0].ts_ns)
        deltas = tuple(b.ts_ns - a.ts_ns for a, b in zip(s, s[1:]))
        out[(j.direction, anchor, names, deltas)] += 1
    return out, outside


def check_same_journeys(lab: lablib.Lab, per_if: Db, any_db: Db, window: tuple[int, int]) -> None:
    rename = {f"host/{lab.veth['c1']}": "c1-veth", f"host/{lab.veth['c2']}": "c2-veth",
              f"host/{lab.ifname['bridge']}": "docker0", f"host/{lab.ifname['uplink']}": "uplink"}

    def verdict() -> str:
        a, out_a = journey_signatures(per_if, {}, window)
        b, out_b = journey_signatures(any_db, rename, window)
        expect(sum(a.values()) > 0, "no journeys")
        only_a, only_b = a - b, b - a
        expect(not only_a and not only_b,
               f"{sum(a.values())} vs {sum(b.values())} journeys; only per-interface: "
               f"{list(only_a.elements())[:3]}; only -i any: {list(only_b.elements())[:3]}")
        dirs = collections.Counter(k[0] for k in a.elements())
        return (f"{sum(a.values())} journeys ({dirs['forward']} forward, {dirs['reply']} reply), same points "
                f"and deltas; outside the traffic window: {out_a} vs {out_b}")
    checks("-i any + --link-names import: the same journeys as the per-interface import", verdict)


def check_link_names(lab: lablib.Lab, any_db: Db) -> None:
    links = parse_links(lab.links("host"))

    def verdict() -> str:
        host_points = {n: i for n, i in any_db.ifindex.items() if n.startswith("host/")}
        want = {f"host/{n}" for n in (lab.veth["c1"], lab.veth["c2"], lab.ifname["bridge"], lab.ifname["uplink"])}
        expect(want <= set(host_points), f"points {sorted(host_points)}, want {sorted(want)}")
        wrong = {n: i for n, i in host_points.items() if links.get(i) != n[len("host/"):]}
        expect(not wrong, f"names not those of their ifindex in {lab.ns['host']}: {wrong}")
        return ", ".join(f"{n} (if{i})" for n, i in sorted(host_points.items(), key=lambda x: x[1]))
    checks("--link-names: -i any points named after the host's interfaces", verdict)


def parse_links(text: str) -> dict[int, str]:
    """`ip -o link` -> {ifindex: name}."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[0].strip().isdigit():
            out[int(parts[0])] = parts[1].strip().split("@")[0]
    return out


# --------------------------------------------------------------------------------------------


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(float(os.environ.get("HOPTRACE_E2E_DEADLINE_S", "240")))
    # The plain lab: a user-defined network's bridge would add frames the per-interface captures lack.
    os.environ["HOPTRACE_LAB_USERNET"] = "0"
    with tempfile.TemporaryDirectory(prefix="hoptrace-import-lab-") as tmpdir:
        return run_checks(hoptrace, Path(tmpdir))


def run_checks(hoptrace: Path, tmp: Path) -> int:
    with lablib.Lab() as lab:
        lab.flush_conntrack()
        points = [p for p in lab.points() if p[0] in PER_INTERFACE_POINTS]
        caps = [lablib.Tcpdump(ns, ifname, tmp / f"{name}.pcap") for name, ns, ifname in points]
        caps.append(lablib.tcpdump_any(lab.ns["host"], tmp / "host-any.pcap"))
        try:
            t_start = time.time_ns()  # the capture clock (CLOCK_REALTIME)
            pings = lablib.ping_both(lab)
            udp = lablib.udp_both(lab)
            t_end = time.time_ns()
            conntrack = lab.conntrack()
        finally:
            lablib.stop_all(caps)
        drops = {c.path.name: c.dropped for c in caps if c.dropped}

        def traffic() -> str:
            expect(not drops, f"tcpdump kernel drops: {drops}")
            for c in ("c1", "c2"):
                p, u = pings[c], udp[c]
                expect(p.transmitted == p.received == lablib.PING_COUNT, f"{c} ping: {p.output.strip()[-200:]}")
                expect(all(u.echoed) and len(u.echoed) == lablib.UDP_COUNT, f"{c} udp echoed {u.echoed}")
            return (f"lab {lab.prefix}: each container {lablib.PING_COUNT} pings answered, "
                    f"{lablib.UDP_COUNT} datagrams echoed; conntrack: "
                    + "; ".join(f"{e.proto} {e.original.src} -> {e.translated().src} "
                                f"{e.translated().id if e.proto == 'icmp' else e.translated().sport}"
                                for e in conntrack if e.proto in ("icmp", "udp")))
        checks("traffic: pings and UDP echoes from both containers", traffic)

        per_if_specs = [f"{name}={tmp / f'{name}.pcap'}" for name, _, _ in points]
        per_if_db = tmp / "per-interface.db"
        report = import_and_report(hoptrace, per_if_db, per_if_specs, [])
        any_db_path = tmp / "host-any.db"
        any_specs = [f"c1-eth0={tmp / 'c1-eth0.pcap'}", f"c2-eth0={tmp / 'c2-eth0.pcap'}",
                     f"host={tmp / 'host-any.pcap'}"]
        any_report = import_and_report(hoptrace, any_db_path, any_specs, ["--link-names", lab.ns["host"]])
        links = parse_links(lab.links("host"))
        if any_report is not None:
            any_db = load_db(any_db_path)
            check_link_names(lab, any_db)

    # The lab is gone; everything below reads files.
    if report is not None:
        db = load_db(per_if_db)
        frames = frames_per_point({name: (tmp / f"{name}.pcap", None) for name, _, _ in points})
        check_stored_frames("per-interface", db, frames)
        check_flows(lab, report, conntrack, pings, udp)
        samples = check_hop_deltas("per-interface", db, frames)
        check_hop_stats("per-interface", report, samples)
    if any_report is not None:
        # Points of the -i any file: one per interface index tshark sees, named after the host's
        # interface of that index (`ip -o link`, read while the lab was up).
        sources: dict[str, tuple[Path, str | None]] = {
            "c1-eth0": (tmp / "c1-eth0.pcap", None), "c2-eth0": (tmp / "c2-eth0.pcap", None)}
        for idx in sorted({r[0] for r in lablib.tshark_fields(tmp / "host-any.pcap", ["sll.ifindex"])}, key=int):
            sources[f"host/{links.get(int(idx), 'if' + idx)}"] = (tmp / "host-any.pcap", idx)
        any_frames = frames_per_point(sources)
        check_stored_frames("-i any", any_db, any_frames)
        any_samples = check_hop_deltas("-i any", any_db, any_frames)
        check_hop_stats("-i any", any_report, any_samples)
        if report is not None:
            check_same_journeys(lab, db, any_db, (t_start, t_end))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
