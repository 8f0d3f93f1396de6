#!/usr/bin/env python3
"""End-to-end test of issue #13 "Safe on a production host", the capture files: no lab, no root.

The files are tests/data/tracer's, made by make_edge_cases.py (see its README); what they hold is read by tshark,
independently of hoptrace.

- time_2038.pcap: classic pcap seconds are unsigned 32-bit. hoptrace stores the times tshark reads
  (2038-01-19 03:14:08 UTC and later, up to 2106), and `export` of a database holding them works: tshark
  reads the same times back from the pcapng (a sign-extended, negative time used to block the whole export).
- pcapng_1_1.pcapng: a section of version 1.1, which tshark refuses, is refused with one line naming the file.
- wire_shorter.pcap: a record whose wire length is shorter than its captured length (tcpdump's aoe-oobr-1.pcap)
  is imported with all its captured bytes, its wire length the captured length; fuzz/make_dissect_corpus.py makes a
  seed of it (it used to crash) that encodes the negative difference.

Exit 0 if every check passed, 1 otherwise; the last line is "N passed, M failed".
"""

from __future__ import annotations

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

DATA = lablib.REPO_ROOT / "tests" / "data" / "tracer"
CORPUS_SCRIPT = lablib.REPO_ROOT / "fuzz" / "make_dissect_corpus.py"
CRASH_MARKS = ("terminate called", "AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
               "Segmentation fault", "Aborted", "core dumped", "Traceback")

checks = lablib.Checks()


def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def summary(r: subprocess.CompletedProcess) -> str:
    return " | ".join(line for line in r.stderr.splitlines() if line.strip()) or "(stderr empty)"


def expect_no_crash(r: subprocess.CompletedProcess) -> None:
    expect(0 <= r.returncode < 128, f"killed by a signal (exit {r.returncode})")
    marks = [m for m in CRASH_MARKS if m in r.stderr]
    expect(not marks, f"crash output: {summary(r)}")


def tshark(path: Path, *fields: str) -> list[list[str]]:
    r = run("tshark", "-n", "-r", path, "-T", "fields", *[a for f in fields for a in ("-e", f)])
    expect(r.returncode == 0, f"tshark -r {path}: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


def stored(db: Path, columns: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute(f"SELECT {columns} FROM packets ORDER BY ts_ns, id").fetchall()


def check_2038(hoptrace: Path, tmp: Path) -> None:
    source = DATA / "time_2038.pcap"
    db = tmp / "y2038.db"
    out = tmp / "y2038.pcapng"
    want = [lablib.epoch_ns(row[0]) for row in tshark(source, "frame.time_epoch")]

    def imported() -> str:
        expect(want and min(want) >= 2**31 * 10**9, f"tshark reads {want}: not the 2038 file")
        r = run(hoptrace, "import", "-q", "--db", db, source)
        expect_no_crash(r)
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        got = [row[0] for row in stored(db, "ts_ns")]
        expect(got == want, f"stored {got}, tshark reads {want}")
        return f"{len(got)} packets at {want}"
    checks("import time_2038.pcap keeps the times from 2038 on", imported)

    def exported() -> str:
        r = run(hoptrace, "export", "--db", db, "-o", out)
        expect_no_crash(r)
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        back = [lablib.epoch_ns(row[0]) for row in tshark(out, "frame.time_epoch")]
        expect(back == want, f"tshark reads {back} from the export, want {want}")
        return f"tshark reads the export's {len(back)} times back"
    checks("export of a database holding them", exported)


def check_pcapng_version(hoptrace: Path, tmp: Path) -> None:
    source = DATA / "pcapng_1_1.pcapng"
    db = tmp / "v11.db"

    def refused() -> str:
        t = run("tshark", "-r", source)
        expect(t.returncode != 0 and "1.1" in t.stderr, f"tshark reads it: {t.stderr.strip()}")
        r = run(hoptrace, "import", "-q", "--db", db, source)
        expect_no_crash(r)
        expect(r.returncode == 1, f"exit {r.returncode}, want 1: {summary(r)}")
        lines = [line for line in r.stderr.splitlines() if line.startswith("hoptrace import: ")]
        expect(len(lines) == 1 and str(source) in lines[0] and "version 1.1" in lines[0],
               f"want one line naming {source} and its version: {summary(r)}")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            points = con.execute("SELECT count(*) FROM points").fetchone()[0]
        expect(points == 0, f"{points} points imported from it")
        return lines[0]
    checks("import of a pcapng section of version 1.1 is refused", refused)


def check_wire_shorter(hoptrace: Path, tmp: Path) -> None:
    source = DATA / "wire_shorter.pcap"
    db = tmp / "wire.db"
    frames = tshark(source, "frame.len", "frame.cap_len")

    def imported() -> str:
        expect(frames[0] == ["88", "98"], f"tshark reads {frames}: not the file make_edge_cases.py writes")
        r = run(hoptrace, "import", "-q", "--db", db, source)
        expect_no_crash(r)
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        rows = stored(db, "cap_len, wire_len, length(raw), flags")
        expect(len(rows) == len(frames), f"{len(rows)} packets stored, tshark reads {len(frames)}")
        expect(rows[0][:3] == (98, 98, 98), f"first packet stored as cap/wire/raw {rows[0][:3]}, want 98/98/98")
        return f"stored {rows}"
    checks("import of a record shorter on the wire than captured", imported)

    def corpus() -> str:
        src = tmp / "corpus-src"
        dst = tmp / "corpus"
        src.mkdir()
        (src / source.name).write_bytes(source.read_bytes())
        r = run(sys.executable, CORPUS_SCRIPT, src, dst)
        expect_no_crash(r)
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        seeds = [p.read_bytes() for p in dst.iterdir()]
        expect(len(seeds) == 2, f"{len(seeds)} seeds, want 2")
        raw = source.read_bytes()
        first = raw[24 + 16:24 + 16 + 98]
        seed = [s for s in seeds if s[2:] == first]
        expect(len(seed) == 1, "no seed holds the first frame")
        delta = seed[0][1] >> 2
        delta = delta - 64 if delta >= 32 else delta
        expect(seed[0][0] == 0 and delta == -10 and seed[0][1] & 3 == 3,
               f"seed header {seed[0][:2].hex()}: want Ethernet (0), wire - captured = -10, direction 3")
        return f"{len(seeds)} seeds, the first with wire - captured = {delta}"
    checks("make_dissect_corpus.py on it", corpus)


def main() -> int:
    hoptrace = lablib.hoptrace_binary()
    with tempfile.TemporaryDirectory(prefix="hoptrace-import-edges-") as tmpdir:
        tmp = Path(tmpdir)
        check_2038(hoptrace, tmp)
        check_pcapng_version(hoptrace, tmp)
        check_wire_shorter(hoptrace, tmp)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
