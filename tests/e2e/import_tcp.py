#!/usr/bin/env python3
"""End-to-end test: `hoptrace import` of a TCP upload captured at every point of c1's path.

c1 uploads 4 MiB to the server (through the host's MASQUERADE) while tcpdump captures at c1 eth0,
c1's veth, docker0 and the uplink; the veths and the bridge pass GSO super-packets (frames longer
than the MTU) along unsegmented. After `hoptrace import`, each TCP packet of the connection at
c1 eth0 (counted by tshark, both directions) must be in exactly one journey of the TCP flow, each
journey of that flow must hold one sighting at each of the four points, the flow must have as many
journeys as tshark counts packets, nothing may be reported lost, and the masquerade rewrite must be
reported as conntrack saw it.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). Prints one line per check and, last, exactly "N passed, M failed".
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from lablib import expect  # noqa: E402

UPLOAD_MIB = 4
MAX_ETHERNET_FRAME = 1514  # 1500 MTU + 14: anything longer is a GSO super-packet
POINTS = ("c1-eth0", "c1-veth", "docker0", "uplink")
# What NAT and forwarding leave alone in a TCP segment, as tshark shows it.
IDENTITY_FIELDS = ["ip.id", "ip.len", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len"]

checks = lablib.Checks()


def hoptrace_run(hoptrace: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"hoptrace {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()}")
    return r


def connection_filter(client: str, server: str) -> str:
    """tshark display filter for the upload's packets, both directions, as seen with these addresses."""
    return f"tcp.port == {lablib.TCP_PORT} && ip.addr == {client} && ip.addr == {server}"


