#!/usr/bin/env python3
"""End-to-end test (issue #13, least privilege): a running capture holds only what it still needs, in every thread,
and the command it runs (`-- CMD`) runs as the user who ran sudo, or as --user USER.

Linux capabilities belong to threads, so the test reads /proc/PID/task/TID/status of every thread of the running
`hoptrace capture` (the kernel's own account, not hoptrace's) while c1 pings the far server:

1. Through "sudo" (SUDO_UID/SUDO_GID/SUDO_USER set to nobody's, as sudo sets them): every thread but the main one
   has CapEff = CapPrm = 0 (the points' capture threads once their sockets are open, the spool's thread always);
   the main thread keeps exactly CAP_NET_ADMIN (the last conntrack dump), CAP_KILL (stopping the command, which is
   another user's process) and CAP_DAC_OVERRIDE (the database's directory), nothing else. CMD itself (its own
   /proc/self/status and `id`, written to a file) runs as nobody, with no capability at all. The capture still
   works: the 20 echo requests c1 sent (ping's own count) are in the database, and it passes PRAGMA integrity_check.
2. `--user nobody` without any SUDO_* variable: CMD runs as nobody.
3. `--user no-such-user-ht`: exit 2, one line naming it, no database left behind.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). The last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import os
import pwd
import shlex
import sqlite3
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import Background, expect, query, run, run_lab_test, short  # noqa: E402

CAP_DAC_OVERRIDE = 1
CAP_KILL = 5
CAP_NET_ADMIN = 12
MAIN_KEEPS = (1 << CAP_DAC_OVERRIDE) | (1 << CAP_KILL) | (1 << CAP_NET_ADMIN)
PING_ID = 0x5A5A


def thread_caps(pid: int) -> dict[int, tuple[int, int, str]]:
    """TID -> (CapEff, CapPrm, comm) of every thread of `pid`, from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        out[int(task.name)] = (int(fields["CapEff"].strip(), 16), int(fields["CapPrm"].strip(), 16),
                               fields["Name"].strip())
    return out


def cmd_script(outdir: Path) -> str:
    return (f"id -u > {outdir}/uid; id -G > {outdir}/groups; grep '^Cap' /proc/self/status > {outdir}/caps; "
            "sleep 6")


def read_caps(path: Path) -> dict[str, int]:
    return {k.strip(): int(v.strip(), 16) for k, v in (line.split(":", 1) for line in path.read_text().splitlines())}


