#!/usr/bin/env python3
"""End-to-end test of issue #13 "Safe on a production host", the files: no lab.

- `report -o` / `export -o` (text, JSON, CSV, HTML, pcapng): a device (a char device node made here with mknod,
  like /dev/full; /dev/null), a FIFO, or a symbolic link is written directly and never removed; a regular file is
  replaced only once the new one is complete, and a failed write (EFBIG, from RLIMIT_FSIZE: a full disk without
  root) leaves the old file as it was and no temporary file behind; every error is one line naming the file, exit 1.
- Every file holding captured packets that hoptrace creates is mode 0600, whatever the umask: the database, the
  reports, the pcapng export.
- Readers (report, export) open the database read-only: an empty file stays empty (python's sqlite3 sees no
  table in it), a missing one or a dangling symbolic link is not created.
- Writers (import, capture) refuse a dangling symbolic link as --db and do not create its target; a capture
  refuses a symbolic link planted as FILE-spool and leaves the file it points to alone (as root: capture on the
  host's `lo` for a moment; skipped without root).

Expectations come from os.stat / os.lstat, python's sqlite3, capinfos, and the bytes written here.
Exit 0 if every check passed, 1 otherwise; the last line is "N passed, M failed".
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from lablib import expect  # noqa: E402

DATA = lablib.REPO_ROOT / "tests" / "data" / "lab"
CAPTURES = [DATA / "c1-eth0.pcap", DATA / "c1-veth.pcap", DATA / "docker0.pcap", DATA / "uplink.pcap"]
CRASH_MARKS = ("terminate called", "AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
               "Segmentation fault", "Aborted", "core dumped")
FORMATS = ("text", "json", "csv", "html")

checks = lablib.Checks()


def run(hoptrace: Path, *args, fsize: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs hoptrace with umask 022 (so that a 0600 file is hoptrace's doing) and, with fsize, RLIMIT_FSIZE:
    writing past it fails with EFBIG (SIGXFSZ ignored), a write error on a regular file without root."""
    def setup() -> None:
        os.umask(0o022)
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=setup)


def summary(r: subprocess.CompletedProcess) -> str:
    return " | ".join(line for line in r.stderr.splitlines() if line.strip()) or "(stderr empty)"


def expect_one_error_line(r: subprocess.CompletedProcess, name: str) -> str:
    expect(0 <= r.returncode < 128, f"killed by a signal (exit {r.returncode})")
    marks = [m for m in CRASH_MARKS if m in r.stderr]
    expect(not marks, f"crash output: {summary(r)}")
    expect(r.returncode == 1, f"exit {r.returncode}, want 1: {summary(r)}")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    expect(len(lines) == 1, f"{len(lines)} stderr lines, want 1: {summary(r)}")
    expect(name in lines[0], f"the error does not name {name}: {lines[0]}")
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path, before: set[str]) -> list[str]:
    """Names in directory that were not there before, other than SQLite's -wal/-shm of a database."""
    return sorted(n for n in os.listdir(directory) if n not in before and not n.endswith(("-wal", "-shm")))


def tables(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]


