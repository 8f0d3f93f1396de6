#!/usr/bin/env python3
"""End-to-end test (issue #13, "fault matrix"): whatever stops hoptrace, the database it leaves is sound, readable
(after the documented recovery step), holds exactly what an independent count says minus only what the docs say
may be lost, and the report or stderr names the cause.

Every case ends with a database that (a) passes `PRAGMA integrity_check` (Python's sqlite3), (b) `hoptrace report`
reads (exit 0), after the recovery step the docs name, (c) whose per-point packet counts match an independent
count: for live captures the test's own `tcpdump -w` on the same interface in the same namespace, started before
hoptrace and stopped after it, counting only the test's own marked datagrams ("MARKER seq=NNNNNNN", unique per
case, to a port of its own) inside meta's capture window capture_start_ns..capture_stop_ns; for imports the record
count the test computes by walking the pcap file's bytes, and (d) whose report or stderr names the cause.

1. capture + SIGINT once, during a paced flood from c1: exit 0, stop_reason "signal", counts = tcpdump's in the
   window (a difference only as large as the kernel drops hoptrace or tcpdump report).
2. capture + SIGINT twice, the second while "storing N of M packets…" is shown (stderr on a pty, so that hoptrace
   shows its status line), with ~240k frames spooled: exit 1, "interrupted; run 'hoptrace correlate --db …' later",
   meta still names the spool; `hoptrace correlate` stores it; counts = tcpdump's.
3. capture + SIGKILL while capturing: the spool remains, `report` refuses naming `hoptrace correlate`, `correlate`
   stores it; counts = tcpdump's up to the kill minus at most each point's last second "or so" (frames not yet
   handed to the spool: a chunk goes once its first frame is 1 s old, looked at every 100 ms, then queued for the
   spool's thread: 1.3 s allowed, and every lost frame must be that recent); a torn last chunk's loss ("N frames of
   point X are lost") agrees with meta spool_lost and the count.
4. import + SIGKILL at three moments (the point just created, half-way, 90 %), and SIGINT (Ctrl-C) half-way, of a
   300k-frame pcap the test writes:
   points.complete = 0; `report` and `correlate` warn "incomplete" naming the point and --replace; importing again
   without --replace fails naming --replace; `import --replace` stores exactly the file's record count, complete 1.
5. import into a database a running capture holds: exit 1 at once, one line saying another hoptrace writes it; the
   database gains no point from it.
6. correlate + SIGKILL at ~30 % and ~70 %, and SIGINT at ~50 %, of a clean run's duration, on case 2's database:
   integrity ok, report reads or says "not correlated yet", a second correlate gives the journeys/flows/losses of a clean correlate of a copy.
7. disk full during a capture (a 48 MiB tmpfs, 1400-byte datagrams): the capture stops by itself, says "the disk is
   full", stop_reason "disk full", exit 0 (or 1 with a line saying what to do); integrity ok; report reads (after
   the correlate the message asks for, run while the disk is still full); counts = tcpdump's (tcpdump writing to a
   normal disk) in the window.
8. vanished interface: c1's host veth deleted during the capture: the other points go on (c2's datagrams after the
   deletion are stored at the bridge and the uplink), the two dead points' note says "capture ended early", their
   packets before the deletion are stored (= tcpdump's count there until it died), report reads.

Live cases also check that nothing timestamped outside the window is stored (docs/cli.md: "nothing timestamped
later is stored"). HOPTRACE_FAULT_CASES="7 8" runs only those cases (case 6 needs case 2); HOPTRACE_TEST_KEEP=1 keeps
the databases and pcaps (case 7's tmpfs is copied out before it is unmounted).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Checks, expect, expected_points, guarded, query, run, run_lab_test, short,  # noqa: E402
                         tcpdumps_on, udp_sink)

WATCHDOG_S = 235  # the whole test must finish in about four minutes
SPORT = 47300
CHUNK_AGE_S = 1.0  # store::SpoolLimits::chunk_age: a point hands its chunk over once its first frame is this old
TICK_SLACK_S = 0.3
# Case 4's file: 80k frames of 1 KiB take hoptrace about 2 s to read (the kills need that long a read), and correlate
# no longer than that (it runs after every import and correlate of the case, five times per kill).
IMPORT_FRAMES = 80_000  # a point looks at its chunk's age every pcap timeout (100 ms); the spool thread's queue on top

# Runs inside c1/c2: sends N datagrams "MARKER seq=NNNNNNN\n", padded with '.' to SIZE bytes, one every GAP seconds
# (as fast as it can for 0); a send that fails (the interface is gone) is skipped. Prints how many it sent.
SENDER = r"""
import socket, sys, time
dst, sport, dport, n, marker, gap, size = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                           sys.argv[5].encode(), float(sys.argv[6]), int(sys.argv[7]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", sport))
s.connect((dst, dport))
t0 = time.monotonic()
sent = 0
for i in range(n):
    if gap:
        wait = t0 + i * gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    try:
        s.send((marker + b" seq=%07d\n" % i).ljust(size, b"."))
        sent += 1
    except OSError:
        time.sleep(0.001)
print(sent, flush=True)
"""


# --------------------------------------------------------------------------------------------
# Processes: hoptrace in the background, its stderr read by a thread (on a pty when asked)


class Proc:
    """One hoptrace command in the background. With tty=True its stderr is a pseudo-terminal, so hoptrace shows its
    status lines ("storing N of M packets…"); otherwise a pipe (its lines exactly as written)."""

    def __init__(self, argv, tty: bool = False):
        self.argv = [str(a) for a in argv]
        self.started = time.monotonic()
        self._err = bytearray()
        self._out = bytearray()
        self._lock = threading.Lock()
        if tty:
            master, slave = os.openpty()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
            os.close(slave)
            err_fd = master
        else:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            err_fd = self.proc.stderr.fileno()
        self._threads = [threading.Thread(target=self._pump, args=(fd, buf, close), daemon=True)
                         for fd, buf, close in ((err_fd, self._err, tty), (self.proc.stdout.fileno(), self._out, False))]
        for t in self._threads:
            t.start()

    def _pump(self, fd: int, buf: bytearray, close: bool) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            if not chunk:
                break
            with self._lock:
                buf += chunk
        if close:
            os.close(fd)

    def stderr(self) -> str:
        with self._lock:
            text = self._err.decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r\n", "\n")

    def wait_for(self, text: str, timeout: float) -> bool:
        """Waits until stderr shows `text` (True) or the process ended or the time is up (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                time.sleep(0.05)  # its last words
                return text in self.stderr()
            time.sleep(0.01)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._threads:
            t.join(10)
        with self._lock:
            out = self._out.decode(errors="replace")
        return self.proc.returncode, out, self.stderr()


def start_capture(hoptrace: Path, lab: lablib.Lab, db: Path, *extra, tty: bool = False) -> Proc:
    """`hoptrace capture` of c1's path (c1:eth0, its veth, the bridge, the uplink); returns once it says
    "capturing on" (every point's socket is open)."""
    p = Proc([hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], *extra],
             tty=tty)
    if not p.wait_for("capturing on", 30):
        p.signal(signal.SIGKILL)
        rc, _, err = p.wait(10)
        raise RuntimeError(f"hoptrace capture exited {rc} or never said 'capturing on': {short(err)}")
    return p


def start_sender(lab: lablib.Lab, container: str, marker: bytes, dport: int, n: int, gap: float,
                 size: int = 0, sport: int = SPORT) -> subprocess.Popen:
    return lab.popen(container, sys.executable, "-c", SENDER, lab.ip["server"], sport, dport, n, marker.decode(), gap,
                     size, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_sender(p: subprocess.Popen, timeout: float = 60) -> str:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out.strip()


def new_marker(case: str) -> bytes:
    return f"htfault-{case}-{secrets.token_hex(4)}".encode()


# --------------------------------------------------------------------------------------------
# The independent side: pcap files walked byte by byte, the test's own tcpdumps


def pcap_records(path: Path):
    """Yields (ts_ns, frame bytes) of every whole record of a pcap file (micro- or nanosecond, either byte order),
    read from its bytes; a record cut short at the end of the file is not one."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    kinds = {b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
             b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}
    if magic not in kinds:
        raise AssertionError(f"{path}: not a pcap file (magic {magic.hex()})")
    endian, scale = kinds[magic]
    rec = struct.Struct(endian + "IIII")
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, offset)
        start = offset + 16
        if start + incl > len(data):
            return
        yield sec * 1_000_000_000 + frac * scale, data[start:start + incl]
        offset = start + incl


def pcap_record_count(path: Path) -> int:
    return sum(1 for _ in pcap_records(path))


def seq_pattern(marker: bytes) -> re.Pattern:
    return re.compile(re.escape(marker) + rb" seq=(\d{7})\n")


def tcpdump_marked(path: Path, marker: bytes) -> list[tuple[int, int]]:
    """(seq, ts_ns) of every frame in the test's tcpdump file that carries `marker`."""
    pat = seq_pattern(marker)
    return [(int(m.group(1)), ts) for ts, frame in pcap_records(path) if (m := pat.search(frame))]


def db_marked(db: Path, marker: bytes) -> dict[str, list[tuple[int, int]]]:
    """Per point name: (seq, ts_ns) of every stored packet that carries `marker`."""
    pat = seq_pattern(marker)
    out: dict[str, list[tuple[int, int]]] = {}
    for name, ts, raw in query(db, "SELECT p.name, k.ts_ns, k.raw FROM packets k JOIN points p ON p.id = k.point_id "
                                   "WHERE instr(k.raw, ?) > 0", (marker,)):
        m = pat.search(raw)
        if m:
            out.setdefault(name, []).append((int(m.group(1)), ts))
    return out


def meta(db: Path, key: str) -> str | None:
    rows = query(db, "SELECT value FROM meta WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def window(db: Path) -> tuple[int, int | None]:
    start = meta(db, "capture_start_ns")
    stop = meta(db, "capture_stop_ns")
    expect(start is not None, "meta has no capture_start_ns")
    return int(start), int(stop) if stop is not None else None


def integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    try:
        rows = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
    finally:
        con.close()
    expect(rows == ["ok"], f"PRAGMA integrity_check on {db.name}: {rows[:5]}")
    return "ok"


def point_rows(db: Path) -> dict[str, dict]:
    cols = ["id", "name", "packets", "kernel_drops", "note", "complete"]
    return {r[1]: dict(zip(cols, r)) for r in query(db, f"SELECT {', '.join(cols)} FROM points")}


CHUNK_HEADER = struct.Struct("<4sIIIqqQI")  # magic, point_id, link_type, frames, first_ts, last_ts, data_len, check
CHUNK_TRAILER = 8
RECORD = struct.Struct("<qIIB")  # ts_ns, cap_len, wire_len, direction


def spooled_marked(db: Path, marker: bytes) -> dict[str, int]:
    """Per point name: the marked frames still in the database's spool file after meta spool_stored_bytes (whole
    chunks only, decoded from the format in docs/schema.md); {} without a spool."""
    name = meta(db, "spool_file")
    path = db.parent / name if name else None
    if path is None or not path.exists():
        return {}
    names = {pid: n for n, pid in ((r["name"], r["id"]) for r in point_rows(db).values())}
    offset = int(meta(db, "spool_stored_bytes") or 0)
    out: Counter = Counter()
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    at = 0
    while at + CHUNK_HEADER.size <= len(data):
        magic, point_id, _link, _frames, _first, _last, data_len, _check = CHUNK_HEADER.unpack_from(data, at)
        if magic != b"HTSC" or at + CHUNK_HEADER.size + data_len + CHUNK_TRAILER > len(data):
            break
        r = at + CHUNK_HEADER.size
        end = r + data_len
        while r + RECORD.size <= end:
            _ts, cap_len, _wire, _dir = RECORD.unpack_from(data, r)
            if marker in data[r + RECORD.size:r + RECORD.size + cap_len]:
                out[names.get(point_id, str(point_id))] += 1
            r += RECORD.size + cap_len
        at = end + CHUNK_TRAILER
    return dict(out)


def compare_counts(db: Path, tcpdumps: dict[str, lablib.Tcpdump], marker: bytes, lo: int, hi: int,
                   allowed_missing=None) -> str:
    """Per point: hoptrace's stored marked frames against tcpdump's marked frames with lo <= ts <= hi. Exact, but
    for kernel drops (hoptrace's points.kernel_drops may explain frames it lacks, tcpdump's drops frames it has
    that tcpdump lacks). allowed_missing(name, want, missing) -> (ok, why) replaces the rule for missing frames."""
    stored = db_marked(db, marker)
    rows = point_rows(db)
    problems, parts = [], []
    for name, td in tcpdumps.items():
        want = {s: t for s, t in tcpdump_marked(td.path, marker) if lo <= t <= hi}
        got = [(s, t) for s, t in stored.get(name, []) if lo <= t <= hi]  # outside: see nothing_outside()
        got_seqs = Counter(s for s, _ in got)
        twice = sorted(s for s, c in got_seqs.items() if c > 1)
        missing = sorted(set(want) - set(got_seqs))
        extra = sorted(set(got_seqs) - set(want))
        ht_drops = (rows.get(name) or {}).get("kernel_drops") or 0
        td_drops = td.dropped or 0
        drops = (f" (kernel drops: hoptrace {ht_drops}, tcpdump {td_drops}: the difference may be that large)"
                 if ht_drops or td_drops else "")
        parts.append(f"{name} {len(got)}/{len(want)}{drops}")
        if name not in rows:
            problems.append(f"{name}: no such point in the database (points: {sorted(rows)})")
            continue
        if twice:
            problems.append(f"{name}: {len(twice)} datagrams stored twice (seq {twice[:5]})")
        if allowed_missing is not None:
            ok, why = allowed_missing(name, want, missing)
            if not ok:
                problems.append(f"{name}: {why}")
        elif len(missing) > ht_drops:
            problems.append(f"{name}: hoptrace stored {len(got)}, tcpdump saw {len(want)} in the window: "
                            f"{len(missing)} missing (seq {missing[:5]}…), more than hoptrace's {ht_drops} kernel drops")
        if len(extra) > td_drops:
            problems.append(f"{name}: {len(extra)} stored datagrams tcpdump did not see in the window (seq "
                            f"{extra[:5]}…), more than tcpdump's {td_drops} kernel drops")
        if not want:
            problems.append(f"{name}: tcpdump saw no marked datagram in the window: nothing was compared")
    if problems and meta(db, "spool_file") is not None:
        problems.append(f"the spool {meta(db, 'spool_file')} still holds marked frames not stored: "
                        f"{spooled_marked(db, marker)}")
    expect(not problems, "; ".join(problems) + " | stored/tcpdump: " + ", ".join(parts))
    return "stored/tcpdump in the window: " + ", ".join(parts)


def nothing_outside(db: Path, marker: bytes, lo: int, hi: int | None) -> str:
    """docs/cli.md: "The moment it stops closes the capture window: … nothing timestamped later is stored"."""
    stored = db_marked(db, marker)
    bad = {}
    for name, got in stored.items():
        out = sorted((t, s) for s, t in got if not lo <= t <= (hi if hi is not None else t))
        if out:
            bad[name] = (f"{len(out)} of {len(got)} (seq {out[0][1]}…{out[-1][1]}, up to "
                         f"{(out[-1][0] - (hi or lo)) / 1e6:.0f} ms after capture_stop_ns)")
    expect(not bad, f"stored marked datagrams outside the window {lo}..{hi}: {bad}")
    return f"every stored marked datagram lies in {lo}..{hi} ({(hi - lo) / 1e9:.2f} s)" if hi else "ok"


def report_reads(hoptrace: Path, db: Path) -> dict:
    r = run(hoptrace, "report", "--db", db, "--format", "json", timeout=180)
    expect(r.returncode == 0, f"hoptrace report --db {db.name} exited {r.returncode}: {short(r.stderr)}")
    return json.loads(r.stdout)


def start_tcpdumps(lab: lablib.Lab, outdir: Path, dport: int) -> dict[str, lablib.Tcpdump]:
    outdir.mkdir(parents=True, exist_ok=True)
    return tcpdumps_on(lab, expected_points(lab, ("c1",)), outdir, filter=f"udp dst port {dport}")


def stop_tcpdumps(tcpdumps: dict[str, lablib.Tcpdump]) -> None:
    lablib.stop_all(list(tcpdumps.values()), settle=0.3)


def sound_database(checks: Checks, case: str, db: Path) -> None:
    checks(f"{case}: PRAGMA integrity_check", lambda: integrity(db))


# --------------------------------------------------------------------------------------------
# 1. capture + SIGINT once


def case_sigint_once(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "1 SIGINT once"
    db, marker, dport = tmp / "sigint1.db", new_marker("int1"), 47311
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "sigint1", dport)
        try:
            cap = start_capture(hoptrace, lab, db)
            sender = start_sender(lab, "c1", marker, dport, 20000, 1e-4)
            time.sleep(1.2)  # mid-flood: the stop cuts the flood, the window decides
            cap.signal(signal.SIGINT)
            rc, _out, err = cap.wait(120)
            sent = finish_sender(sender)
        finally:
            stop_tcpdumps(tcpdumps)
    checks(f"{case}: exit 0", lambda: expect(rc == 0, f"exit {rc}: {short(err)}") or f"exit 0; c1 sent {sent}")
    checks(f"{case}: meta stop_reason = 'signal' (the cause)",
           lambda: expect(meta(db, "stop_reason") == "signal", f"stop_reason {meta(db, 'stop_reason')!r}") or "signal")
    checks(f"{case}: nothing left spooled",
           lambda: expect(meta(db, "spool_file") is None and not Path(f"{db}-spool").exists(),
                          f"spool_file {meta(db, 'spool_file')!r}, file there: {Path(f'{db}-spool').exists()}")
           or "no spool_file in meta, no FILE-spool")
    sound_database(checks, case, db)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and "exit 0")
    lo, hi = window(db)
    checks(f"{case}: packets per point = tcpdump's in the window", lambda: compare_counts(db, tcpdumps, marker, lo, hi))
    checks(f"{case}: nothing stored outside the window", lambda: nothing_outside(db, marker, lo, hi))


# --------------------------------------------------------------------------------------------
# 2. capture + SIGINT twice, the second while storing


def case_sigint_twice(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, state: dict) -> None:
    case = "2 SIGINT twice"
    db, marker, dport = tmp / "sigint2.db", new_marker("int2"), 47312
    n = 60_000
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "sigint2", dport)
        try:
            cap = start_capture(hoptrace, lab, db, tty=True)
            sender = start_sender(lab, "c1", marker, dport, n, 2e-5)
            sent = finish_sender(sender)
            time.sleep(0.3)
            cap.signal(signal.SIGINT)
            t_first = time.monotonic()
            storing = cap.wait_for("storing ", 60)
            t_storing = time.monotonic()
            cap.signal(signal.SIGINT)
            rc, _out, err = cap.wait(180)
            t_end = time.monotonic()
        finally:
            stop_tcpdumps(tcpdumps)
    state["sigint2_db"] = db
    checks(f"{case}: the second SIGINT came while 'storing N of M packets…' was shown",
           lambda: expect(storing, f"no 'storing' status line on the pty within 60 s: {short(err)}")
           or f"c1 sent {sent}; 'storing' shown {t_storing - t_first:.2f} s after the first SIGINT, hoptrace exited "
              f"{t_end - t_storing:.2f} s after the second")
    want_line = f"interrupted; run 'hoptrace correlate --db {db}' later"
    checks(f"{case}: exit 1, '{want_line}'",
           lambda: expect(rc == 1 and want_line in err, f"exit {rc}: {short(err)}") or f"exit 1: {want_line}")
    spool = meta(db, "spool_file")
    stored_bytes = meta(db, "spool_stored_bytes")
    spool_size = Path(f"{db}-spool").stat().st_size if Path(f"{db}-spool").exists() else None
    rows_before = query(db, "SELECT count(*) FROM packets")[0][0]
    checks(f"{case}: the rest stays spooled (meta spool_file set, the file holds more than is stored)",
           lambda: expect(spool is not None and spool_size is not None and int(stored_bytes or 0) < spool_size,
                          f"spool_file {spool!r}, spool_stored_bytes {stored_bytes}, file size {spool_size}; "
                          f"{rows_before} rows stored (storing may have finished before the second SIGINT)")
           or f"spool_file {spool}, {stored_bytes} of {spool_size} bytes stored, {rows_before} rows so far")
    sound_database(checks, f"{case} (interrupted)", db)
    r = run(hoptrace, "correlate", "--db", db, timeout=180)
    checks(f"{case}: hoptrace correlate stores the rest",
           lambda: expect(r.returncode == 0 and meta(db, "spool_file") is None and not Path(f"{db}-spool").exists(),
                          f"exit {r.returncode}, spool_file {meta(db, 'spool_file')!r}: {short(r.stderr)}")
           or f"{short(r.stderr, 200)} → {r.stdout.strip()}")
    sound_database(checks, case, db)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and "exit 0")
    lo, hi = window(db)
    checks(f"{case}: packets per point = tcpdump's in the window", lambda: compare_counts(db, tcpdumps, marker, lo, hi))
    checks(f"{case}: nothing stored outside the window", lambda: nothing_outside(db, marker, lo, hi))


