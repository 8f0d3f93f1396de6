#!/usr/bin/env python3
"""End-to-end test of the live commands' failures (topology, capture, trace) in the lab.

Every expected failure must give exactly one line on stderr starting with "hoptrace <cmd>: ",
exit non-zero (1 runtime, 2 usage) and not crash: a missing namespace, process, container (with
a docker client but no engine, and with neither docker nor podman on PATH), not being root, a bad
--filter, a --point on an interface that does not exist, a --db that already holds a capture (or
is not a hoptrace database: refused and left byte for byte as it was).

And an interface that vanishes during a capture: c2's host veth is deleted (with it c2's eth0)
while c1 pings; hoptrace keeps capturing until --duration, exits 0, notes on c2's points that
their capture ended, and goes on storing c1's packets after the deletion.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (Background, Checks, expect, expected_points, guarded, netns_left,  # noqa: E402
                         printed_summary, query, run, short, workdir)

CRASH_SIGNS = ("terminate called", "Aborted", "Segmentation fault", "runtime error:", "AddressSanitizer",
               "LeakSanitizer", "core dumped", "Assertion")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def one_line_error(r: subprocess.CompletedProcess, cmd: str, *, contains: str | tuple[str, ...] = (),
                   rc: int | tuple[int, ...] = (1, 2)) -> str:
    """r failed cleanly: exit code in rc, exactly one line on stderr, "hoptrace CMD: …", nothing on
    stdout, no sign of a crash. Returns the line."""
    lines = r.stderr.strip().splitlines()
    rcs = (rc,) if isinstance(rc, int) else rc
    expect(r.returncode in rcs, f"exit {r.returncode}, want {' or '.join(map(str, rcs))}; stderr: {short(r.stderr)}")
    expect(not any(s in r.stderr for s in CRASH_SIGNS), f"crash: {short(r.stderr)}")
    expect(len(lines) == 1, f"{len(lines)} lines on stderr, want one: {short(r.stderr)}")
    expect(lines[0].startswith(f"hoptrace {cmd}: "), f"stderr {lines[0]!r} does not start with 'hoptrace {cmd}: '")
    expect(r.stdout.strip() == "", f"stdout: {short(r.stdout)}")
    for word in (contains,) if isinstance(contains, str) else contains:
        expect(word.lower() in lines[0].lower(), f"{lines[0]!r} does not mention {word!r}")
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_state(d: Path) -> dict[str, str]:
    """Every file of a directory with its content hash (the db and any -wal/-shm next to it)."""
    return {p.name: sha256(p) for p in sorted(d.iterdir()) if p.is_file()}


def path_without(*tools: str) -> str:
    """$PATH without the directories that hold any of the tools."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any(os.access(os.path.join(d, t), os.X_OK) for t in tools)]
    return os.pathsep.join(keep)


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(110)
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-live-errors-") as tmp, lablib.Lab() as lab:
        prefixes.append(lab.prefix)
        guarded(checks, "error cases", errors, checks, hoptrace, lab, tmp)
        guarded(checks, "an interface vanishes during a capture", vanish, checks, hoptrace, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


def errors(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    host = lab.ns["host"]
    c1 = lab.ns["c1"]
    n = [0]

    # The CMD by its full path: the "neither docker nor podman" case takes /usr/bin off PATH when docker.io is
    # installed there, and a CMD not found would be the error reported instead of the missing client.
    true = shutil.which("true") or "/bin/true"

    def new_db() -> Path:
        n[0] += 1
        return tmp / f"new{n[0]}.db"

    def variants(target: list[str]) -> list[tuple[str, list[str], Path | None]]:
        """The same target given to topology, capture and trace."""
        cap, tr = new_db(), new_db()
        return [("topology", ["topology", *target, "--host-netns", host], None),
                ("capture", ["capture", "--db", cap, *target, "--host-netns", host, "--duration", "1"], cap),
                ("trace", ["trace", "--db", tr, *target, "--host-netns", host, "--", true], tr)]

    def failing(name: str, target: list[str], contains, rc=1) -> None:
        for cmd, args, db in variants(target):
            def one(args=args, cmd=cmd, db=db) -> str:
                r = run(hoptrace, *args, timeout=60)
                line = one_line_error(r, cmd, contains=contains, rc=rc)
                expect(db is None or not db.exists(), f"{db} was created")
                return line
            checks(f"{cmd} {name}", one)

    failing("--netns nosuchns", ["--netns", "nosuchns"], "nosuchns")
    failing("--pid 999999", ["--pid", "999999"], "999999")

    have_client = [t for t in ("docker", "podman") if shutil.which(t)]
    if have_client:
        # The client is installed (here without an engine to answer): still one clean line, not its noise.
        failing(f"--container nosuch ({'/'.join(have_client)} client on PATH)", ["--container", "nosuch"],
                "nosuch")
    else:
        print("note: no docker or podman client on PATH; only the 'neither is installed' case runs", flush=True)

    def no_docker() -> str:
        env = {**os.environ, "PATH": path_without("docker", "podman")}
        expect(shutil.which("docker", path=env["PATH"]) is None, "docker still on PATH")
        lines = []
        for cmd, args, db in variants(["--container", "nosuch"]):
            r = run(hoptrace, *args, timeout=60, env=env)
            lines.append(one_line_error(r, cmd, contains="neither docker nor podman"))
            expect(db is None or not db.exists(), f"{db} was created")
        return lines[0]
    checks("--container with neither docker nor podman on PATH (topology, capture, trace)", no_docker)

    # Not root: as user nobody. The database directory is writable by nobody, so only hoptrace's
    # own refusal can keep the file from being created.
    open_dir = tmp / "nobody"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    tmp.chmod(0o755)
    for cmd, extra in (("topology", []), ("capture", ["--db", open_dir / "c.db", "--duration", "1"]),
                       ("trace", ["--db", open_dir / "t.db", "--", "true"])):
        def not_root(cmd=cmd, extra=extra) -> str:
            argv = [*NOBODY, str(hoptrace), cmd, "--netns", c1, "--host-netns", host, *map(str, extra)]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            line = one_line_error(r, cmd, contains=("root",))
            expect(not any(open_dir.iterdir()), f"files created: {[p.name for p in open_dir.iterdir()]}")
            return line
        checks(f"{cmd} as user nobody", not_root)

    def not_root_own_ns() -> str:
        # Without --host-netns the host is hoptrace's own namespace; entering c1's still needs root.
        r = subprocess.run([*NOBODY, str(hoptrace), "topology", "--netns", c1], capture_output=True, text=True,
                           timeout=60)
        return one_line_error(r, "topology", contains="root")
    checks("topology as user nobody, host = its own namespace", not_root_own_ns)

    for cmd in ("capture", "trace"):
        def bad_filter(cmd=cmd) -> str:
            db = new_db()
            r = run(hoptrace, cmd, "--db", db, "--netns", c1, "--host-netns", host, "--filter", "tcp port",
                    "--duration", "1", *(["--", "true"] if cmd == "trace" else []), timeout=60)
            return one_line_error(r, cmd, contains=("filter", "tcp port"))
        checks(f"{cmd} --filter 'tcp port'", bad_filter)

    def retry_after_bad_filter() -> str:
        # The same --db again with the filter fixed: a failed start must not leave a database that
        # then "already holds a capture".
        db = new_db()
        first = run(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host, "--filter", "tcp port",
                    "--duration", "1", timeout=60)
        expect(first.returncode != 0, f"bad filter accepted: {short(first.stderr)}")
        left = [p.name for p in tmp.glob(db.name + "*")]
        r = run(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host, "--filter", "icmp",
                "--duration", "1", "--quiet", timeout=60)
        expect(r.returncode == 0, f"after the failed start (which left {left}), the retry with --filter icmp "
                                  f"exited {r.returncode}: {short(r.stderr)}")
        return f"retry with the same --db works (the failed start left {left or 'nothing'})"
    checks("capture --db X after a failed start (bad --filter) can be retried", retry_after_bad_filter)

    for cmd, args in (("topology", ["topology"]), ("capture", ["capture", "--db", new_db(), "--duration", "1"])):
        def no_if(cmd=cmd, args=args) -> str:
            r = run(hoptrace, *args, "--netns", c1, "--host-netns", host, "--point", f"{host}:nosuchif", timeout=60)
            return one_line_error(r, cmd, contains="nosuchif")
        checks(f"{cmd} --point HOST:nosuchif", no_if)

    # A --db that already holds something: refused, left byte for byte as it was.
    existing = tmp / "existing"
    existing.mkdir()
    full = existing / "capture.db"
    r = run(hoptrace, "capture", "--db", full, "--netns", c1, "--host-netns", host, "--duration", "1", "--quiet",
            "--", "ip", "netns", "exec", c1, "ping", "-c", "2", "-i", "0.2", lab.ip["server"], timeout=60)
    made = r.returncode == 0 and full.exists()
    checks("a first capture into a new --db", lambda: expect(made, f"exit {r.returncode}: {short(r.stderr)}")
           or f"{query(full, 'SELECT COUNT(*) FROM packets')[0][0]} packets stored")
    if made:
        before = dir_state(existing)
        packets_before = query(full, "SELECT COUNT(*), MAX(id) FROM packets")
        for cmd in ("capture", "trace"):
            def refuse(cmd=cmd) -> str:
                r = run(hoptrace, cmd, "--db", full, "--netns", c1, "--host-netns", host, "--duration", "1",
                        *(["--", "true"] if cmd == "trace" else []), timeout=60)
                line = one_line_error(r, cmd, contains="already holds a capture")
                expect(dir_state(existing) == before, f"the directory changed: {before} → {dir_state(existing)}")
                expect(query(full, "SELECT COUNT(*), MAX(id) FROM packets") == packets_before, "packets changed")
                return line
            checks(f"{cmd} --db FILE that holds a capture: refused, file untouched", refuse)

    def imported() -> str:
        d = tmp / "imported"
        d.mkdir()
        db = d / "import.db"
        pcap = tmp / "one.pcap"
        with lablib.Tcpdump(lab.ns["c1"], "eth0", pcap):
            lab.run("c1", "ping", "-c", "1", lab.ip["server"])
        ri = run(hoptrace, "import", "--db", db, "--quiet", f"c1={pcap}", timeout=60)
        expect(ri.returncode == 0, f"import exited {ri.returncode}: {short(ri.stderr)}")
        before = dir_state(d)
        r = run(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host, "--duration", "1", timeout=60)
        line = one_line_error(r, "capture", contains="already holds")
        expect(dir_state(d) == before, "the imported database changed")
        return line
    checks("capture --db FILE made by hoptrace import: refused, untouched", imported)

    for what, content in (("a text file", b"not a database\n"), ("another program's SQLite file", None)):
        def foreign(what=what, content=content) -> str:
            d = tmp / f"foreign{len(what)}"
            d.mkdir()
            db = d / "other.db"
            if content is None:
                subprocess.run(["sqlite3", str(db), "CREATE TABLE notes(x); INSERT INTO notes VALUES ('mine');"],
                               check=True, capture_output=True)
            else:
                db.write_bytes(content)
            before = dir_state(d)
            r = run(hoptrace, "capture", "--db", db, "--netns", c1, "--host-netns", host, "--duration", "1",
                    timeout=60)
            line = one_line_error(r, "capture", contains=str(db.name))
            expect(dir_state(d) == before, f"{what} changed: {before} → {dir_state(d)}")
            return line
        checks(f"capture --db on {what}: refused, untouched", foreign)

    def no_command() -> str:
        r = run(hoptrace, "trace", "--netns", c1, "--host-netns", host, "--quiet", "--",
                str(tmp / "no-such-command"), timeout=60)
        return one_line_error(r, "trace", contains="no-such-command")
    checks("trace -- a command that does not exist", no_command)


def vanish(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "vanish.db"
    c1_points = [p[0] for p in expected_points(lab, ("c1",))]
    c2_points = [p[0] for p in expected_points(lab, ("c2",))][:2]
    pinger = lab.popen("c1", "ping", "-n", "-i", "0.1", lab.ip["server"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--netns", lab.ns["c2"],
                             "--host-netns", lab.ns["host"], "--duration", 6)
        try:
            time.sleep(2)
            deleted_ns = time.time_ns()
            lab.run("host", "ip", "link", "del", lab.veth["c2"])
            alive = capture.proc.poll() is None
            time.sleep(0.5)
            alive_later = capture.proc.poll() is None
            rc, _out, err = capture.wait(timeout=30)
        finally:
            capture.kill()
    finally:
        pinger.terminate()
        pinger.wait(5)
    gone = lab.run("c2", "ip", "-o", "link", "show", "eth0", check=False)

    def kept_running() -> str:
        expect(gone.returncode != 0, f"c2's eth0 still exists: {gone.stdout}")
        expect(alive and alive_later, "hoptrace stopped when the interface went away")
        expect(rc == 0, f"exit {rc}: {short(err)}")
        meta = dict(query(db, "SELECT key, value FROM meta"))
        expect(meta.get("stop_reason") == "duration", f"stop reason {meta.get('stop_reason')}")
        ran = (int(meta["capture_stop_ns"]) - deleted_ns) / 1e9
        expect(ran > 3, f"stopped {ran:.1f} s after the deletion, want about 4")
        return f"exit 0, stopped by --duration {ran:.1f} s after the deletion"
    checks("a vanished interface: hoptrace keeps running and exits 0", kept_running)

    def notes() -> str:
        rows = dict(query(db, "SELECT name, note FROM points"))
        expect(sorted(rows) == sorted(c1_points + c2_points), f"points {sorted(rows)}")
        printed = printed_summary(err)
        for p in c2_points:
            expect("capture ended" in rows[p], f"{p}: note {rows[p]!r}")
            expect(p in printed and "capture ended" in printed[p][2], f"{p}: printed {printed.get(p)}")
        for p in c1_points:
            expect(rows[p] == "", f"{p}: note {rows[p]!r}")
        return "; ".join(f"{p}: {rows[p]}" for p in c2_points)
    checks("the vanished points have a note saying their capture ended", notes)

    def after() -> str:
        # Echo requests from the deletion to 1 s before the end (the points' captures stop one
        # after the other, so the very last request may be at some points and not yet at others).
        until = int(dict(query(db, "SELECT key, value FROM meta"))["capture_stop_ns"]) - 1_000_000_000
        counts = {}
        for p in c1_points:
            counts[p] = query(db, "SELECT COUNT(*) FROM packets k JOIN points pt ON pt.id = k.point_id "
                                  "WHERE pt.name = ? AND k.ts_ns > ? AND k.ts_ns < ? "
                                  "AND k.proto = 1 AND k.icmp_type = 8",
                              (p, deleted_ns, until))[0][0]
        expect(all(n >= 15 for n in counts.values()), f"echo requests after the deletion: {counts}")
        expect(len(set(counts.values())) == 1, f"not the same number at every point of c1's path: {counts}")
        journeys = query(db, "SELECT COUNT(*) FROM journeys WHERE first_ts_ns > ? AND sightings = ?",
                         (deleted_ns, len(c1_points)))[0][0]
        expect(journeys >= 2 * min(counts.values()) - 2, f"only {journeys} complete journeys after the deletion")
        return f"{min(counts.values())} echo requests after the deletion at each of c1's points, " \
               f"{journeys} journeys across all four"
    checks("c1's packets after the deletion are stored and correlated", after)


if __name__ == "__main__":
    sys.exit(main())
