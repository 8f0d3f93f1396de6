#!/usr/bin/env python3
"""End-to-end test: every packet hoptrace captures live is stored, at every point.

`hoptrace capture --duration` runs on c1's four points while tcpdump (nanosecond) runs on the same
four over a longer window (started before, stopped after). c1 sends N small UDP datagrams, paced,
each carrying a marker unique to this run and a sequence number, to a sink on the server. Per point:
  - points.packets = rows of the packets table for that point = what hoptrace printed on stderr;
  - kernel drops 0 (stored and printed), and tcpdump dropped nothing either;
  - the datagrams carrying the marker, found in the stored raw bytes, are exactly seq 0…N-1, as
    tshark finds them in tcpdump's file for that point;
  - every packet tcpdump saw inside hoptrace's window at that point is stored;
and the correlated flow has N forward journeys, each seen at all four points.

Then the kernel drops: c1 floods FLOOD_N datagrams, unpaced, at a capture with a 1 MiB buffer
(--buffer-mb 1), so the ring overflows. Per point, packets stored + kernel drops (stored and
printed) must account for every packet the interface passed, as its own counters say (`ip -s
link`: rx + tx, read before and after the capture; a packet socket sees both directions).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
Registered RUN_SERIAL: it counts packets and must not share two cores with other captures.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Background, Checks, expect, expected_points, guarded, netns_left,  # noqa: E402
                         printed_summary, query, short, tcpdumps_on, udp_sink, workdir, PACED_UDP_SENDER)

N = 2000
GAP_S = 0.001  # 1000 datagrams a second
DPORT = 47001
SPORT = 47000
DURATION_S = 6
FLOOD_N = 100_000
FLOOD_DPORT = 47002


def seqs_in(payloads, marker: bytes) -> list[int]:
    pattern = re.compile(re.escape(marker) + rb" seq=(\d{6})\n")
    out = []
    for p in payloads:
        m = pattern.search(p)
        if m:
            out.append(int(m.group(1)))
    return out


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(110)
    checks = Checks()
    prefixes = []
    marker = f"htcount-{secrets.token_hex(6)}".encode()
    with workdir("hoptrace-live-counts-") as tmp, lablib.Lab() as lab:
        prefixes.append(lab.prefix)
        guarded(checks, f"{N} datagrams, hoptrace capture vs tcpdump", count_run, checks, hoptrace, lab, tmp, marker)
        guarded(checks, "a flood into a 1 MiB buffer", flood_run, checks, hoptrace, lab, tmp, marker)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


def count_run(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, marker: bytes) -> None:
    db = tmp / "counts.db"
    points = expected_points(lab, ("c1",))
    names = [p[0] for p in points]
    # Resolve the neighbours first (c1 → docker0, host → router), so no datagram waits for ARP.
    lab.run("c1", "ping", "-n", "-c", "1", "-W", "2", lab.ip["server"])
    with udp_sink(lab, DPORT):
        caps = tcpdumps_on(lab, points, tmp)
        try:
            capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--host-netns",
                                 lab.ns["host"], "--duration", DURATION_S)
            try:
                sent = lab.run("c1", sys.executable, "-c", PACED_UDP_SENDER, lab.ip["server"], SPORT, DPORT, N,
                               marker.decode(), GAP_S, timeout=60)
                rc, _out, err = capture.wait(timeout=DURATION_S + 60)
            finally:
                capture.kill()
        finally:
            lablib.stop_all(list(caps.values()), settle=0.5)

    if checks("hoptrace capture --duration exits 0 after sending",
              lambda: expect(rc == 0, f"exit {rc}: {short(err)}")
              or f"{sent.stdout.strip()} datagrams sent; stop reason "
                 f"{query(db, 'SELECT value FROM meta WHERE key = ?', ('stop_reason',))}") is None:
        return checks.summary()

    stored = dict(query(db, "SELECT name, packets FROM points"))
    drops = dict(query(db, "SELECT name, kernel_drops FROM points"))
    rows = dict(query(db, "SELECT pt.name, COUNT(p.id) FROM points pt LEFT JOIN packets p ON p.point_id = pt.id "
                          "GROUP BY pt.id"))
    printed = printed_summary(err)
    checks("the points are c1's four", lambda: expect(sorted(stored) == sorted(names), f"points {sorted(stored)}")
           or ", ".join(names))

    for i, name in enumerate(names):
        cap = caps[name]

        def counters(name=name) -> str:
            expect(name in printed, f"no summary line for {name} on stderr: {short(err)}")
            expect(stored[name] == rows[name] == printed[name][0],
                   f"points.packets {stored[name]}, packets rows {rows[name]}, printed {printed[name][0]}")
            return f"{stored[name]} packets (points.packets = rows = printed)"
        checks(f"{name}: packets counted = stored = printed", counters)

        def no_drops(name=name, cap=cap) -> str:
            expect(drops[name] == 0 and printed[name][1] == 0,
                   f"hoptrace kernel drops: stored {drops[name]}, printed {printed[name][1]}")
            expect(cap.dropped == 0, f"tcpdump dropped {cap.dropped}")
            return "0 kernel drops (hoptrace and tcpdump)"
        checks(f"{name}: no kernel drops", no_drops)

        def marker_count(name=name, cap=cap) -> str:
            raws = [r[0] for r in query(db, "SELECT p.raw FROM packets p JOIN points pt ON pt.id = p.point_id "
                                            "WHERE pt.name = ? AND p.proto = 17 AND instr(p.raw, ?) > 0",
                                        (name, marker))]
            mine = seqs_in(raws, marker)
            theirs = seqs_in((bytes.fromhex(r[0].replace(":", "")) for r in lablib.tshark_fields(
                cap.path, ["udp.payload"], f'udp.port == {DPORT} && frame contains "{marker.decode()}"')), marker)
            expect(len(theirs) == N and sorted(theirs) == list(range(N)),
                   f"tcpdump's file has {len(theirs)} datagrams ({len(set(theirs))} distinct), want seq 0…{N - 1}")
            expect(len(mine) == N and sorted(mine) == list(range(N)),
                   f"hoptrace stored {len(mine)} datagrams ({len(set(mine))} distinct) with the marker, "
                   f"tcpdump {len(theirs)}; missing seqs {sorted(set(range(N)) - set(mine))[:10]}")
            return f"{len(mine)} = tshark's {len(theirs)} = {N} sent, seq 0…{N - 1} each once"
        checks(f"{name}: the {N} marked datagrams, as in tcpdump's file", marker_count)

        def window(name=name, cap=cap) -> str:
            first, last = query(db, "SELECT MIN(ts_ns), MAX(ts_ns) FROM packets p JOIN points pt "
                                    "ON pt.id = p.point_id WHERE pt.name = ?", (name,))[0]
            stamps = [lablib.epoch_ns(r[0]) for r in lablib.tshark_fields(cap.path, ["frame.time_epoch"])]
            inside = [t for t in stamps if first <= t <= last]
            expect(len(inside) == rows[name], f"tcpdump saw {len(inside)} packets between hoptrace's first and "
                                              f"last at this point, hoptrace stored {rows[name]}")
            total = lablib.packet_count(cap.path)
            return (f"tcpdump: {len(inside)} packets inside hoptrace's window (of {total}), "
                    f"hoptrace stored {rows[name]}")
        checks(f"{name}: nothing tcpdump saw in hoptrace's window is missing", window)

    def journeys() -> str:
        flows = query(db, "SELECT id, packets, journeys FROM flows WHERE proto = 17 AND orig_src = ? "
                          "AND orig_sport = ? AND orig_dport = ?", (lab.ip["c1"], SPORT, DPORT))
        expect(len(flows) == 1, f"flows of the datagrams: {flows}")
        fid, packets, n_journeys = flows[0]
        by_len = dict(query(db, "SELECT sightings, COUNT(*) FROM journeys WHERE flow_id = ? AND "
                                "direction = 'forward' GROUP BY sightings", (fid,)))
        expect(by_len == {len(names): N}, f"forward journeys by number of sightings: {by_len}, want "
                                          f"{{{len(names)}: {N}}}")
        expect(packets == N * len(names), f"flow packets {packets}, want {N * len(names)}")
        return f"{N} forward journeys, each at all {len(names)} points"
    checks("correlate: one journey per datagram across the four points", journeys)



def link_packets(lab: lablib.Lab, points: list[tuple[str, str, str, str]]) -> dict[str, int]:
    """rx + tx packets of each point's interface, from `ip -s -j link` in its namespace."""
    out = {}
    for name, _role, ns, ifname in points:
        r = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", ifname], capture_output=True,
                           text=True, check=True)
        stats = json.loads(r.stdout)[0]["stats64"]
        out[name] = stats["rx"]["packets"] + stats["tx"]["packets"]
    return out


