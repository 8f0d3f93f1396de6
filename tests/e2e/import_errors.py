#!/usr/bin/env python3
"""End-to-end test: `hoptrace import` (and the CLI around it) on bad input. No root, no lab.

Each bad capture (missing, empty, text, cut in the middle of a packet, a corrupted record length,
an unsupported link type) is imported after a good one (tests/data/lab/c1-eth0.pcap) into a fresh
database: hoptrace must exit non-zero without crashing, say so in exactly one `hoptrace import: `
line naming the bad file, and keep everything it read — the good file's packets, and the packets
before the damage (counted by tshark, not by hoptrace). Then the usage errors and a point name
imported twice.

Exit 0 if every check passed, 1 otherwise. Prints one line per check and, last, exactly
"N passed, M failed".
"""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from lablib import expect  # noqa: E402

DATA = lablib.REPO_ROOT / "tests" / "data" / "lab"
GOOD = DATA / "c1-eth0.pcap"
CRASH_MARKS = ("terminate called", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
               "runtime error:", "Segmentation fault", "Aborted", "core dumped", "Assertion", "_GLIBCXX_ASSERTIONS")
UNSUPPORTED_LINKTYPE = 147  # LINKTYPE_USER0: valid in a pcap header, not something hoptrace reads

checks = lablib.Checks()


def run(hoptrace: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def stderr_summary(r: subprocess.CompletedProcess) -> str:
    return " | ".join(line for line in r.stderr.splitlines() if line.strip()) or "(stderr empty)"


def expect_no_crash(r: subprocess.CompletedProcess) -> None:
    # subprocess reports death by signal as a negative code; a shell would show 128+N.
    expect(0 <= r.returncode < 128, f"exit code {r.returncode}: killed by a signal")
    marks = [m for m in CRASH_MARKS if m in r.stderr]
    expect(not marks, f"crash output on stderr ({', '.join(marks)}): {stderr_summary(r)}")


def error_lines(r: subprocess.CompletedProcess, prefix: str) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith(prefix)]


def tshark_count(pcap: Path) -> int:
    """Frames tshark can read from pcap (it stops at the damage; its exit code says it did)."""
    r = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=60)
    return len([line for line in r.stdout.splitlines() if line.strip()])


def point_packets(db: Path, name: str) -> tuple[int, int] | None:
    """(points.packets, rows in packets) of point `name`, or None if there is no such point."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute("SELECT id, packets FROM points WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        rows = con.execute("SELECT count(*) FROM packets WHERE point_id = ?", (row[0],)).fetchone()[0]
        return row[1], rows


def packet_rows(db: Path, name: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT p.id, p.ts_ns, p.cap_len, p.wire_len, p.raw FROM packets p "
                           "JOIN points pt ON pt.id = p.point_id WHERE pt.name = ? ORDER BY p.id",
                           (name,)).fetchall()


def pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset, captured length) of each record of a little-endian classic pcap, read here."""
    magic = data[:4]
    expect(magic in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("4d3cb2a1")), f"{GOOD}: not a little-endian pcap")
    records, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        records.append((off, incl))
        off += 16 + incl
    expect(off == len(data), f"{GOOD}: trailing bytes after the last record")
    return records


def make_bad_files(tmp: Path) -> dict[str, tuple[Path, int | None]]:
    """name -> (bad file, frames tshark reads before the damage or None: nothing readable)."""
    good = GOOD.read_bytes()
    records = pcap_records(good)
    bad: dict[str, tuple[Path, int | None]] = {}

    bad["missing file"] = (tmp / "no-such-capture.pcap", None)

    empty = tmp / "empty.pcap"
    empty.write_bytes(b"")
    bad["empty file"] = (empty, None)

    text = tmp / "notes.pcap"
    text.write_text("this is a text file, not a capture\nsecond line\n")
    bad["text file"] = (text, None)

    # Cut in the middle of record 10's packet bytes, with head -c like a user would.
    off, incl = records[10]
    cut = off + 16 + incl // 2
    truncated = tmp / "truncated.pcap"
    with truncated.open("wb") as out:
        subprocess.run(["head", "-c", str(cut), str(GOOD)], stdout=out, check=True)
    bad["truncated pcap"] = (truncated, tshark_count(truncated))

    # Record 5 claims 2 GiB of captured bytes (more than the snap length, more than the file).
    corrupt = bytearray(good)
    struct.pack_into("<I", corrupt, records[5][0] + 8, 0x7FFFFFFF)
    badlen = tmp / "bad-record-length.pcap"
    badlen.write_bytes(corrupt)
    bad["corrupted record length"] = (badlen, tshark_count(badlen))

    # The global header's link type (offset 20) patched to one hoptrace does not read.
    patched = bytearray(good)
    struct.pack_into("<I", patched, 20, UNSUPPORTED_LINKTYPE)
    linktype = tmp / "linktype-147.pcap"
    linktype.write_bytes(patched)
    bad[f"link type {UNSUPPORTED_LINKTYPE}"] = (linktype, None)
    return bad