def body(checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    shared = tmp / "cmd"
    shared.mkdir()
    os.chmod(shared, 0o777)  # CMD runs as nobody and writes here
    os.chmod(tmp, 0o755)

    # 1. Through sudo.
    db = tmp / "sudo.db"
    env = dict(os.environ, SUDO_UID=str(nobody.pw_uid), SUDO_GID=str(nobody.pw_gid), SUDO_USER="nobody")
    capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"],
                         "--grace", "0.5", "--", "sh", "-c", cmd_script(shared), env=env)
    try:
        lab.run("c1", "ping", "-c", "20", "-i", "0.05", "-e", str(PING_ID), lab.ip["server"], timeout=30)
        time.sleep(1.5)  # every point handed a chunk over: the spool thread has written
        caps = thread_caps(capture.proc.pid)
    finally:
        rc, _out, err = capture.wait(60)
    checks("capture through sudo exits 0", lambda: expect(rc == 0, f"rc={rc}: {short(err)}") or "exit 0")
    main = caps.get(capture.proc.pid)
    checks("main thread keeps exactly NET_ADMIN, KILL, DAC_OVERRIDE",
           lambda: expect(main is not None and main[0] == MAIN_KEEPS and main[1] == MAIN_KEEPS,
                          f"main thread CapEff/CapPrm = {main[0]:#x}/{main[1]:#x}, want {MAIN_KEEPS:#x}" if main
                          else "no main thread seen") or f"CapEff = CapPrm = {MAIN_KEEPS:#x}")
    others = {tid: c for tid, c in caps.items() if tid != capture.proc.pid}
    checks("every other thread has no capability (capture threads, spool)",
           lambda: expect(len(others) >= 2 and all(c[0] == 0 and c[1] == 0 for c in others.values()),
                          f"threads: { {t: (hex(c[0]), hex(c[1]), c[2]) for t, c in others.items()} }")
           or f"{len(others)} threads, CapEff = CapPrm = 0")
    uid = (shared / "uid").read_text().strip() if (shared / "uid").exists() else "?"
    checks("CMD runs as the sudo user", lambda: expect(uid == str(nobody.pw_uid), f"id -u = {uid}")
           or f"uid {uid}")
    cmd_caps = read_caps(shared / "caps") if (shared / "caps").exists() else {}
    checks("CMD has no capability",
           lambda: expect(cmd_caps and all(v == 0 for k, v in cmd_caps.items() if k in ("CapEff", "CapPrm", "CapInh",
                                                                                        "CapAmb")),
                          f"{cmd_caps}") or "CapEff = CapPrm = CapInh = CapAmb = 0")
    requests = query(db, "SELECT p.name, count(*) FROM packets k JOIN points p ON p.id = k.point_id "
                         "WHERE k.proto = 1 AND k.icmp_type = 8 AND k.icmp_id = ? GROUP BY p.name", (PING_ID,))
    by_point = dict(requests)
    checks("the capture still stored the pings at c1's eth0",
           lambda: expect(max(by_point.values(), default=0) == 20, f"echo requests per point: {by_point}")
           or f"{by_point}")
    con = sqlite3.connect(db)
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    con.close()
    checks("database passes integrity_check", lambda: expect(integrity == "ok", integrity) or "ok")

    # 2. --user without sudo.
    for name in ("uid", "groups", "caps"):
        (shared / name).unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    db2 = tmp / "user.db"
    r = run(hoptrace, "capture", "--db", db2, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--user",
            "nobody", "--grace", "0.2", "--", "sh", "-c", f"id -u > {shared}/uid", env=env, timeout=60)
    uid = (shared / "uid").read_text().strip() if (shared / "uid").exists() else "?"
    checks("--user nobody: CMD runs as nobody",
           lambda: expect(r.returncode == 0 and uid == str(nobody.pw_uid), f"rc={r.returncode} uid={uid}: "
                          f"{short(r.stderr)}") or f"uid {uid}")

    # The recorded command line is the argv given, quoted as a shell needs it (sh -c's script stays one argument).
    argv = [str(hoptrace), "capture", "--db", str(db2), "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"],
            "--user", "nobody", "--grace", "0.2", "--", "sh", "-c", f"id -u > {shared}/uid"]
    recorded = query(db2, "SELECT value FROM meta WHERE key = 'command_line'")
    checks("meta command_line splits (shlex) back into the argv given",
           lambda: expect(recorded and shlex.split(recorded[0][0]) == argv, f"recorded {recorded}, argv {argv}")
           or recorded[0][0])

    # 3. An unknown user.
    db3 = tmp / "nouser.db"
    r = run(hoptrace, "capture", "--db", db3, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--user",
            "no-such-user-ht", "--", "true", timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    checks("--user no-such-user-ht: exit 2, one line naming it, no database",
           lambda: expect(r.returncode == 2 and len(lines) == 1 and "no-such-user-ht" in lines[0] and not db3.exists(),
                          f"rc={r.returncode} db exists={db3.exists()}: {r.stderr!r}") or lines[0])


    # 4. A CMD that root may run but the user it would run as may not: refused before anything is captured.
    private = tmp / "root-only"
    private.mkdir(mode=0o700, exist_ok=True)
    script = private / "cmd.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o700)
    db4 = tmp / "rootonly.db"
    r = run(hoptrace, "capture", "--db", db4, "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--user",
            "nobody", "--", str(script), env=env, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    checks("--user nobody -- a root-only CMD: exit 1 before capturing, one line naming CMD and nobody, no database",
           lambda: expect(r.returncode == 1 and len(lines) == 1 and str(script) in lines[0] and "nobody" in lines[0]
                          and not db4.exists(), f"rc={r.returncode} db exists={db4.exists()}: {r.stderr!r}")
           or lines[0])

if __name__ == "__main__":
    sys.exit(run_lab_test("least_privilege", "least privilege", body))