def flood_run(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, marker: bytes) -> None:
    db = tmp / "flood.db"
    points = expected_points(lab, ("c1",))
    with udp_sink(lab, FLOOD_DPORT):
        before = link_packets(lab, points)
        capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"],
                             "--buffer-mb", 1, "--duration", DURATION_S)
        try:
            lab.run("c1", sys.executable, "-c", PACED_UDP_SENDER, lab.ip["server"], SPORT + 2, FLOOD_DPORT, FLOOD_N,
                    marker.decode() + "-flood", 0, timeout=60)
            rc, _out, err = capture.wait(timeout=DURATION_S + 60)
        finally:
            capture.kill()
        after = link_packets(lab, points)
    if checks(f"capture --buffer-mb 1 during a flood of {FLOOD_N} datagrams exits 0",
              lambda: expect(rc == 0, f"exit {rc}: {short(err)}") or "exit 0") is None:
        return
    stored = dict(query(db, "SELECT name, packets FROM points"))
    drops = dict(query(db, "SELECT name, kernel_drops FROM points"))
    rows = dict(query(db, "SELECT pt.name, COUNT(p.id) FROM points pt LEFT JOIN packets p ON p.point_id = pt.id "
                          "GROUP BY pt.id"))
    printed = printed_summary(err)
    for name, *_ in points:
        def accounted(name=name) -> str:
            passed = after[name] - before[name]
            expect(name in printed, f"no summary line on stderr: {short(err)}")
            expect(stored[name] == rows[name] == printed[name][0],
                   f"points.packets {stored[name]}, rows {rows[name]}, printed {printed[name][0]}")
            expect(drops[name] == printed[name][1], f"kernel drops stored {drops[name]}, printed {printed[name][1]}")
            seen = stored[name] + drops[name]
            # The counters were read just before and after hoptrace's window: a stray packet (ARP) may
            # cross an interface in between.
            expect(FLOOD_N <= seen <= passed <= seen + 5,
                   f"stored {stored[name]} + dropped {drops[name]} = {seen}; the interface passed {passed} packets "
                   f"(rx+tx) and c1 sent {FLOOD_N}")
            return f"{stored[name]} stored + {drops[name]} dropped = {seen}, interface counters {passed}"
        checks(f"{name}: stored + kernel drops = what the interface passed", accounted)


if __name__ == "__main__":
    sys.exit(main())
