"""What the live-capture e2e tests (tests/e2e/live_*.py) share: running the hoptrace binary (in
the foreground, or in the background until it says it is capturing), the capture points hoptrace
should find in the lab, servers for the traffic, and database readers.

Standard library only; the lab, tcpdump and traffic helpers are lablib's.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402

LABLIB_PY = Path(lablib.__file__).resolve()


# The check runner and expect() are lablib's; re-exported so the live tests import from one place.
Checks = lablib.Checks
expect = lablib.expect


def guarded(checks: Checks, name: str, fn, *args) -> None:
    """Runs fn(*args), a part of a test that makes its own checks; if it raises (hoptrace hung
    and a timeout expired, a helper failed), that is one more failed check named `name`, and the
    test goes on to its summary line."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, subprocess.TimeoutExpired):
            argv = e.cmd if isinstance(e.cmd, str) else " ".join(map(str, e.cmd))
            msg = f"timed out after {e.timeout} s (killed): {argv}"
        else:
            msg = f"{type(e).__name__}: {e}"

        def raise_it() -> None:
            raise AssertionError(msg)
        checks(name, raise_it)


def short(text: str, limit: int = 600) -> str:
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= limit else text[:limit] + "…"


# --------------------------------------------------------------------------------------------
# Running hoptrace


