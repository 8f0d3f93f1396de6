#!/usr/bin/env python3
"""End-to-end test: a capture that is killed keeps what it captured in its spool, and the next command stores it.

While it captures, hoptrace keeps each point's frames as chunks in `capture_chunks` (docs/schema.md) and turns
them into `packets` rows only after the capture stops. Here it never stops cleanly:

1. `hoptrace capture` on c1's four points while c1 sends N marked, paced UDP datagrams to a sink; SIGKILL two
   seconds after the last one (each point hands over a partial chunk once its first frame is a second old). Then
   - `packets` is empty and capture_chunks holds frames; decoded here from the documented record format, each
     point's chunks hold exactly the N datagrams, seq 0…N-1, once each;
   - `hoptrace report` and `hoptrace export` refuse, naming `hoptrace correlate --db FILE`;
   - `hoptrace correlate` says how many packets it stores (the frames in capture_chunks), stores and correlates
     them: the spool is empty, packets = those frames, points.packets = rows per point, each point's datagrams
     seq 0…N-1 once each, one forward journey per datagram across the four points; report and export work.
2. The same with a flood of FLOOD_N unpaced datagrams, and `hoptrace correlate` itself killed (SIGKILL) while it
   stores the spool: afterwards rows + spooled frames = what was spooled; a second `hoptrace correlate` stores the
   rest; at every point the datagrams in `packets` are exactly those the chunks held (none twice, none missing).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import re
import secrets
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Background, Checks, expect, expected_points, guarded, netns_left, query, run,  # noqa: E402
                         short, udp_sink, workdir)

N = 1500
GAP_S = 0.001
FLOOD_N = 60_000
SPORT = 47100
DPORT = 47101
FLOOD_DPORT = 47102
CHUNK_AGE_S = 1.0  # store::SpoolLimits::chunk_age

# Sends N datagrams "MARKER seq=NNNNNN\n" at a fixed pace, or as fast as it can for gap 0 (run inside c1).
SENDER = r"""
import socket, sys, time
dst, marker = sys.argv[1], sys.argv[5]
sport, dport, n, gap = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", sport))
s.connect((dst, dport))
t0 = time.monotonic()
for i in range(n):
    wait = t0 + i * gap - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    s.send(f"{marker} seq={i:06d}\n".encode())
