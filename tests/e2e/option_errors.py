#!/usr/bin/env python3
"""End-to-end test of issue #13 "Safe on a production host", the command line: no lab, no root.

- Every numeric option of every subcommand (import/correlate --max-hop-gap-ms; capture/trace --snaplen,
  --buffer-mb, --duration, --count, --grace) refuses nan, inf, 1e300, negative and out-of-range values with
  exactly one line naming the option, exit 2 (a usage error), before anything is opened or created; in-range
  values still work (import and correlate give the same journeys as with the default).
- `--container NAME` passes NAME to `docker inspect` after a `--`, and refuses a name that is not a container
  name or id (`--format=…`) without running docker at all: a stand-in `docker` first on PATH records its
  arguments, and prints this test's own pid (so hoptrace then finds the host's own namespace and stops).

Exit 0 if every check passed, 1 otherwise; the last line is "N passed, M failed".
"""

from __future__ import annotations

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

DATA = lablib.REPO_ROOT / "tests" / "data" / "lab"
CAPTURES = [DATA / "c1-eth0.pcap", DATA / "docker0.pcap"]
CRASH_MARKS = ("terminate called", "AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
               "Segmentation fault", "Aborted", "core dumped")

checks = lablib.Checks()


def run(hoptrace: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


def summary(r: subprocess.CompletedProcess) -> str:
    return " | ".join(line for line in r.stderr.splitlines() if line.strip()) or "(stderr empty)"


def expect_usage_error(r: subprocess.CompletedProcess, option: str) -> str:
    expect(0 <= r.returncode < 128, f"killed by a signal (exit {r.returncode})")
    marks = [m for m in CRASH_MARKS if m in r.stderr]
    expect(not marks, f"crash output: {summary(r)}")
    expect(r.returncode == 2, f"exit {r.returncode}, want 2 (usage): {summary(r)}")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    expect(len(lines) == 1, f"{len(lines)} stderr lines, want 1: {summary(r)}")
    expect(option in lines[0], f"the error does not name {option}: {lines[0]}")
    return lines[0]


def journeys(db: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT id, flow_id, direction FROM journeys ORDER BY id").fetchall()


def check_hop_gap(hoptrace: Path, tmp: Path) -> None:
    reference = tmp / "reference.db"
    r = run(hoptrace, "import", "-q", "--db", reference, *CAPTURES)
    checks("import with the default --max-hop-gap-ms",
           lambda: expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}") or f"{len(journeys(reference))} journeys")
    want = journeys(reference)

    for value in ("nan", "NaN", "inf", "-inf", "1e300", "0", "-5", "3600001"):
        db = tmp / f"import-{value}.db"

        def import_refused() -> str:
            r = run(hoptrace, "import", "-q", "--db", db, "--max-hop-gap-ms", value, *CAPTURES)
            line = expect_usage_error(r, "--max-hop-gap-ms")
            expect(not db.exists(), f"{db} was created")
            return line
        checks(f"import --max-hop-gap-ms {value}", import_refused)

        def correlate_refused() -> str:
            before = journeys(reference)
            r = run(hoptrace, "correlate", "--db", reference, "--max-hop-gap-ms", value)
            line = expect_usage_error(r, "--max-hop-gap-ms")
            expect(journeys(reference) == before, "the journeys changed")
            return line
        checks(f"correlate --max-hop-gap-ms {value}", correlate_refused)

    for value in ("100", "3600000", "0.5"):
        def accepted() -> str:
            r = run(hoptrace, "correlate", "--db", reference, "--max-hop-gap-ms", value)
            expect(r.returncode == 0, f"exit {r.returncode}: {summary(r)}")
            if value in ("100", "3600000"):  # the lab's hops take microseconds: the same journeys either way
                expect(journeys(reference) == want, "other journeys than with the default")
            return r.stdout.strip()
        checks(f"correlate --max-hop-gap-ms {value} is accepted", accepted)


def check_capture_options(hoptrace: Path, tmp: Path) -> None:
    # Refused while parsing: no root needed, nothing is created. (Out of range ints that do not even parse as an
    # int, such as --snaplen 1e300, are refused by the parser, also with exit 2 and the option's name.)
    cases = [
        ("--snaplen", "0"), ("--snaplen", "-1"), ("--snaplen", "262145"), ("--snaplen", "1e300"),
        ("--buffer-mb", "0"), ("--buffer-mb", "2048"), ("--buffer-mb", "nan"),
        ("--duration", "nan"), ("--duration", "inf"), ("--duration", "1e300"), ("--duration", "-1"), ("--duration", "0"),
        ("--count", "-1"), ("--count", "0"), ("--count", "18446744073709551615"), ("--count", "1e300"),
        ("--grace", "nan"), ("--grace", "inf"), ("--grace", "-0.5"), ("--grace", "1e300"),
    ]
    for command in ("capture", "trace"):
        for option, value in cases:
            db = tmp / f"{command}{option}{value}.db"

            def refused() -> str:
                args = [command, "--netns", "hoptrace-no-such-ns", option, value]
                if command == "capture":
                    args[1:1] = ["--db", db]
                r = run(hoptrace, *args)
                line = expect_usage_error(r, option)
                expect(not db.exists(), f"{db} was created")
                return line
            checks(f"{command} {option} {value}", refused)


def fake_docker(tmp: Path) -> tuple[Path, Path]:
    """A `docker` that logs its arguments (one JSON list per line) and prints our pid as the container's."""
    bindir = tmp / "bin"
    bindir.mkdir()
    log = tmp / "docker-args.jsonl"
    script = bindir / "docker"
    script.write_text("#!/usr/bin/env python3\n"
                      "import json, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      f"print({os.getpid()})\n")
    script.chmod(0o755)
    return bindir, log


def docker_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def check_container_names(hoptrace: Path, tmp: Path) -> None:
    bindir, log = fake_docker(tmp)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")

    for name in ("--format={{.Name}}", "-f", "", "a b", "web;id", "../web"):
        def refused() -> str:
            log.unlink(missing_ok=True)
            r = run(hoptrace, "topology", f"--container={name}", env=env)
            line = expect_usage_error(r, "--container")
            expect(docker_calls(log) == [], f"docker was run: {docker_calls(log)}")
            return line
        checks(f"topology --container={name!r} is refused before docker runs", refused)

    for name in ("web", "/web", "0f3a9c2e1b4d", "my_app.1-2"):
        def passed_after_dashes() -> str:
            log.unlink(missing_ok=True)
            r = run(hoptrace, "topology", "--container", name, env=env)
            calls = docker_calls(log)
            expect(len(calls) == 1, f"docker ran {len(calls)} times: {calls}; {summary(r)}")
            args = calls[0]
            expect(args[-2:] == ["--", name], f"docker got {args}: the name is not after a '--'")
            expect(args[0] == "inspect", f"docker got {args}")
            expect(0 <= r.returncode < 128 and r.returncode != 0, f"exit {r.returncode}: {summary(r)}")
            return f"docker {' '.join(args)}; then: {summary(r)}"
        checks(f"topology --container {name} reaches docker after '--'", passed_after_dashes)


def main() -> int:
    hoptrace = lablib.hoptrace_binary()
    with tempfile.TemporaryDirectory(prefix="hoptrace-option-errors-") as tmpdir:
        tmp = Path(tmpdir)
        check_hop_gap(hoptrace, tmp)
        check_capture_options(hoptrace, tmp)
        check_container_names(hoptrace, tmp)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