def run(hoptrace: Path, *args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Runs `hoptrace ARGS…` to completion; text stdout/stderr captured."""
    return subprocess.run([str(hoptrace), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


class Background:
    """`hoptrace capture|trace …` running in the background. The constructor returns once hoptrace
    printed "capturing on …" on stderr (every point's socket is open), so traffic sent afterwards
    is inside its window. ``wait()`` returns (rc, stdout, stderr)."""

    def __init__(self, hoptrace: Path, *args, timeout: float = 20, env: dict | None = None):
        self.argv = [str(hoptrace), *map(str, args)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self._stderr = bytearray()
        self._stdout = bytearray()
        self._out_thread = threading.Thread(target=self._pump_fd, args=(self.proc.stdout.fileno(), self._stdout),
                                            daemon=True)
        self._out_thread.start()
        fd = self.proc.stderr.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while b"capturing on" not in self._stderr:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.proc.kill()
                    self.proc.wait()
                    raise TimeoutError(f"{' '.join(self.argv)}: no 'capturing on' after {timeout}s: "
                                       + self._stderr.decode(errors="replace"))
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait()
                    raise RuntimeError(f"{' '.join(self.argv)} exited {self.proc.returncode} before capturing: "
                                       + self._stderr.decode(errors="replace"))
                self._stderr += chunk
        finally:
            sel.close()
        self._err_thread = threading.Thread(target=self._pump_fd, args=(fd, self._stderr), daemon=True)
        self._err_thread.start()

    @staticmethod
    def _pump_fd(fd: int, buf: bytearray) -> None:
        while chunk := os.read(fd, 65536):
            buf += chunk

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._out_thread.join(10)
        self._err_thread.join(10)
        return self.proc.returncode, self._stdout.decode(errors="replace"), self._stderr.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


SUMMARY_RE = re.compile(r"^\s+(\S+)\s+(\d+) packets, (\d+) dropped by the kernel(?:; (.*))?$")


def printed_summary(stderr: str) -> dict[str, tuple[int, int, str]]:
    """hoptrace capture's closing lines on stderr, "  POINT   N packets, D dropped by the kernel[; note]",
    as {point: (packets, drops, note)}."""
    out = {}
    for line in stderr.splitlines():
        m = SUMMARY_RE.match(line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)), m.group(4) or "")
    return out


# --------------------------------------------------------------------------------------------
# The lab's capture points, as hoptrace names them


def expected_points(lab: lablib.Lab, containers: Sequence[str] = ("c1",)) -> list[tuple[str, str, str, str]]:
    """(point name, role, namespace, ifname) of the path of the given containers, in hoptrace's
    order: for each container its eth0 ("<netns>:eth0") and host veth (named by its ifname),
    then the bridges, then the uplink."""
    host = lab.ns["host"]
    points = []
    bridges = []
    for c in containers:
        points.append((f"{lab.ns[c]}:eth0", "container", lab.ns[c], "eth0"))
        points.append((lab.veth[c], "veth", host, lab.veth[c]))
        bridge = lab.ifname["usernet_bridge"] if c == "c3" else lab.ifname["bridge"]
        if bridge not in bridges:
            bridges.append(bridge)
    points += [(b, "bridge", host, b) for b in bridges]
    points.append((lab.ifname["uplink"], "uplink", host, lab.ifname["uplink"]))
    return points


def tcpdumps_on(lab: lablib.Lab, points: Sequence[tuple[str, str, str, str]], outdir: Path,
                **kwargs) -> dict[str, lablib.Tcpdump]:
    """One lablib.Tcpdump (nanosecond, immediate mode) per point: {point name: Tcpdump}; the file
    is OUTDIR/<n>.pcap (point names contain ':')."""
    caps: dict[str, lablib.Tcpdump] = {}
    try:
        for i, (name, _role, ns, ifname) in enumerate(points):
            caps[name] = lablib.Tcpdump(ns, ifname, outdir / f"point{i}.pcap", **kwargs)
    except BaseException:
        lablib.stop_all(list(caps.values()), settle=0)
        raise
    return caps


# --------------------------------------------------------------------------------------------
# Servers for the traffic (in the lab's server namespace)


@contextmanager
def udp_echo_server(lab: lablib.Lab, port: int = lablib.UDP_DPORT) -> Iterator[subprocess.Popen]:
    """The scenario's echo: socat answers each datagram from `port` (lablib.udp_both's server)."""
    server = lab.popen("server", "socat", "-T", "2", f"UDP-RECVFROM:{port},fork,reuseaddr", "PIPE",
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", port)
        yield server
    finally:
        _terminate(server)


@contextmanager
def udp_sink(lab: lablib.Lab, port: int) -> Iterator[subprocess.Popen]:
    """Swallows datagrams to `port` (no ICMP port unreachable back)."""
    server = lab.popen("server", "socat", "-u", f"UDP-RECV:{port},reuseaddr", "/dev/null",
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", port)
        yield server
    finally:
        _terminate(server)


class TcpSink:
    """A socat TCP listener on the server that counts the bytes it receives (one connection)."""

    def __init__(self, lab: lablib.Lab, port: int = lablib.TCP_PORT, family: str = ""):
        self.proc = lab.popen("server", "socat", "-u", f"TCP{family}-LISTEN:{port},reuseaddr", "STDOUT",
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.received = 0
        lab.wait_listening("server", "tcp", port)
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        while chunk := self.proc.stdout.read(1 << 16):
            self.received += len(chunk)

    def close(self, timeout: float = 30) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        _terminate(self.proc)
        self._thread.join(10)
        return self.received


def _terminate(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def udp_client_argv(lab: lablib.Lab, container: str, payloads: Sequence[bytes], sport: int = lablib.UDP_SPORT,
                    dport: int = lablib.UDP_DPORT, interval: float = lablib.PING_INTERVAL_S) -> list[str]:
    """lablib's UDP client run inside `container` (one datagram per payload, waits for each echo)."""
    return ["ip", "netns", "exec", lab.ns[container], sys.executable, str(LABLIB_PY), "_udp-client",
            lab.ip["server"], str(dport), str(sport), str(interval), *[p.hex() for p in payloads]]


def tcp_client_argv(lab: lablib.Lab, container: str, nbytes: int, port: int = lablib.TCP_PORT) -> list[str]:
    """lablib's TCP client run inside `container`: uploads nbytes to the server's `port`."""
    return ["ip", "netns", "exec", lab.ns[container], sys.executable, str(LABLIB_PY), "_tcp-client",
            lab.ip["server"], str(port), str(nbytes)]


# --------------------------------------------------------------------------------------------
# Traffic and counters shared by several tests

# A python -c program that sends N datagrams "MARKER seq=NNNNNN\n" at a fixed pace, or as fast as it can for gap 0 (run inside c1).
PACED_UDP_SENDER = r"""
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


def forward_drops(lab: lablib.Lab, dport: int) -> int:
    """The packet counter of the DROP rule for `dport` in the host's FORWARD chain (iptables -L -v -x)."""
    out = lab.run("host", "iptables", "-L", "FORWARD", "-v", "-x", "-n").stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "DROP" and f"dpt:{dport}" in line:
            return int(f[0])
    raise AssertionError(f"no DROP rule for dpt:{dport} in: {short(out)}")


# --------------------------------------------------------------------------------------------
# Databases


def query(db: Path, sql: str, params: Sequence = ()) -> list[tuple]:
    """Rows of one query (SELECTs only). Not opened with mode=ro: a read-only connection to a WAL
    database leaves its -wal and -shm files behind, a read-write one removes them on close."""
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def point_ids(db: Path) -> dict[str, int]:
    return {name: pid for pid, name in query(db, "SELECT id, name FROM points")}


def report_json(hoptrace: Path, db: Path) -> dict:
    import json
    r = run(hoptrace, "report", "--db", db, "--format", "json")
    if r.returncode != 0:
        raise RuntimeError(f"hoptrace report --db {db} exited {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout)


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory for captures and databases; kept (and its path printed) when
    HOPTRACE_TEST_KEEP=1, to look at after a failure."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("HOPTRACE_TEST_KEEP") == "1":
            print(f"kept {path}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def netns_left(prefixes: Sequence[str]) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if any(n.startswith(p + "-") for p in prefixes))


def run_lab_test(name: str, title: str, fn, watchdog_s: float = 170, lab_options: dict | None = None) -> int:
    """The whole of a one-lab end-to-end test: skip or fail without namespaces, build a fresh lab (with
    lablib.Lab(**lab_options), e.g. {"publish": ["8080:80"]} or {"ipv6": "nat"}) and a scratch directory,
    run fn(checks, hoptrace, lab, tmp) as one guarded check, make sure the lab is gone, and return the
    exit code (the summary line is printed)."""
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(watchdog_s)
    checks = Checks()
    prefixes = []
    with workdir(f"hoptrace-{name}-") as tmp, lablib.Lab(**(lab_options or {})) as lab:
        prefixes.append(lab.prefix)
        guarded(checks, title, fn, checks, hoptrace, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()