def make_device(path: Path) -> bool:
    """A char device node like /dev/full (1, 7) at path; False when we may not (no root)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        return True
    except PermissionError:
        return False


def command(kind: str, db: Path, out: Path | str, fmt: str = "text") -> list:
    if kind == "export":
        return ["export", "--db", db, "-o", out]
    return ["report", "--db", db, "--format", fmt, "-o", out]


def kinds() -> list[tuple[str, str]]:
    return [("report", f) for f in FORMATS] + [("export", "pcapng")]


def check_outputs(hoptrace: Path, tmp: Path, db: Path) -> None:
    full = tmp / "full"
    have_device = make_device(full)

    for kind, fmt in kinds():
        label = f"{kind} {fmt}"

        # A device that fails every write (ENOSPC): one line, exit 1, the node is still there.
        def device() -> str:
            target = full if have_device else Path("/dev/full")
            if not have_device:
                # Without root we cannot make our own node; /dev/full itself is only checked, never at risk
                # (no root: no permission to remove it).
                expect(os.geteuid() != 0, "root, but mknod failed")
            r = run(hoptrace, *command(kind, db, target, fmt))
            line = expect_one_error_line(r, str(target))
            expect(stat.S_ISCHR(os.lstat(target).st_mode), f"{target} is no longer a char device")
            return f"{target} still a char device; {line}"
        checks(f"{label} -o a full device", device)

        # /dev/null: written directly, stays a device, exit 0.
        def null() -> str:
            r = run(hoptrace, *command(kind, db, "/dev/null", fmt))
            expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
            expect(stat.S_ISCHR(os.lstat("/dev/null").st_mode), "/dev/null is no longer a char device")
            expect(not [n for n in os.listdir("/dev") if ".hoptrace-" in n], "a temporary file was left in /dev")
            return "exit 0, /dev/null untouched"
        checks(f"{label} -o /dev/null", null)

        # A new file: mode 0600 under umask 022, nothing else left beside it.
        def new_file() -> str:
            out = tmp / f"new-{kind}-{fmt}.out"
            before = set(os.listdir(tmp))
            r = run(hoptrace, *command(kind, db, out, fmt))
            expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
            expect(out.is_file() and out.stat().st_size > 0, f"{out} missing or empty")
            expect(mode(out) == 0o600, f"{out} has mode {mode(out):o}, want 600")
            extra = [n for n in leftovers(tmp, before) if n != out.name]
            expect(not extra, f"left beside it: {extra}")
            if kind == "export":
                info = subprocess.run(["capinfos", "-c", "-M", str(out)], capture_output=True, text=True)
                expect(info.returncode == 0, f"capinfos cannot read it: {info.stderr.strip()}")
            return f"mode 600, {out.stat().st_size} bytes"
        checks(f"{label} -o a new file", new_file)

        # An existing regular file and a write that fails (EFBIG past 1 KiB): the old file is kept as it was,
        # no temporary file is left, one line naming the file. A connection of our own holds the database open
        # meanwhile: the first connection rewrites SQLite's -shm, which the limit would hit instead.
        def failed_write() -> str:
            out = tmp / f"old-{kind}-{fmt}.out"
            old = b"the previous report, which a failed run must not destroy\n"
            out.write_bytes(old)
            os.chmod(out, 0o644)
            before = set(os.listdir(tmp))
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                con.execute("SELECT count(*) FROM points").fetchall()
                r = run(hoptrace, *command(kind, db, out, fmt), fsize=1024)
            finally:
                con.close()
            line = expect_one_error_line(r, str(out))
            expect("/proc/self/fd" not in line and ".hoptrace-" not in line, f"the error names another file: {line}")
            expect(out.exists(), f"{out} was removed")
            expect(out.read_bytes() == old, f"{out} was changed ({out.stat().st_size} bytes)")
            expect(mode(out) == 0o644, f"{out} mode changed to {mode(out):o}")
            expect(not leftovers(tmp, before), f"left behind: {leftovers(tmp, before)}")
            return line
        checks(f"{label} -o an existing file, write fails", failed_write)

        # The same file replaced by a complete one: contents equal a fresh run's, mode 0600.
        def replaced() -> str:
            out = tmp / f"old-{kind}-{fmt}.out"
            fresh = tmp / f"fresh-{kind}-{fmt}.out"
            r1 = run(hoptrace, *command(kind, db, out, fmt))
            r2 = run(hoptrace, *command(kind, db, fresh, fmt))
            expect(r1.returncode == 0 and r2.returncode == 0, f"exit {r1.returncode}/{r2.returncode}: {summary(r1)}")
            if kind == "report":  # (a pcapng's section comment is the same; compare sizes only for export)
                expect(out.read_bytes() == fresh.read_bytes(), f"{out} is not the complete report")
            else:
                expect(out.stat().st_size == fresh.stat().st_size, f"{out} differs from a fresh export")
            expect(mode(out) == 0o600, f"mode {mode(out):o}, want 600")
            return f"replaced, {out.stat().st_size} bytes, mode 600"
        checks(f"{label} -o an existing file, replaced", replaced)

        # A FIFO: written directly (a reader gets the output), still a FIFO afterwards.
        def fifo() -> str:
            path = tmp / f"fifo-{kind}-{fmt}"
            os.mkfifo(path, 0o600)
            got = bytearray()

            def reader() -> None:
                with open(path, "rb") as f:
                    got.extend(f.read())
            t = threading.Thread(target=reader)
            t.start()
            r = run(hoptrace, *command(kind, db, path, fmt))
            t.join(60)
            expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
            expect(stat.S_ISFIFO(os.lstat(path).st_mode), f"{path} is no longer a FIFO")
            expect(len(got) > 0, "the reader got nothing")
            return f"{len(got)} bytes through the FIFO"
        checks(f"{label} -o a FIFO", fifo)

        # A symbolic link to a file: written through, the link stays a link.
        def link() -> str:
            target = tmp / f"link-target-{kind}-{fmt}.out"
            target.write_bytes(b"old\n")
            path = tmp / f"link-{kind}-{fmt}.out"
            path.symlink_to(target)
            r = run(hoptrace, *command(kind, db, path, fmt))
            expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
            expect(path.is_symlink(), f"{path} is no longer a symbolic link")
            expect(target.stat().st_size > 4, f"{target} was not written")
            return f"written through the link, {target.stat().st_size} bytes"
        checks(f"{label} -o a symbolic link", link)

        # A dangling symbolic link: refused, its target not created.
        def dangling() -> str:
            target = tmp / f"nowhere-{kind}-{fmt}.out"
            path = tmp / f"dangling-{kind}-{fmt}.out"
            path.symlink_to(target)
            r = run(hoptrace, *command(kind, db, path, fmt))
            line = expect_one_error_line(r, str(path))
            expect(not target.exists(), f"{target} was created")
            return line
        checks(f"{label} -o a dangling symbolic link", dangling)


def check_readers(hoptrace: Path, tmp: Path) -> None:
    for kind, fmt in kinds():
        label = f"{kind} {fmt}" if kind == "report" else kind

        def empty() -> str:
            db = tmp / f"empty-{kind}-{fmt}.db"
            db.write_bytes(b"")
            out = tmp / f"empty-{kind}-{fmt}.out"
            r = run(hoptrace, *command(kind, db, out, fmt))
            line = expect_one_error_line(r, str(db))
            expect(db.stat().st_size == 0, f"{db} now holds {db.stat().st_size} bytes")
            expect(tables(db) == [], f"{db} now has tables {tables(db)}")
            expect(not out.exists(), f"{out} was written")
            return line
        checks(f"{label} --db an empty file", empty)

        def dangling() -> str:
            target = tmp / f"db-nowhere-{kind}-{fmt}.db"
            db = tmp / f"db-dangling-{kind}-{fmt}.db"
            db.symlink_to(target)
            r = run(hoptrace, *command(kind, db, tmp / "unused.out", fmt))
            line = expect_one_error_line(r, str(db))
            expect(not target.exists(), f"{target} was created")
            return line
        checks(f"{label} --db a dangling symbolic link", dangling)

        def missing() -> str:
            db = tmp / f"missing-{kind}-{fmt}.db"
            r = run(hoptrace, *command(kind, db, tmp / "unused.out", fmt))
            line = expect_one_error_line(r, str(db))
            expect(not db.exists(), f"{db} was created")
            return line
        checks(f"{label} --db a missing file", missing)


def check_writers(hoptrace: Path, tmp: Path) -> None:
    def import_mode() -> str:
        db = tmp / "fresh-import.db"
        r = run(hoptrace, "import", "-q", "--db", db, CAPTURES[0])
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        expect(mode(db) == 0o600, f"{db} has mode {mode(db):o}, want 600 (umask 022)")
        return "mode 600"
    checks("import creates the database 0600", import_mode)

    def import_dangling() -> str:
        target = tmp / "import-target.db"
        db = tmp / "import-link.db"
        db.symlink_to(target)
        r = run(hoptrace, "import", "-q", "--db", db, CAPTURES[0])
        line = expect_one_error_line(r, str(db))
        expect(not target.exists(), f"{target} was created through the link")
        return line
    checks("import --db a dangling symbolic link", import_dangling)

    root = os.geteuid() == 0

    def capture_dangling() -> str:
        target = tmp / "capture-target.db"
        db = tmp / "capture-link.db"
        db.symlink_to(target)
        r = run(hoptrace, "capture", "--db", db, "--point", ":lo", "--duration", "0.2", "-q")
        expect(r.returncode != 0, f"exit 0: {summary(r)}")
        expect(not target.exists(), f"{target} was created through the link")
        if root:
            expect_one_error_line(r, str(db))
        return summary(r)
    checks("capture --db a dangling symbolic link", capture_dangling)

    def capture_spool_link() -> str:
        if not root:
            return "skipped: capturing needs root"
        victim = tmp / "victim.txt"
        precious = b"a file the capture must not truncate\n" * 100
        victim.write_bytes(precious)
        db = tmp / "spooled.db"
        spool = Path(str(db) + "-spool")
        spool.symlink_to(victim)
        r = run(hoptrace, "capture", "--db", db, "--point", ":lo", "--duration", "0.2", "-q")
        line = expect_one_error_line(r, str(spool))
        expect(victim.read_bytes() == precious, f"{victim} was changed ({victim.stat().st_size} bytes)")
        expect(spool.is_symlink(), f"{spool} (the planted link) was removed or replaced")
        expect(not db.exists(), f"{db}, created by the failed run, was left behind")
        return line
    checks("capture with a symbolic link planted as FILE-spool", capture_spool_link)

    def capture_modes() -> str:
        if not root:
            return "skipped: capturing needs root"
        db = tmp / "live.db"
        r = run(hoptrace, "capture", "--db", db, "--point", ":lo", "--duration", "0.3", "-q")
        expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
        expect(mode(db) == 0o600, f"{db} has mode {mode(db):o}, want 600")
        expect(not Path(str(db) + "-spool").exists(), "the spool was not removed after storing")
        return "mode 600"
    checks("capture creates the database 0600", capture_modes)


def main() -> int:
    hoptrace = lablib.hoptrace_binary()
    with tempfile.TemporaryDirectory(prefix="hoptrace-safe-files-") as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "run.db"

        def make_db() -> str:
            r = run(hoptrace, "import", "-q", "--db", db, *CAPTURES)
            expect(r.returncode == 0, f"import exit {r.returncode}: {summary(r)}")
            return f"{db.stat().st_size} bytes"
        if checks("import the lab captures", make_db) is None:
            return checks.summary()
        check_outputs(hoptrace, tmp, db)
        check_readers(hoptrace, tmp)
        check_writers(hoptrace, tmp)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
