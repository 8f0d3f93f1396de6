#!/usr/bin/env python3
"""End-to-end test: a capture that is killed keeps what it captured in its spool, and the next command stores it.

While it captures, hoptrace appends each point's frames in chunks to a spool file beside the database (FILE-spool,
named in `meta`; format in docs/schema.md) and turns them into `packets` rows only after the capture stops. Here it
never stops cleanly:

1. `hoptrace capture` on c1's four points while c1 sends N marked, paced UDP datagrams to a sink; SIGKILL two
   seconds after the last one (each point hands over a partial chunk once its first frame is a second old). Then
   - `packets` is empty, meta names the spool file beside the database, and the file holds frames; decoded here
     from the documented format (chunk header with its FNV-1a check, records, trailer; no torn tail), each
     point's chunks hold exactly the N datagrams, seq 0…N-1, once each;
   - `hoptrace report` and `hoptrace export` refuse, naming `hoptrace correlate --db FILE`;
   - `hoptrace correlate` says how many packets it stores (the frames in the file), stores and correlates
     them: the file is gone and meta no longer names it, packets = those frames, points.packets = rows per point, each point's datagrams
     seq 0…N-1 once each, one forward journey per datagram across the four points; report and export work.
2. The same with a flood of FLOOD_N unpaced datagrams, and `hoptrace correlate` itself killed (SIGKILL) while it
   stores the spool: afterwards rows + frames after meta's spool_stored_bytes = what was spooled; a second
   `hoptrace correlate` stores the rest; at every point the datagrams in `packets` are exactly those the chunks held (none twice, none missing).

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
                         short, udp_sink, workdir, PACED_UDP_SENDER)

N = 1500
GAP_S = 0.001
FLOOD_N = 60_000
SPORT = 47100
DPORT = 47101
FLOOD_DPORT = 47102
CHUNK_AGE_S = 1.0  # store::SpoolLimits::chunk_age

RECORD = struct.Struct("<qIIB")  # ts_ns, cap_len, wire_len, direction: the 17-byte header of a chunk record
# magic, point_id, link_type, frames, first_ts_ns, last_ts_ns, data_len, check: a chunk's 44-byte header in the file
HEADER = struct.Struct("<4sIIIqqQI")
TRAILER = struct.Struct("<4sI")  # magic, check


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def meta(db: Path, key: str):
    rows = query(db, "SELECT value FROM meta WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def spool_path(db: Path):
    name = meta(db, "spool_file")
    return db.parent / name if name is not None else None


def spool_chunks(db: Path) -> list[tuple[int, int, bytes]]:
    """The chunks of the database's spool file not yet stored (after meta's spool_stored_bytes), as (point id,
    frames, records), walked with the documented framing; every chunk whole (a killed capture's file that was
    written two seconds before the kill has no torn tail)."""
    path = spool_path(db)
    if path is None:
        return []
    data = path.read_bytes()
    offset = int(meta(db, "spool_stored_bytes"))
    out = []
    while offset < len(data):
        expect(offset + HEADER.size <= len(data), f"the file ends inside a chunk header at byte {offset}")
        magic, point_id, _link, frames, _first, _last, data_len, check = HEADER.unpack_from(data, offset)
        expect(magic == b"HTSC" and check == fnv1a(data[offset:offset + 40]), f"no valid chunk header at byte {offset}")
        start = offset + HEADER.size
        end = start + data_len + TRAILER.size
        expect(end <= len(data), f"the file ends inside the chunk at byte {offset}")
        expect(TRAILER.unpack_from(data, start + data_len) == (b"HTSE", check), f"bad trailer of the chunk at {offset}")
        out.append((point_id, frames, data[start:start + data_len]))
        offset = end
    return out


def spooled_frames(db: Path) -> int:
    return sum(frames for _, frames, _ in spool_chunks(db))


def chunk_frames(db: Path) -> dict[int, list[bytes]]:
    """Every frame in the spool file, per point id, decoded from the documented record format."""
    out: dict[int, list[bytes]] = {}
    for point_id, frames, data in spool_chunks(db):
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
            sent = lab.run("c1", sys.executable, "-c", PACED_UDP_SENDER, lab.ip["server"], SPORT, dport, n, marker.decode(), gap,
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
        expect(spool_path(db) == Path(str(db) + "-spool") and spool_path(db).exists(),
               f"meta names the spool {spool_path(db)}, want {db}-spool, there")
        expect(meta(db, "spool_stored_bytes") == "0", f"spool_stored_bytes {meta(db, 'spool_stored_bytes')}")
        frames = chunk_frames(db)
        spooled.update({pid: len(f) for pid, f in frames.items()})
        for name, pid in ids.items():
            seqs = seqs_in(frames.get(pid, []), marker)
            expect(sorted(seqs) == list(range(N)),
                   f"{name}: the chunks hold {len(seqs)} marked datagrams ({len(set(seqs))} distinct), want seq "
                   f"0…{N - 1}; missing {sorted(set(range(N)) - set(seqs))[:10]}")
        return (f"{sent} sent; {sum(spooled.values())} frames in {len(spool_chunks(db))} chunks of "
                f"{spool_path(db).name} ({spool_path(db).stat().st_size} bytes), each point's {N} datagrams once")
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
        expect(spool_path(db) is None and meta(db, "spool_stored_bytes") is None, "meta still names a spool")
        expect(not Path(str(db) + "-spool").exists(), "the spool file is still there")
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
    total = spooled_frames(db)

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
        left = spooled_frames(db)
        expect(rows + left == total, f"{rows} rows + {left} spooled frames, the capture spooled {total}")
        expect(query(db, "SELECT coalesce(sum(packets), 0) FROM points")[0][0] == rows, "points.packets ≠ rows")
        state["mid_way"] = rows > 0 and left > 0
        return (f"{sent} sent, {total} frames spooled; correlate killed 0.1 s into storing them: {rows} rows + "
                f"{left} still spooled after byte {meta(db, 'spool_stored_bytes')}" + ("" if state["mid_way"] else " (the kill missed the middle this time)"))
    checks("SIGKILL while correlate stores the spool: every frame is a row or still spooled, once", killed_while_storing)

    def second_correlate() -> str:
        r = run(hoptrace, "correlate", "--db", db)
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        expect(spool_path(db) is None and not Path(str(db) + "-spool").exists(), "the spool is still there")
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