def load_journeys(db: Path) -> tuple[dict[str, list[int | None]], dict[int, tuple[int, str, list[tuple[str, int]]]]]:
    """From hoptrace's database: per point, the journey of each packet in id (= file) order; per
    journey, (flow id, direction, [(point, k)] in hop order) with k the packet's index at its point."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        names = dict(con.execute("SELECT id, name FROM points"))
        per_point: dict[str, list[int | None]] = {n: [] for n in names.values()}
        journeys = {jid: (fid, d, []) for jid, fid, d in con.execute("SELECT id, flow_id, direction FROM journeys")}
        hops: dict[int, list[tuple[int, str, int]]] = collections.defaultdict(list)
        for point_id, jid, hop in con.execute("SELECT point_id, journey_id, hop FROM packets ORDER BY point_id, id"):
            name = names[point_id]
            k = len(per_point[name])
            per_point[name].append(jid)
            if jid is not None:
                hops[jid].append((hop, name, k))
    for jid, (_, _, sightings) in journeys.items():
        sightings.extend((name, k) for _, name, k in sorted(hops[jid]))
    return per_point, journeys


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(float(os.environ.get("HOPTRACE_E2E_DEADLINE_S", "300")))
    with tempfile.TemporaryDirectory(prefix="hoptrace-import-tcp-") as tmpdir:
        return run_checks(hoptrace, Path(tmpdir))


def run_checks(hoptrace: Path, tmp: Path) -> int:
    with lablib.Lab() as lab:
        lab.flush_conntrack()
        points = [p for p in lab.points() if p[0] in POINTS]
        caps = [lablib.Tcpdump(ns, ifname, tmp / f"{name}.pcap") for name, ns, ifname in points]
        try:
            received = lablib.tcp_upload(lab, UPLOAD_MIB)
            conntrack = lab.conntrack()
        finally:
            lablib.stop_all(caps)
        drops = {c.path.name: c.dropped for c in caps if c.dropped}
        c1, server, host = lab.ip["c1"], lab.ip["server"], lab.ip["host"]

        def upload() -> str:
            expect(received == UPLOAD_MIB << 20, f"server received {received} bytes, sent {UPLOAD_MIB << 20}")
            expect(not drops, f"tcpdump kernel drops: {drops}")
            return f"lab {lab.prefix}: {received} bytes from {c1} to {server}:{lablib.TCP_PORT}, no capture drops"
        checks(f"tcp upload of {UPLOAD_MIB} MiB", upload)

    files = {name: tmp / f"{name}.pcap" for name, _, _ in points}
    conn = connection_filter(c1, server)
    # At c1 eth0 the connection is c1 <-> server; after the uplink it is host <-> server.
    conn_at = {name: conn if name != "uplink" else connection_filter(host, server) for name in files}
    fields = ["frame.number", "frame.len", *IDENTITY_FIELDS]
    rows = {name: lablib.tshark_fields(path, fields, conn_at[name]) for name, path in files.items()}
    eth0_rows = rows["c1-eth0"]

    big = {name: sum(1 for r in rs if int(r[1]) > MAX_ETHERNET_FRAME) for name, rs in rows.items()}
    if big["c1-eth0"]:
        checks("GSO super-packets at c1 eth0 (tshark: frames longer than 1514 bytes)",
               lambda: f"{big['c1-eth0']} of {len(eth0_rows)} frames; longest "
                       f"{max(int(r[1]) for r in eth0_rows)} bytes; elsewhere: "
                       + ", ".join(f"{n} {c}" for n, c in big.items() if n != "c1-eth0"))
    else:
        print(f"NOTE no frame longer than {MAX_ETHERNET_FRAME} bytes at c1 eth0 (GSO off here?): "
              f"the test runs without super-packets", flush=True)

    db = tmp / "tcp.db"
    report: dict = {}

    def do_import() -> str:
        r = hoptrace_run(hoptrace, "import", "--db", db, *[f"{n}={p}" for n, p in files.items()])
        hoptrace_run(hoptrace, "report", "--db", db, "--format", "json", "-o", tmp / "report.json")
        report.update(json.loads((tmp / "report.json").read_text()))
        return " | ".join(line for line in r.stderr.splitlines() if line.strip())
    if checks("hoptrace import " + " ".join(f"{n}=…" for n in files), do_import) is None:
        return checks.summary()

    flows = [f for f in report["flows"] if f["proto"] == "tcp" and f["original"].get("src") == c1
             and f["original"].get("dst") == server and f["original"].get("dport") == lablib.TCP_PORT]
    flow = flows[0] if len(flows) == 1 else None
    checks("the report has the upload's TCP flow",
           lambda: expect(flow is not None, f"{len(flows)} tcp flows {c1} -> {server}:{lablib.TCP_PORT}: "
                                            f"{[f['original'] for f in report['flows']]}")
           or f"flow {flow['id']}: {flow['original']} -> {flow['translated']}")
    if flow is None:
        return checks.summary()
    per_point, journeys = load_journeys(db)
    mine = {jid: j for jid, j in journeys.items() if j[0] == flow["id"]}

    def eth0_packets() -> str:
        at_eth0 = per_point.get("c1-eth0", [])
        problems = []
        for r in eth0_rows:
            k = int(r[0]) - 1  # frame.number counts from 1, in file order
            jid = at_eth0[k] if k < len(at_eth0) else "missing"
            if jid not in mine:
                problems.append(f"frame {r[0]}: journey {jid}")
        expect(len(at_eth0) == lablib.packet_count(files["c1-eth0"]),
               f"{len(at_eth0)} packets stored at c1-eth0, capinfos counts {lablib.packet_count(files['c1-eth0'])}")
        expect(not problems, f"{len(problems)} of {len(eth0_rows)} packets not in a journey of the flow: "
                             + "; ".join(problems[:5]))
        # A packet row holds one journey id; a journey holding one eth0 packet twice is caught below.
        return f"all {len(eth0_rows)} packets of the connection (tshark) in a journey of flow {flow['id']}"
    checks("every TCP packet at c1 eth0 is in exactly one journey of the flow", eth0_packets)

    def four_sightings() -> str:
        bad = [(jid, [p for p, _ in s]) for jid, (_, _, s) in mine.items()
               if sorted(p for p, _ in s) != sorted(POINTS)]
        expect(mine, "the flow has no journeys")
        expect(not bad, f"{len(bad)} of {len(mine)} journeys without one sighting per point: {bad[:4]}")
        dirs = collections.Counter(d for _, d, _ in mine.values())
        return f"{len(mine)} journeys ({dirs['forward']} forward, {dirs['reply']} reply), each at {', '.join(POINTS)}"
    checks("every journey of the flow: 4 sightings, one per point", four_sightings)

    def same_packet() -> str:
        # Index the tshark rows of each point by frame number, then compare the stable fields.
        by_frame = {name: {int(r[0]) - 1: r[2:] for r in rs} for name, rs in rows.items()}
        bad = []
        for jid, (_, _, s) in mine.items():
            seen = {by_frame[p].get(k, ("not the connection per tshark", p)) for p, k in s}
            if len(seen) != 1:
                bad.append(f"journey {jid}: {sorted(seen)}")
        expect(not bad, f"{len(bad)} journeys mix packets: " + "; ".join(bad[:3]))
        return f"{', '.join(IDENTITY_FIELDS)} identical at every sighting (tshark)"
    checks("each journey of the flow is one packet", same_packet)

    def journey_count() -> str:
        n = len(eth0_rows)
        expect(len(mine) == n, f"{len(mine)} journeys in the database, tshark counts {n} packets at c1 eth0")
        expect(flow["journeys"] == n, f"report: {flow['journeys']} journeys, tshark counts {n} packets at c1 eth0")
        return f"{n} journeys = {n} packets of the connection at c1 eth0"
    checks("journeys of the TCP flow = tshark's packet count at c1 eth0", journey_count)

    def directions() -> str:
        up = len(lablib.tshark_fields(files["c1-eth0"], ["frame.number"], f"{conn} && ip.src == {c1}"))
        down = len(eth0_rows) - up
        expect((flow.get("forward_journeys"), flow.get("reply_journeys")) == (up, down),
               f"forward {flow.get('forward_journeys')}, reply {flow.get('reply_journeys')}; "
               f"tshark: {up} from c1, {down} to c1")
        return f"{up} forward (c1 -> server), {down} reply"
    checks("forward/reply journeys = tshark's packets per direction", directions)

    def no_losses() -> str:
        lost = {f["id"]: f["lost"] for f in report["flows"] if f["lost"]}
        expect(not lost, f"losses reported: {lost}")
        return f"no flow of {len(report['flows'])} has losses"
    checks("no losses in the report", no_losses)

    def masquerade() -> str:
        entries = [e for e in conntrack if e.proto == "tcp" and e.original.src == c1 and e.original.dst == server
                   and e.original.dport == lablib.TCP_PORT]
        expect(len(entries) == 1, f"conntrack has {len(entries)} tcp entries {c1} -> {server}")
        e, t = entries[0], entries[0].translated()
        expect(t.src == host, f"conntrack translates {c1} to {t.src}, not {host}")
        original = {"src": c1, "dst": server, "sport": e.original.sport, "dport": lablib.TCP_PORT}
        translated = {"src": t.src, "dst": t.dst, "sport": t.sport, "dport": t.dport}
        expect(flow["original"] == original, f"original {flow['original']}, conntrack {original}")
        expect(flow["translated"] == translated, f"translated {flow['translated']}, conntrack {translated}")
        want = {("src", c1, host, "docker0", "uplink", "forward"), ("dst", host, c1, "uplink", "docker0", "reply")}
        if t.sport != e.original.sport:
            want |= {("sport", e.original.sport, t.sport, "docker0", "uplink", "forward"),
                     ("dport", t.sport, e.original.sport, "uplink", "docker0", "reply")}
        got = {(w["field"], w["from"], w["to"], *w["between"], w["direction"]) for w in flow["rewrites"]}
        expect(got == want, f"rewrites {sorted(got, key=str)}, want {sorted(want, key=str)}")
        return (f"src {c1} -> {host} between docker0 and uplink, back in reply; sport "
                f"{e.original.sport} -> {t.sport} (conntrack)")
    checks("the masquerade rewrite is reported as conntrack saw it", masquerade)

    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