# --------------------------------------------------------------------------------------------
# 3. capture + SIGKILL


def case_sigkill_capture(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "3 SIGKILL capture"
    db, marker, dport = tmp / "killed.db", new_marker("kill"), 47313
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "killed", dport)
        try:
            cap = start_capture(hoptrace, lab, db)
            sender = start_sender(lab, "c1", marker, dport, 12000, 2.5e-4)  # 3 s of 4000 datagrams/s
            time.sleep(2.2)
            kill_ns = time.time_ns()
            cap.signal(signal.SIGKILL)
            rc, _out, err = cap.wait(30)
            sent = finish_sender(sender)
        finally:
            stop_tcpdumps(tcpdumps)
    spool = Path(f"{db}-spool")
    checks(f"{case}: the spool file remains, named in meta",
           lambda: expect(rc == -signal.SIGKILL and meta(db, "spool_file") is not None and spool.exists()
                          and spool.stat().st_size > 0,
                          f"exit {rc}, spool_file {meta(db, 'spool_file')!r}, {spool.name} exists: {spool.exists()}")
           or f"c1 sent {sent}; {meta(db, 'spool_file')}: {spool.stat().st_size} bytes")
    sound_database(checks, f"{case} (killed)", db)

    def report_refuses() -> str:
        r = run(hoptrace, "report", "--db", db)
        expect(r.returncode == 1 and f"hoptrace correlate --db {db}" in r.stderr,
               f"exit {r.returncode}: {short(r.stderr)}")
        return r.stderr.strip()
    checks(f"{case}: report refuses, naming hoptrace correlate", report_refuses)
    r = run(hoptrace, "correlate", "--db", db, timeout=180)
    checks(f"{case}: hoptrace correlate stores the spool",
           lambda: expect(r.returncode == 0 and meta(db, "spool_file") is None and not spool.exists(),
                          f"exit {r.returncode}, spool_file {meta(db, 'spool_file')!r}: {short(r.stderr)}")
           or f"{short(r.stderr, 300)} → {r.stdout.strip()}")
    torn = re.search(r"(\d+) frames of point (.+?) are lost", r.stderr)
    spool_lost = meta(db, "spool_lost")

    def torn_agrees() -> str:
        if torn is None:
            expect(spool_lost is None, f"meta spool_lost {spool_lost!r} but correlate said no torn chunk: "
                                       f"{short(r.stderr)}")
            return "no torn chunk this time (the kill came between two chunk writes): no spool_lost"
        expect(spool_lost is not None and torn.group(0) in spool_lost,
               f"correlate said '{torn.group(0)}', meta spool_lost {spool_lost!r}")
        return f"stderr and meta spool_lost: {torn.group(0)}"
    checks(f"{case}: a torn last chunk is reported on stderr and in meta spool_lost alike", torn_agrees)
    sound_database(checks, case, db)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and "exit 0")
    lo, _ = window(db)
    torn_frames = {torn.group(2): int(torn.group(1))} if torn else {}
    cutoff = kill_ns - int((CHUNK_AGE_S + TICK_SLACK_S) * 1e9)

    def last_second_only(name: str, want: dict[int, int], missing: list[int]) -> tuple[bool, str]:
        recent = sum(1 for t in want.values() if t >= cutoff)
        early = [s for s in missing if want[s] < cutoff]
        lost_torn = torn_frames.get(name, 0)
        if early:
            return False, (f"{len(missing)} of tcpdump's {len(want)} frames missing, {len(early)} of them older than "
                           f"{CHUNK_AGE_S + TICK_SLACK_S} s before the kill (seq {early[:5]}…): a killed capture may "
                           f"lose only each point's last second")
        if len(missing) > recent:
            return False, f"{len(missing)} missing, more than the {recent} frames of the last second before the kill"
        if len(missing) < lost_torn:
            return False, f"{len(missing)} missing, yet correlate said the torn chunk held {lost_torn} frames of it"
        return True, ""
    details: dict[str, str] = {}

    def counts() -> str:
        text = compare_counts(db, tcpdumps, marker, lo, kill_ns, last_second_only)
        stored = db_marked(db, marker)
        for name, td in tcpdumps.items():
            want = [s for s, t in tcpdump_marked(td.path, marker) if lo <= t <= kill_ns]
            details[name] = f"{len(want) - len(stored.get(name, []))} lost"
        return (text + f"; window = capture_start_ns..the kill; lost per point (each ≤ its frames of the last "
                       f"{CHUNK_AGE_S + TICK_SLACK_S} s): " + ", ".join(f"{k} {v}" for k, v in details.items()))
    checks(f"{case}: packets per point = tcpdump's up to the kill, minus at most each point's last second", counts)