def check_bad_input(hoptrace: Path, tmp: Path, label: str, path: Path, readable: int | None,
                    good_count: int) -> None:
    db = tmp / f"{label.replace(' ', '-')}.db"
    r = run(hoptrace, "import", "--db", db, f"GOOD={GOOD}", f"BAD={path}")

    def verdict() -> str:
        expect_no_crash(r)
        expect(r.returncode != 0, f"exit code 0 for a bad file; stderr: {stderr_summary(r)}")
        lines = error_lines(r, "hoptrace import: ")
        expect(len(lines) == 1, f"{len(lines)} 'hoptrace import: ' lines, want 1: {stderr_summary(r)}")
        expect(str(path) in lines[0], f"the error line does not name {path}: {lines[0]}")
        good = point_packets(db, "GOOD")
        expect(good is not None, "point GOOD is not in the database")
        expect(good == (good_count, good_count),
               f"point GOOD holds {good[1]} packets (points.packets {good[0]}), want {good_count}")
        kept = point_packets(db, "BAD")
        if readable is not None:
            got = kept[1] if kept else 0
            expect(got == readable, f"{got} packets of BAD kept, tshark reads {readable} before the damage")
        return (f"exit {r.returncode}; GOOD {good_count} packets; BAD "
                f"{'no point' if kept is None else f'{kept[1]} packets'}"
                + (f" (tshark reads {readable})" if readable is not None else "")
                + f"; stderr: {stderr_summary(r)}")
    checks(f"import GOOD + {label}", verdict)


def check_usage(hoptrace: Path, tmp: Path) -> None:
    missing_db = Path("/nonexistent.db")
    existed = missing_db.exists()
    r = run(hoptrace, "report", "--db", missing_db)

    def report_missing() -> str:
        expect(not existed, f"{missing_db} exists on this machine; the check needs it absent")
        expect_no_crash(r)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        expect(r.returncode == 1, f"exit {r.returncode}, want 1: {stderr_summary(r)}")
        expect(len(lines) == 1 and str(missing_db) in lines[0], f"want one line naming {missing_db}: "
                                                                 f"{stderr_summary(r)}")
        expect(not missing_db.exists(), f"report created {missing_db}")
        expect(r.stdout == "", f"stdout not empty: {r.stdout[:200]!r}")
        return f"exit 1: {lines[0]}"
    checks("report --db /nonexistent.db", report_missing)

    r = run(hoptrace, "import", f"GOOD={GOOD}")

    def import_without_db() -> str:
        expect_no_crash(r)
        expect(r.returncode == 2, f"exit {r.returncode}, want 2 (usage): {stderr_summary(r)}")
        expect("--db" in r.stderr, f"stderr does not mention --db: {stderr_summary(r)}")
        return f"exit 2: {stderr_summary(r)}"
    checks("import without --db", import_without_db)

    r = run(hoptrace, "bogus")

    def bogus() -> str:
        expect_no_crash(r)
        expect(r.returncode == 2, f"exit {r.returncode}, want 2 (usage): {stderr_summary(r)}")
        expect("bogus" in r.stderr, f"stderr does not name the command: {stderr_summary(r)}")
        return f"exit 2: {stderr_summary(r)}"
    checks("unknown subcommand", bogus)

    r = run(hoptrace, "--version")

    def version() -> str:
        expect(r.returncode == 0, f"exit {r.returncode}: {stderr_summary(r)}")
        expect(r.stdout.startswith("hoptrace "), f"stdout {r.stdout!r}")
        return f"exit 0: {r.stdout.strip()}"
    checks("--version", version)


def check_duplicate_point(hoptrace: Path, tmp: Path, good_count: int) -> None:
    db = tmp / "duplicate.db"
    name = "same-point"
    first = run(hoptrace, "import", "--db", db, f"{name}={GOOD}")
    before = packet_rows(db, name) if db.exists() else []
    other = DATA / "c2-eth0.pcap"
    second = run(hoptrace, "import", "--db", db, f"{name}={other}")

    def verdict() -> str:
        expect(first.returncode == 0, f"first import exited {first.returncode}: {stderr_summary(first)}")
        expect(len(before) == good_count, f"first import stored {len(before)} packets, tshark counts {good_count}")
        expect_no_crash(second)
        expect(second.returncode != 0, f"second import of point '{name}' exited 0: {stderr_summary(second)}")
        lines = error_lines(second, "hoptrace import: ")
        expect(len(lines) == 1 and name in lines[0],
               f"want one 'hoptrace import: ' line naming '{name}': {stderr_summary(second)}")
        after = packet_rows(db, name)
        expect(after == before, f"point '{name}' changed: {len(before)} packets before, {len(after)} after")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            total = con.execute("SELECT count(*) FROM packets").fetchone()[0]
            points = con.execute("SELECT name, source FROM points").fetchall()
        expect(total == good_count, f"{total} packets in the database after the refused import, want {good_count}")
        expect(points == [(name, str(GOOD))], f"points after the refused import: {points}")
        return f"exit {second.returncode}, {good_count} packets untouched; stderr: {stderr_summary(second)}"
    checks("a point name already in the database", verdict)


def main() -> int:
    hoptrace = lablib.hoptrace_binary()
    with tempfile.TemporaryDirectory(prefix="hoptrace-import-errors-") as tmpdir:
        tmp = Path(tmpdir)
        good_count = tshark_count(GOOD)
        checks("tshark reads the good capture",
               lambda: expect(good_count == 23, f"tshark reads {good_count} frames of {GOOD}, the README says 23")
               or f"{GOOD.name}: {good_count} frames")
        bad: dict[str, tuple[Path, int | None]] = {}

        def make() -> str:
            bad.update(make_bad_files(tmp))
            return ", ".join(f"{label} ({path.name})" for label, (path, _) in bad.items())
        if checks("make the bad captures", make) is None:
            return checks.summary()
        for label, (path, readable) in bad.items():
            check_bad_input(hoptrace, tmp, label, path, readable, good_count)
        check_usage(hoptrace, tmp)
        check_duplicate_point(hoptrace, tmp, good_count)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