print(n)
"""

RECORD = struct.Struct("<qIIB")  # ts_ns, cap_len, wire_len, direction: the 17-byte header of a chunk record


def chunk_frames(db: Path) -> dict[int, list[bytes]]:
    """Every frame in capture_chunks, per point id, decoded from the documented record format."""
    out: dict[int, list[bytes]] = {}
    for point_id, frames, data in query(db, "SELECT point_id, frames, data FROM capture_chunks ORDER BY id"):
        offset = 0
        got = []
        while offset < len(data):
            expect(offset + RECORD.size <= len(data), f"a record header runs past the end of a chunk at {offset}")
            _ts, cap_len, _wire_len, direction = RECORD.unpack_from(data, offset)
            expect(direction in (0, 1, 2), f"direction {direction}")
            start = offset + RECORD.size
            expect(start + cap_len <= len(data), f"a record's bytes run past the end of a chunk at {offset}")
            got.append(bytes(data[start:start + cap_len]))
            offset = start + cap_len
        expect(len(got) == frames, f"a chunk says {frames} frames and holds {len(got)}")
        out.setdefault(point_id, []).extend(got)
    return out


def seqs_in(frames, marker: bytes) -> list[int]:
    pattern = re.compile(re.escape(marker) + rb" seq=(\d{6})\n")
    return [int(m.group(1)) for f in frames if (m := pattern.search(f))]


def stored_seqs(db: Path, marker: bytes) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for point_id, raw in query(db, "SELECT point_id, raw FROM packets WHERE proto = 17 AND instr(raw, ?) > 0",
                               (marker,)):
        out.setdefault(point_id, []).extend(seqs_in([raw], marker))
    return out


def killed_capture(hoptrace: Path, lab: lablib.Lab, db: Path, marker: bytes, dport: int, n: int,
                   gap: float) -> str:
    """Runs a capture around the sender and SIGKILLs it well after the spool's age limit; returns the sender's
    output."""
    with udp_sink(lab, dport):
        capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"])
        try:
            sent = lab.run("c1", sys.executable, "-c", SENDER, lab.ip["server"], SPORT, dport, n, marker.decode(), gap,
                           timeout=60)
            time.sleep(2 * CHUNK_AGE_S)
        finally:
            capture.kill()  # SIGKILL: no stop, no storing
    return sent.stdout.strip()


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(170)
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-live-spool-") as tmp, lablib.Lab() as lab:
        prefixes.append(lab.prefix)
        guarded(checks, "a killed capture, stored by correlate", killed_run, checks, hoptrace, lab, tmp)
        guarded(checks, "a killed capture and a killed correlate", killed_twice, checks, hoptrace, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


def killed_run(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "killed.db"
    marker = f"htspool-{secrets.token_hex(6)}".encode()
    names = [p[0] for p in expected_points(lab, ("c1",))]
    lab.run("c1", "ping", "-n", "-c", "1", "-W", "2", lab.ip["server"])  # ARP first: no datagram waits for it
    sent = killed_capture(hoptrace, lab, db, marker, DPORT, N, GAP_S)
    ids = {name: pid for pid, name in query(db, "SELECT id, name FROM points")}

    spooled = {}

    def spool_holds_everything() -> str:
        expect(sorted(ids) == sorted(names), f"points {sorted(ids)}, want {names}")
        expect(query(db, "SELECT count(*) FROM packets")[0][0] == 0, "packets rows after a killed capture")
        expect(query(db, "SELECT sum(packets) FROM points")[0][0] == 0, "points.packets after a killed capture")
        frames = chunk_frames(db)
        spooled.update({pid: len(f) for pid, f in frames.items()})
        for name, pid in ids.items():
            seqs = seqs_in(frames.get(pid, []), marker)
            expect(sorted(seqs) == list(range(N)),
                   f"{name}: the chunks hold {len(seqs)} marked datagrams ({len(set(seqs))} distinct), want seq "
                   f"0…{N - 1}; missing {sorted(set(range(N)) - set(seqs))[:10]}")
        return (f"{sent} sent; {sum(spooled.values())} frames in "
                f"{query(db, 'SELECT count(*) FROM capture_chunks')[0][0]} chunks, each point's {N} datagrams once")
    if checks("SIGKILL during the capture: the spool holds every datagram sent, packets is empty",
              spool_holds_everything) is None:
        return

    for command in (["report"], ["export", "-o", tmp / "x.pcapng"]):
        def refuses(command=command) -> str:
            r = run(hoptrace, *command[:1], "--db", db, *command[1:])
            expect(r.returncode == 1, f"exit {r.returncode}: {short(r.stdout + r.stderr)}")
            expect(f"run 'hoptrace correlate --db {db}' first" in r.stderr and "still in the capture's spool" in r.stderr,
                   f"stderr: {short(r.stderr)}")
            return r.stderr.strip()
        checks(f"hoptrace {command[0]} refuses while packets are spooled, naming correlate", refuses)

    def correlate_stores() -> str:
        total = sum(spooled.values())
        r = run(hoptrace, "correlate", "--db", db)
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        expect(f"holds {total} packets of a capture that did not finish storing them" in r.stderr,
               f"stderr: {short(r.stderr)}")
        expect(query(db, "SELECT count(*) FROM capture_chunks")[0][0] == 0, "chunks left")
        rows = dict(query(db, "SELECT point_id, count(*) FROM packets GROUP BY point_id"))
        counted = dict(query(db, "SELECT id, packets FROM points"))
        expect(rows == spooled, f"rows per point {rows}, the chunks held {spooled}")
        expect(counted == rows, f"points.packets {counted}, rows {rows}")
        seqs = stored_seqs(db, marker)
        for name, pid in ids.items():
            expect(sorted(seqs.get(pid, [])) == list(range(N)), f"{name}: stored seqs {len(seqs.get(pid, []))}")
        return f"{r.stderr.strip()} → {total} rows, each point's {N} datagrams once; {r.stdout.strip()}"
    if checks("hoptrace correlate stores the spool, then correlates", correlate_stores) is None:
        return

    def journeys() -> str:
        flows = query(db, "SELECT id FROM flows WHERE proto = 17 AND orig_src = ? AND orig_sport = ? AND orig_dport = ?",
                      (lab.ip["c1"], SPORT, DPORT))
        expect(len(flows) == 1, f"flows of the datagrams: {flows}")
        by_len = dict(query(db, "SELECT sightings, count(*) FROM journeys WHERE flow_id = ? AND direction = 'forward' "
                                "GROUP BY sightings", (flows[0][0],)))
        expect(by_len == {len(names): N}, f"forward journeys by sightings {by_len}")
        report = run(hoptrace, "report", "--db", db, "--format", "json")
        expect(report.returncode == 0, f"report exit {report.returncode}: {short(report.stderr)}")
        export = run(hoptrace, "export", "--db", db, "-o", tmp / "killed.pcapng")
        expect(export.returncode == 0, f"export exit {export.returncode}: {short(export.stderr)}")
        return f"{N} forward journeys at all {len(names)} points; report and export work; {export.stdout.strip()}"
    checks("correlated: one journey per datagram; report and export work", journeys)


def killed_twice(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "twice.db"
    marker = f"htspool-{secrets.token_hex(6)}".encode()
    sent = killed_capture(hoptrace, lab, db, marker, FLOOD_DPORT, FLOOD_N, 0)
    before = {pid: Counter(seqs_in(frames, marker)) for pid, frames in chunk_frames(db).items()}
    total = query(db, "SELECT sum(frames) FROM capture_chunks")[0][0]

    state = {}

    def killed_while_storing() -> str:
        proc = subprocess.Popen([str(hoptrace), "correlate", "--db", str(db)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        err = b""
        deadline = time.monotonic() + 30
        while b"storing them now" not in err and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 1)[0]:
                chunk = proc.stderr.read1(4096)
                if not chunk:
                    break
                err += chunk
        time.sleep(0.1)
        proc.kill()
        proc.wait()
        expect(b"storing them now" in err, f"correlate said: {short(err.decode(errors='replace'))}")
        rows = query(db, "SELECT count(*) FROM packets")[0][0]
        left = query(db, "SELECT coalesce(sum(frames), 0) FROM capture_chunks")[0][0]
        expect(rows + left == total, f"{rows} rows + {left} spooled frames, the capture spooled {total}")
        expect(query(db, "SELECT coalesce(sum(packets), 0) FROM points")[0][0] == rows, "points.packets ≠ rows")
        state["mid_way"] = rows > 0 and left > 0
        return (f"{sent} sent, {total} frames spooled; correlate killed 0.1 s into storing them: {rows} rows + "
                f"{left} still spooled" + ("" if state["mid_way"] else " (the kill missed the middle this time)"))
    checks("SIGKILL while correlate stores the spool: every frame is a row or still spooled, once", killed_while_storing)

    def second_correlate() -> str:
        r = run(hoptrace, "correlate", "--db", db)
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        expect(query(db, "SELECT count(*) FROM capture_chunks")[0][0] == 0, "chunks left")
        expect(query(db, "SELECT count(*) FROM packets")[0][0] == total, "rows ≠ the frames spooled")
        after = {pid: Counter(seqs) for pid, seqs in stored_seqs(db, marker).items()}
        for pid in before:
            expect(after.get(pid) == before[pid],
                   f"point {pid}: {sum(after.get(pid, Counter()).values())} datagrams stored, "
                   f"{sum(before[pid].values())} were spooled; twice: "
                   f"{[s for s, c in after.get(pid, Counter()).items() if c > 1][:5]}")
        return f"{total} rows; at each point the datagrams stored are exactly those the chunks held"
    checks("a second correlate stores the rest: nothing lost, nothing twice", second_correlate)


if __name__ == "__main__":
    sys.exit(main())