# --------------------------------------------------------------------------------------------
# 4. import + SIGKILL


ETH = bytes.fromhex("02420a000002" "02420a000001" "0800")


def write_udp_pcap(path: Path, n: int, marker: bytes, size: int = 0, sport: int = 40123, dport: int = 40124) -> None:
    """n Ethernet/IPv4/UDP frames 10.0.0.1 -> 10.0.0.2 carrying "MARKER seq=NNNNNNN\\n" padded with '.' to `size`
    bytes of payload, 10 µs apart, nanosecond pcap, with correct IPv4 header checksums."""
    payload_len = max(size, len(marker) + 13)
    pad = b"." * (payload_len - len(marker) - 13)
    ip_len = 20 + 8 + payload_len
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    base = sum([0x4500, ip_len, 0x4000, 0x4011, *struct.unpack(">HH", src), *struct.unpack(">HH", dst)])
    udp = struct.pack(">HHHH", sport, dport, 8 + payload_len, 0)
    t0 = 1_760_000_000 * 1_000_000_000
    out = bytearray(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
    frame_len = len(ETH) + ip_len
    rec = struct.Struct("<IIII")
    for i in range(n):
        ident = i & 0xFFFF
        s = base + ident
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        ip = struct.pack(">HHHHHH", 0x4500, ip_len, ident, 0x4000, 0x4011, ~s & 0xFFFF) + src + dst
        ts = t0 + i * 10_000
        out += rec.pack(ts // 1_000_000_000, ts % 1_000_000_000, frame_len, frame_len)
        out += ETH + ip + udp + marker + b" seq=%07d\n" % i + pad
    path.write_bytes(bytes(out))


def case_import_kill(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "4 SIGKILL import"
    big = tmp / "big.pcap"
    write_udp_pcap(big, IMPORT_FRAMES, new_marker("imp"), size=1000)
    records = pcap_record_count(big)
    checks(f"{case}: the test's pcap", lambda: expect(records == IMPORT_FRAMES, f"{records} records")
           or f"{big.name}: {records} records, {big.stat().st_size} bytes (counted by walking its bytes)")
    for label, fraction, sig in (("just after the point appeared", 0.0, signal.SIGKILL),
                                 ("half-way", 0.5, signal.SIGKILL), ("at 90 %", 0.9, signal.SIGKILL),
                                 ("half-way (Ctrl-C)", 0.5, signal.SIGINT)):
        guarded(checks, f"{case} {label}", import_kill_one, checks, hoptrace, tmp, big, records, label, fraction,
                sig)


def wait_rows(db: Path, want: int, proc: subprocess.Popen, timeout: float = 60) -> tuple[int, int] | None:
    """Polls the database an import writes until its point 'big' exists with >= want packets; returns (packets,
    complete), or None when the import ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
            try:
                row = con.execute("SELECT packets, complete FROM points WHERE name = 'big'").fetchone()
            finally:
                con.close()
            if row is not None and row[0] >= want:
                return row
        except sqlite3.Error:
            pass  # not created yet, or the schema not yet written
        time.sleep(0.002)
    return None


def import_kill_one(checks: Checks, hoptrace: Path, tmp: Path, big: Path, records: int, label: str,
                    fraction: float, sig: signal.Signals = signal.SIGKILL) -> None:
    case = f"4 {sig.name} import {label}"
    db = tmp / f"import-{int(fraction * 100)}-{sig.name}.db"
    proc = subprocess.Popen([str(hoptrace), "import", "--db", str(db), str(big)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen = wait_rows(db, max(0, int(records * fraction)), proc)
    proc.send_signal(sig)
    proc.wait()
    checks(f"{case}: killed while it read the file",
           lambda: expect(seen is not None, f"the import ended (exit {proc.returncode}) before the point had "
                                            f"{int(records * fraction)} packets")
           or f"killed once the point showed {seen[0]} packets")
    sound_database(checks, f"{case} (killed)", db)
    rows = point_rows(db)
    stored = query(db, "SELECT count(*) FROM packets")[0][0]
    checks(f"{case}: point 'big' exists with complete = 0",
           lambda: expect("big" in rows and rows["big"]["complete"] == 0 and rows["big"]["packets"] == stored < records,
                          f"points {rows}, {stored} packets rows of {records}")
           or f"complete 0, {stored} of {records} packets stored (points.packets = rows)")

    def warns(command: list) -> str:
        r = run(hoptrace, *command[:1], "--db", db, *command[1:], timeout=180)
        lines = [line for line in r.stderr.splitlines() if "incomplete" in line]
        expect(lines and "big" in lines[0] and "--replace" in lines[0],
               f"hoptrace {command[0]} exit {r.returncode}, no warning naming 'incomplete', the point and "
               f"--replace: {short(r.stderr)}")
        return f"exit {r.returncode}: {lines[0]}"
    checks(f"{case}: report warns incomplete, naming the point and --replace", lambda: warns(["report"]))
    checks(f"{case}: correlate warns incomplete, naming the point and --replace", lambda: warns(["correlate"]))

    def again_refused() -> str:
        r = run(hoptrace, "import", "--db", db, big, timeout=180)
        expect(r.returncode == 1 and "--replace" in r.stderr, f"exit {r.returncode}: {short(r.stderr)}")
        line = next(line for line in r.stderr.splitlines() if "--replace" in line)
        after = point_rows(db).get("big", {})
        expect(after.get("complete") == 0, f"point after the refused import: {after}")
        return line.strip()
    checks(f"{case}: import again without --replace fails, naming --replace", again_refused)

    def replaced() -> str:
        r = run(hoptrace, "import", "--replace", "--db", db, big, timeout=180)
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        p = point_rows(db).get("big", {})
        n = query(db, "SELECT count(*) FROM packets k JOIN points p ON p.id = k.point_id WHERE p.name = 'big'")[0][0]
        expect(n == records and p.get("packets") == records and p.get("complete") == 1,
               f"{n} packets rows, point {p}; the file has {records} records")
        return f"{n} packets = the file's {records} records, complete 1"
    checks(f"{case}: import --replace stores exactly the file's record count", replaced)
    sound_database(checks, case, db)

    def reads_clean() -> str:
        r = run(hoptrace, "report", "--db", db, "--format", "json", timeout=180)
        expect(r.returncode == 0 and "incomplete" not in r.stderr, f"exit {r.returncode}: {short(r.stderr)}")
        return "exit 0, no warning"
    checks(f"{case}: report reads", reads_clean)


# --------------------------------------------------------------------------------------------
# 5. import into a database a running capture holds


def case_import_into_capture(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "5 import into a running capture"
    db, marker, dport = tmp / "held.db", new_marker("held"), 47315
    small = tmp / "small.pcap"
    write_udp_pcap(small, 10, new_marker("small"))
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "held", dport)
        try:
            cap = start_capture(hoptrace, lab, db)
            sender = start_sender(lab, "c1", marker, dport, 600, 2e-3)
            time.sleep(0.3)
            t0 = time.monotonic()
            r = run(hoptrace, "import", "--db", db, small, timeout=60)
            took = time.monotonic() - t0
            sent = finish_sender(sender)
            cap.signal(signal.SIGINT)
            rc, _out, err = cap.wait(120)
        finally:
            stop_tcpdumps(tcpdumps)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    checks(f"{case}: exit 1 at once, one line saying another hoptrace is writing it",
           lambda: expect(r.returncode == 1 and took < 5 and len(lines) == 1 and "another hoptrace" in lines[0]
                          and str(db) in lines[0],
                          f"exit {r.returncode} after {took:.2f} s: {r.stderr!r}") or f"{took:.2f} s: {lines[0]}")
    checks(f"{case}: the capture itself exits 0",
           lambda: expect(rc == 0, f"exit {rc}: {short(err)}") or f"exit 0; c1 sent {sent}")
    names = sorted(point_rows(db))
    want = sorted(p[0] for p in expected_points(lab, ("c1",)))
    checks(f"{case}: the database gains no point from the import",
           lambda: expect(names == want and query(db, "SELECT count(*) FROM packets WHERE instr(raw, ?) > 0",
                                                  (b"htfault-small",))[0][0] == 0,
                          f"points {names}, want {want}") or f"points {names}")
    sound_database(checks, case, db)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and "exit 0")
    lo, hi = window(db)
    checks(f"{case}: packets per point = tcpdump's in the window", lambda: compare_counts(db, tcpdumps, marker, lo, hi))
    checks(f"{case}: nothing stored outside the window", lambda: nothing_outside(db, marker, lo, hi))


# --------------------------------------------------------------------------------------------
# 6. correlate + SIGKILL


def correlate_counts(db: Path) -> dict[str, int]:
    return {t: query(db, f"SELECT count(*) FROM {t}")[0][0] for t in ("journeys", "flows", "losses", "nat_rewrites")}


def copy_db(src: Path, dst: Path) -> None:
    a = sqlite3.connect(f"file:{src}?mode=rw", uri=True)
    b = sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def case_correlate_kill(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, state: dict) -> None:
    case = "6 SIGKILL correlate"
    db = state.get("sigint2_db")
    expect(db is not None and db.exists() and meta(db, "spool_file") is None,
           "case 2's database is not there (or still spooled): nothing big to correlate")
    packets = query(db, "SELECT count(*) FROM packets")[0][0]
    reference = tmp / "correlate-reference.db"
    copy_db(db, reference)
    t0 = time.monotonic()
    r = run(hoptrace, "correlate", "--db", reference, timeout=180)
    clean_s = time.monotonic() - t0
    want = correlate_counts(reference)
    checks(f"{case}: a clean correlate of a copy takes over a second",
           lambda: expect(r.returncode == 0 and clean_s > 1.0,
                          f"exit {r.returncode}, {clean_s:.2f} s on {packets} packets: {short(r.stderr)}")
           or f"{clean_s:.2f} s on {packets} packets: {r.stdout.strip()}; tables {want}")
    for fraction, sig in ((0.3, signal.SIGKILL), (0.7, signal.SIGKILL), (0.5, signal.SIGINT)):
        label = f"6 {sig.name} correlate at {int(fraction * 100)} %"
        proc = subprocess.Popen([str(hoptrace), "correlate", "--db", str(db)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(clean_s * fraction)
        alive = proc.poll() is None
        proc.send_signal(sig)
        proc.wait()
        checks(f"{label}: killed while it ran", lambda: expect(alive, f"it had ended (exit {proc.returncode}) "
                                                                     f"after {clean_s * fraction:.2f} s")
               or f"{sig.name} after {clean_s * fraction:.2f} s")
        sound_database(checks, label, db)

        def report_after_kill() -> str:
            rr = run(hoptrace, "report", "--db", db, "--format", "json", timeout=180)
            expect(rr.returncode == 0 or (rr.returncode == 1 and "not correlated yet" in rr.stderr),
                   f"exit {rr.returncode}: {short(rr.stderr)}")
            return "reads (exit 0)" if rr.returncode == 0 else rr.stderr.strip()
        checks(f"{label}: report reads, or says 'not correlated yet'", report_after_kill)

        def again() -> str:
            rr = run(hoptrace, "correlate", "--db", db, timeout=180)
            expect(rr.returncode == 0, f"exit {rr.returncode}: {short(rr.stderr)}")
            got = correlate_counts(db)
            expect(got == want and rr.stdout.strip() == r.stdout.strip(),
                   f"tables {got}, a clean correlate of the copy gave {want}; stdout {rr.stdout.strip()!r} vs "
                   f"{r.stdout.strip()!r}")
            return f"the same as the clean copy: {rr.stdout.strip()}"
        checks(f"{label}: correlate again gives the clean result", again)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and "exit 0")


# --------------------------------------------------------------------------------------------
# 7. disk full


def case_disk_full(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "7 disk full"
    full = tmp / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(full)], check=True,
                   capture_output=True, text=True, timeout=30)
    try:
        disk_full_body(checks, hoptrace, lab, tmp, full, case)
    finally:
        if os.environ.get("HOPTRACE_TEST_KEEP") == "1":
            subprocess.run(["cp", "-a", str(full), str(tmp / "full-kept")], capture_output=True, timeout=60)
        r = subprocess.run(["umount", str(full)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(full)], capture_output=True, text=True, timeout=30)


def df(path: Path) -> str:
    st = os.statvfs(path)
    return f"{st.f_bavail * st.f_frsize >> 10} KiB free of {st.f_blocks * st.f_frsize >> 20} MiB"


def disk_full_body(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, full: Path, case: str) -> None:
    db, marker, dport = full / "cap.db", new_marker("full"), 47317
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "full-tcpdump", dport)  # on the normal disk
        try:
            cap = start_capture(hoptrace, lab, db)
            sender = start_sender(lab, "c1", marker, dport, 40000, 2e-4, size=1400)  # ~28 MB/s over four points
            t0 = time.monotonic()
            try:
                cap.proc.wait(30)
                by_itself = True
            except subprocess.TimeoutExpired:
                by_itself = False
                cap.signal(signal.SIGINT)
            rc, _out, err = cap.wait(180)
            stopped_after = time.monotonic() - t0
            sender.kill()
            sent = finish_sender(sender)
        finally:
            stop_tcpdumps(tcpdumps)
    files = {p.name: p.stat().st_size for p in full.iterdir()}
    state = f"exit {rc}; files {files}; {df(full)}"
    checks(f"{case}: the capture stops by itself",
           lambda: expect(by_itself, f"still capturing 30 s into the flood (stopped with SIGINT): {state}")
           or f"after {stopped_after:.1f} s; c1 sent {sent or 'until killed'}")
    checks(f"{case}: stderr says 'the disk is full'",
           lambda: expect("the disk is full" in err, f"{state}: {short(err)}")
           or next(line for line in err.splitlines() if "the disk is full" in line).strip())
    checks(f"{case}: meta stop_reason = 'disk full'",
           lambda: expect(meta(db, "stop_reason") == "disk full", f"stop_reason {meta(db, 'stop_reason')!r}; {state}")
           or "disk full")
    what_to_do = [line for line in err.splitlines() if "hoptrace correlate --db" in line or "free some" in line]
    stored_all = meta(db, "spool_file") is None and meta(db, "correlated_ns") is not None
    checks(f"{case}: exit 0 having stored and correlated everything, or 1 with a line saying what to do",
           lambda: expect((rc == 0 and stored_all) or (rc == 1 and what_to_do),
                          f"{state}; spool_file {meta(db, 'spool_file')!r}, correlated_ns {meta(db, 'correlated_ns')!r}"
                          f": {short(err)}")
           or ("exit 0: stored and correlated everything in place" if rc == 0 else f"exit 1: {what_to_do[0].strip()}"))
    sound_database(checks, case, db)
    recovery = ""
    if rc != 0 or meta(db, "correlated_ns") is None or meta(db, "spool_file") is not None:
        r = run(hoptrace, "correlate", "--db", db, timeout=180)
        recovery = f"after 'hoptrace correlate' on the full disk (exit {r.returncode}: {short(r.stderr, 300)}) "
        checks(f"{case}: hoptrace correlate, run while the disk is still full",
               lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}; files "
                                                 f"{ {p.name: p.stat().st_size for p in full.iterdir()} }; {df(full)}")
               or f"{short(r.stderr, 300)} → {r.stdout.strip()}")
        sound_database(checks, f"{case} (after correlate)", db)
    checks(f"{case}: report reads", lambda: report_reads(hoptrace, db) and f"{recovery}exit 0")
    lo, hi = window(db)
    checks(f"{case}: packets per point = tcpdump's in the window (which ends when it stopped)",
           lambda: compare_counts(db, tcpdumps, marker, lo, hi))
    checks(f"{case}: nothing stored outside the window", lambda: nothing_outside(db, marker, lo, hi))


# --------------------------------------------------------------------------------------------
# 8. vanished interface (last: it takes c1 off the lab)


def case_vanished(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    case = "8 vanished interface"
    db, dport = tmp / "vanished.db", 47318
    m1, m2 = new_marker("gone1"), new_marker("gone2")
    points = expected_points(lab, ("c1",))
    dead = {points[0][0], points[1][0]}  # c1's eth0 and its host veth
    with udp_sink(lab, dport):
        tcpdumps = start_tcpdumps(lab, tmp / "vanished", dport)
        try:
            cap = start_capture(hoptrace, lab, db)
            s1 = start_sender(lab, "c1", m1, dport, 5000, 1e-3)
            s2 = start_sender(lab, "c2", m2, dport, 3500, 1e-3, sport=SPORT + 1)
            time.sleep(1.5)
            del_ns = time.time_ns()
            subprocess.run(["ip", "-n", lab.ns["host"], "link", "del", lab.veth["c1"]], check=True,
                           capture_output=True, text=True, timeout=30)
            sent2 = finish_sender(s2)  # c2 goes on for two more seconds
            still = cap.proc.poll() is None
            time.sleep(0.3)
            cap.signal(signal.SIGINT)
            rc, _out, err = cap.wait(120)
            sent1 = finish_sender(s1)
        finally:
            stop_tcpdumps(tcpdumps)
    checks(f"{case}: the capture goes on after the deletion, exits 0 on SIGINT",
           lambda: expect(still and rc == 0 and meta(db, "stop_reason") == "signal",
                          f"running after the deletion: {still}, exit {rc}, stop_reason "
                          f"{meta(db, 'stop_reason')!r}: {short(err)}")
           or f"exit 0, stop_reason signal; c1 sent {sent1}, c2 sent {sent2}")
    rows = point_rows(db)

    def notes() -> str:
        bad = [f"{n}: note {rows.get(n, {}).get('note')!r}" for n in dead
               if "capture ended early" not in (rows.get(n, {}).get("note") or "")]
        bad += [f"{n}: note {rows[n]['note']!r} (it did not end)" for n in rows
                if n not in dead and rows[n]["note"]]
        expect(not bad, "; ".join(bad))
        return "; ".join(f"{n}: {rows[n]['note']}" for n in sorted(dead))
    checks(f"{case}: the two dead points' note says 'capture ended early', the others have none", notes)

    def report_names_it() -> str:
        rep = report_reads(hoptrace, db)
        got = {p["name"]: p.get("note", "") for p in rep["points"]}
        expect(all("capture ended early" in got.get(n, "") for n in dead), f"report points' notes {got}")
        return f"report points[].note: { {n: got[n] for n in sorted(dead)} }"
    checks(f"{case}: report reads and names the cause", report_names_it)
    sound_database(checks, case, db)
    lo, hi = window(db)
    rows_by_name = point_rows(db)

    def before_deletion(name: str, want: dict[int, int], missing: list[int]) -> tuple[bool, str]:
        drops = rows_by_name.get(name, {}).get("kernel_drops") or 0
        if len(missing) <= drops:
            return True, ""
        ages = sorted((want[s] - del_ns) / 1e6 for s in missing)
        last = sorted(want, key=want.get)[-len(missing):]
        return False, (f"hoptrace stored {len(want) - len(missing)}, tcpdump saw {len(want)} before the interface "
                       f"vanished: {len(missing)} missing (more than hoptrace's {drops} kernel drops), timestamped "
                       f"{ages[0]:+.0f} ms to {ages[-1]:+.0f} ms from the moment 'ip link del' was started"
                       + (" — exactly the last ones before it" if sorted(missing) == sorted(last) else "")
                       + f" (seq {missing[:3]}…{missing[-1:]})")
    checks(f"{case}: c1's datagrams per point = tcpdump's (on the dead points: until they died)",
           lambda: compare_counts(db, tcpdumps, m1, lo, hi, before_deletion))
    checks(f"{case}: nothing stored outside the window", lambda: nothing_outside(db, m1, lo, hi) + "; and c2's: "
           + nothing_outside(db, m2, lo, hi))
    alive = {n: td for n, td in tcpdumps.items() if n not in dead}

    def others_go_on() -> str:
        text = compare_counts(db, alive, m2, lo, hi)
        later = {n: sum(1 for _, t in db_marked(db, m2).get(n, []) if t > del_ns) for n in alive}
        expect(all(v > 0 for v in later.values()), f"c2's datagrams stored after the deletion: {later}")
        return f"{text}; after the deletion: {later}"
    checks(f"{case}: the other points go on: c2's datagrams = tcpdump's, also after the deletion", others_go_on)


# --------------------------------------------------------------------------------------------


def body(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    lab.run("c1", "ping", "-n", "-c", "1", "-W", "2", lab.ip["server"])  # ARP first: no datagram waits for it
    lab.run("c2", "ping", "-n", "-c", "1", "-W", "2", lab.ip["server"])
    state: dict = {}
    only = os.environ.get("HOPTRACE_FAULT_CASES", "").replace(",", " ").split()  # e.g. "7 8", to look at a few
    t0 = time.monotonic()
    for name, fn, *extra in (("1 capture + SIGINT once", case_sigint_once),
                             ("2 capture + SIGINT twice", case_sigint_twice, state),
                             ("3 capture + SIGKILL", case_sigkill_capture),
                             ("4 import + SIGKILL", case_import_kill),
                             ("5 import into a running capture", case_import_into_capture),
                             ("6 correlate + SIGKILL", case_correlate_kill, state),
                             ("7 disk full", case_disk_full),
                             ("8 vanished interface", case_vanished)):
        if only and name.split()[0] not in only:
            continue
        started = time.monotonic()
        guarded(checks, name, fn, checks, hoptrace, lab, tmp, *extra)
        print(f"-- case {name}: {time.monotonic() - started:.1f} s (total {time.monotonic() - t0:.1f} s)",
              flush=True)


if __name__ == "__main__":
    sys.exit(run_lab_test("fault_matrix", "fault matrix", body, watchdog_s=WATCHDOG_S))
