#!/usr/bin/env python3
"""Helpers for hoptrace's end-to-end tests: the namespace lab, captures, traffic, readers.

Standard library only. The lab itself is built by ``examples/lab.sh``; this module drives it.

Typical test::

    import lablib
    lablib.require_root_or_skip()          # exit 77 (skip) or 1 under HOPTRACE_REQUIRE_NETNS=1
    hoptrace = lablib.hoptrace_binary()    # $HOPTRACE_BIN or --hoptrace PATH
    lablib.arm_watchdog(100)               # below the ctest TIMEOUT (ctest itself sends SIGKILL)
    with lablib.Lab() as lab:              # unique prefix, always torn down
        with lablib.Tcpdump(lab.ns["host"], "docker0", "/tmp/x/docker0.pcap"):
            lablib.ping_both(lab)
        rows = lablib.tshark_fields("/tmp/x/docker0.pcap", ["frame.time_epoch", "ip.src"], "icmp")
        flows = lab.conntrack()

Command line (scenario.sh uses the first)::

    lablib.py scenario [--prefix P] [--tcp-mb N] OUTDIR
    lablib.py reap                 # remove labs left by lablib runs whose process is gone
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import fractions
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SH = REPO_ROOT / "examples" / "lab.sh"
SKIP_RETURN_CODE = 77

# Under `sudo ./tests/run.sh`, hoptrace would run every `-- CMD` as the user who ran sudo (as it should), and the
# tests' CMDs (`ip netns exec …`) need root: they run as root, as without sudo. least_privilege.py sets SUDO_* for
# the one test of that rule itself.
for _name in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"):
    os.environ.pop(_name, None)

# Traffic of the scenario; tests and scenario.sh share these through the functions below.
PING_IDENT = 7777
PING_COUNT = 5
PING_INTERVAL_S = 0.2
UDP_SPORT = 40000
UDP_DPORT = 5353
UDP_COUNT = 5
SAME_UDP_PAYLOAD = b"hoptrace udp: same payload from both containers\n"
TCP_PORT = 5001
# c2 starts once c1's flow is in the host's conntrack table (or after this long at most), so c1
# keeps its ICMP id / UDP port and c2's get rewritten, every run. The flows still interleave.
STAGGER_MAX_S = 2.0

# Where lablib notes which process owns which lab, so labs of a SIGKILLed run can be reaped.
OWNER_DIR = Path("/run/hoptrace-lab")

_REQUIRED_TOOLS = ("ip", "iptables", "sysctl", "conntrack", "tcpdump", "tshark", "socat", "ping")


def _log(msg: str) -> None:
    print(f"lablib: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Skipping, the binary under test, watchdog


def require_root_or_skip() -> None:
    """Returns if namespaces can be built here; otherwise exits 77 (ctest skip), or exits 1 with
    the reason when HOPTRACE_REQUIRE_NETNS=1 (in CI a skip is a failure)."""
    skip_unless_usable(_netns_unusable_reason())


def skip_unless_usable(reason: str | None) -> None:
    """Returns when `reason` is None; otherwise exits 77 (ctest skip) saying it, or 1 when HOPTRACE_REQUIRE_NETNS=1."""
    if reason is None:
        return
    if os.environ.get("HOPTRACE_REQUIRE_NETNS") == "1":
        print(f"FAIL: HOPTRACE_REQUIRE_NETNS=1 but {reason}", flush=True)
        sys.exit(1)
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP_RETURN_CODE)


def _netns_unusable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root (the lab needs network namespaces, veths and iptables)"
    missing = [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    if not LAB_SH.is_file():
        return f"{LAB_SH} not found"
    probe = "htprobe" + secrets.token_hex(3)
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"'ip netns add' failed: {e}"
    if r.returncode != 0:
        return f"'ip netns add' failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def hoptrace_binary(argv: Sequence[str] | None = None, required: bool = True) -> Path | None:
    """The hoptrace executable: ``--hoptrace PATH`` (or ``--hoptrace=PATH``) in argv, else
    $HOPTRACE_BIN. Missing or not executable: exits 1 when required, else returns None."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--hoptrace" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--hoptrace="):
            path = arg.split("=", 1)[1]
    path = path or os.environ.get("HOPTRACE_BIN")
    if path and os.access(path, os.X_OK) and Path(path).is_file():
        return Path(path).resolve()
    if not required:
        return None
    why = f"'{path}' is not an executable file" if path else "pass --hoptrace PATH or set HOPTRACE_BIN"
    print(f"FAIL: no hoptrace binary: {why}", flush=True)
    sys.exit(1)


def arm_watchdog(seconds: float) -> None:
    """After `seconds`, tears every lab down and exits 1. ctest (CMake < 3.27) kills a test that
    overruns its TIMEOUT with SIGKILL, which no handler sees: arm this a little below it."""
    _install_cleanup()
    signal.setitimer(signal.ITIMER_REAL, seconds)


# --------------------------------------------------------------------------------------------
# Cleanup: every Lab this process owns is torn down on exit, exception, SIGINT/SIGTERM/SIGHUP.

_active_labs: list["Lab"] = []
_cleanup_installed = False


def _cleanup_all() -> None:
    for lab in list(_active_labs):
        lab.down()


def _on_signal(signum: int, _frame) -> None:
    name = signal.Signals(signum).name
    _log(f"{name}: tearing down {len(_active_labs)} lab(s)")
    _cleanup_all()
    # Unwind normally from here (context managers, finally blocks); downs are idempotent.
    raise SystemExit(1 if signum == signal.SIGALRM else 128 + signum)


def _install_cleanup() -> None:
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            signal.signal(sig, _on_signal)
        # SIGINT stays Python's KeyboardInterrupt: it unwinds through Lab.__exit__.


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def reap_stale_labs() -> list[str]:
    """Removes labs created by lablib whose owning process no longer exists (a run killed with
    SIGKILL, e.g. by a ctest timeout). Labs made by hand with lab.sh are never touched."""
    reaped = []
    if not OWNER_DIR.is_dir():
        return reaped
    for marker in OWNER_DIR.iterdir():
        try:
            pid_s, start = marker.read_text().split()
            alive = _proc_start_time(int(pid_s)) == start
        except (OSError, ValueError):
            alive = False
        if alive:
            continue
        prefix = marker.name
        subprocess.run([str(LAB_SH), "down", prefix], capture_output=True, text=True, timeout=60)
        marker.unlink(missing_ok=True)
        reaped.append(prefix)
    return reaped


# --------------------------------------------------------------------------------------------
# conntrack


@dataclasses.dataclass
class ConntrackTuple:
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    id: int | None = None  # ICMP echo identifier
    type: int | None = None
    code: int | None = None


@dataclasses.dataclass
class ConntrackEntry:
    proto: str  # "icmp", "udp", "tcp", ...
    protonum: int
    timeout: int
    state: str | None  # TCP state, e.g. "ESTABLISHED"
    original: ConntrackTuple
    reply: ConntrackTuple
    flags: list[str]  # "ASSURED", "UNREPLIED"
    raw: str

    def translated(self) -> ConntrackTuple:
        """The forward tuple as it leaves after NAT: the reply tuple turned around. For the
        lab's MASQUERADE, src is 192.168.43.116 and sport/id the (possibly rewritten) value."""
        r = self.reply
        return ConntrackTuple(src=r.dst, dst=r.src, sport=r.dport, dport=r.sport, id=r.id,
                              type=self.original.type, code=self.original.code)


_INT_KEYS = {"sport", "dport", "id", "type", "code"}


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """Parses `conntrack -L` output (plain or `-o extended`). The first key=value group after
    the protocol is the original tuple, the group starting at the second `src=` the reply."""
    entries = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or "=" not in line:
            continue
        if tokens[0] in ("ipv4", "ipv6"):  # -o extended: "ipv4 2 udp 17 29 ..."
            tokens = tokens[2:]
        if len(tokens) < 3 or not tokens[1].isdigit():
            continue
        proto, protonum, timeout = tokens[0], int(tokens[1]), int(tokens[2])
        state = None
        tuples: list[dict] = []
        flags: list[str] = []
        for tok in tokens[3:]:
            if tok.startswith("[") and tok.endswith("]"):
                flags.append(tok[1:-1])
            elif "=" not in tok:
                if not tuples:
                    state = tok
            else:
                key, value = tok.split("=", 1)
                if key == "src":
                    tuples.append({})
                if 1 <= len(tuples) <= 2 and key in ("src", "dst", *_INT_KEYS) and key not in tuples[-1]:
                    tuples[-1][key] = int(value) if key in _INT_KEYS else value
        if len(tuples) != 2:
            continue
        entries.append(ConntrackEntry(proto, protonum, timeout, state, ConntrackTuple(**tuples[0]),
                                      ConntrackTuple(**tuples[1]), flags, line))
    return entries


# --------------------------------------------------------------------------------------------
# The lab


class PublishedPort(NamedTuple):
    """A port of c1 published by ``lab.sh up --publish`` (`docker run -p host:container/proto`)."""
    host: int
    container: int
    proto: str  # "tcp" or "udp"


class Lab:
    """The namespace lab of examples/lab.sh, as a context manager.

    ``Lab()`` picks a unique prefix (``ht`` + 6 hex chars), builds the lab on ``__enter__`` and
    removes it on ``__exit__`` (and on atexit, SIGTERM, SIGHUP, the watchdog). ``Lab(prefix,
    reuse=True)`` attaches to an existing lab of that prefix without ever removing it, and
    builds (and later removes) it only if it was not up.

    ``Lab(usernet=True)`` (default: $HOPTRACE_LAB_USERNET == "1") also builds the user-defined
    network of ``lab.sh up --usernet``: a second bridge ``br-<12 hex>`` 172.18.0.1/16 with a
    third container c3 (172.18.0.2) on it, like ``docker network create`` + ``docker run
    --network``. The "c3"/"usernet_bridge" keys below exist only then.

    ``Lab(publish=["8080:80", "5300:53/udp"])`` (default: $HOPTRACE_LAB_PUBLISH) publishes ports of
    c1 like ``docker run -p`` (``lab.sh up --publish``: DNAT from the host's addresses, Docker's
    DOCKER chains); ``published`` lists them as PublishedPort(host, container, proto).

    ``Lab(ipv6=True)`` (or "nat", "routed"; default: $HOPTRACE_LAB_IPV6) builds the IPv6 lab of
    ``lab.sh up --ipv6``: a ULA /64 on every link, default routes, ip6tables MASQUERADE of
    fd00:17::/64 ("nat" insists on it, "routed" never masquerades, True = masquerade where the kernel
    can). ``ipv6`` is then "auto", "nat" or "routed" ("" without IPv6) and ``ip6`` holds the
    addresses, keyed like ``ip``.

    Attributes (from ``lab.sh env``, the one place the names live):
      prefix; usernet; env (the raw KEY: value dict);
      ns     {"host", "c1", "c2", "router", "server"[, "c3"]} -> namespace name;
      veth   {"c1", "c2"[, "c3"]} -> host-side veth name (in ns["host"]);
      ip     {"c1", "c2", "bridge", "host", "router", "router_server", "server"[, "c3",
              "usernet_bridge"]} -> IPv4 address;
      mac    {"c1", "c2"[, "c3"]};
      ifname {"container", "bridge", "uplink", "router_uplink", "router_downlink", "server"[,
              "usernet_bridge"]};
      ip6    {} without IPv6, else keyed like ip (IPv6 addresses, each on a /64);
      published [PublishedPort(host, container, proto)], the ports of c1 (host ports on HOST_IP).
    """

    def __init__(self, prefix: str | None = None, *, reuse: bool = False, usernet: bool | None = None,
                 publish: Sequence[str] | None = None, ipv6: bool | str | None = None):
        self.prefix = prefix or "ht" + secrets.token_hex(3)
        self.reuse = reuse
        self.usernet = os.environ.get("HOPTRACE_LAB_USERNET") == "1" if usernet is None else usernet
        # As lab.sh reads them: HOPTRACE_LAB_PUBLISH (comma-separated specs), HOPTRACE_LAB_IPV6.
        self._publish_var = os.environ.get("HOPTRACE_LAB_PUBLISH", "") if publish is None else ",".join(publish)
        if ipv6 is None:
            self._ipv6_var = os.environ.get("HOPTRACE_LAB_IPV6", "0")
        else:
            self._ipv6_var = ("1" if ipv6 else "0") if isinstance(ipv6, bool) else ipv6
        self.owned = False
        self._up_proc: subprocess.Popen | None = None
        self.map = ""
        self.env = self._read_env()
        e = self.env
        self.ns = {"host": e["NS_HOST"], "c1": e["NS_C1"], "c2": e["NS_C2"], "router": e["NS_ROUTER"],
                   "server": e["NS_SERVER"]}
        self.veth = {"c1": e["C1_VETH"], "c2": e["C2_VETH"]}
        self.ip = {"c1": e["C1_IP"], "c2": e["C2_IP"], "bridge": e["BRIDGE_IP"], "host": e["HOST_IP"],
                   "router": e["ROUTER_IP"], "router_server": e["ROUTER_SERVER_IP"], "server": e["SERVER_IP"]}
        self.mac = {"c1": e["C1_MAC"], "c2": e["C2_MAC"]}
        self.ifname = {"container": e["C1_IF"], "bridge": e["BRIDGE"], "uplink": e["HOST_UPLINK"],
                       "router_uplink": e["ROUTER_UPLINK"], "router_downlink": e["ROUTER_DOWNLINK"],
                       "server": e["SERVER_IF"]}
        if self.usernet:
            self.ns["c3"] = e["NS_C3"]
            self.veth["c3"] = e["C3_VETH"]
            self.ip["c3"] = e["C3_IP"]
            self.ip["usernet_bridge"] = e["USERNET_BRIDGE_IP"]
            self.mac["c3"] = e["C3_MAC"]
            self.ifname["usernet_bridge"] = e["USERNET_BRIDGE"]
        self.ipv6 = "" if e["IPV6"] == "0" else e["IPV6"]
        self.ip6: dict[str, str] = {}
        if self.ipv6:
            self.ip6 = {"c1": e["C1_IP6"], "c2": e["C2_IP6"], "bridge": e["BRIDGE_IP6"], "host": e["HOST_IP6"],
                        "router": e["ROUTER_IP6"], "router_server": e["ROUTER_SERVER_IP6"],
                        "server": e["SERVER_IP6"]}
            if self.usernet:
                self.ip6["c3"] = e["C3_IP6"]
                self.ip6["usernet_bridge"] = e["USERNET_BRIDGE_IP6"]
        self.published = []
        for spec in filter(None, e["PUBLISHED_PORTS"].split(",")):  # "8080:80/tcp"
            ports, proto = spec.split("/")
            host, container = ports.split(":")
            self.published.append(PublishedPort(int(host), int(container), proto))

    def _lab_sh_env(self) -> dict[str, str]:
        """The environment for lab.sh: HOPTRACE_LAB_USERNET, _PUBLISH and _IPV6 as this Lab wants them."""
        return {**os.environ, "HOPTRACE_LAB_USERNET": "1" if self.usernet else "0",
                "HOPTRACE_LAB_PUBLISH": self._publish_var, "HOPTRACE_LAB_IPV6": self._ipv6_var}

    def _read_env(self) -> dict[str, str]:
        r = subprocess.run([str(LAB_SH), "env", self.prefix], capture_output=True, text=True,
                           env=self._lab_sh_env())
        if r.returncode != 0:
            raise RuntimeError(f"lab.sh env {self.prefix}: {r.stderr.strip()}")
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    # -- life cycle

    def exists(self) -> bool:
        return any(Path("/run/netns", n).exists() for n in self.ns.values())

    def up(self) -> "Lab":
        _install_cleanup()
        if self.reuse and self.exists():
            return self
        reap_stale_labs()
        _active_labs.append(self)
        self.owned = True
        self._write_owner_marker()
        self._up_proc = subprocess.Popen([str(LAB_SH), "up", self.prefix], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=self._lab_sh_env())
        out, err = self._up_proc.communicate(timeout=120)
        if self._up_proc.returncode != 0:
            self.down()
            raise RuntimeError(f"lab.sh up {self.prefix} failed:\n{out}{err}")
        self.map = out
        return self

    def down(self) -> None:
        """Removes the lab if this object built it. Idempotent."""
        if not self.owned:
            return
        self.owned = False
        if self in _active_labs:
            _active_labs.remove(self)
        # A signal can arrive while `lab.sh up` runs: let it finish first, or it would go on
        # creating namespaces after `down` has removed the others.
        if self._up_proc is not None and self._up_proc.poll() is None:
            try:
                self._up_proc.wait(60)
            except subprocess.TimeoutExpired:
                self._up_proc.kill()
                self._up_proc.wait()
        r = subprocess.run([str(LAB_SH), "down", self.prefix], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            _log(f"lab.sh down {self.prefix} failed: {r.stderr.strip()}")
        (OWNER_DIR / self.prefix).unlink(missing_ok=True)

    def _write_owner_marker(self) -> None:
        OWNER_DIR.mkdir(mode=0o755, exist_ok=True)
        pid = os.getpid()
        (OWNER_DIR / self.prefix).write_text(f"{pid} {_proc_start_time(pid)}\n")

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # -- running things inside

    def nsname(self, ns: str) -> str:
        """Accepts a role ("host", "c1", ...) or a full namespace name."""
        return self.ns.get(ns, ns)

    def _argv(self, ns: str, cmd: Sequence) -> list[str]:
        if len(cmd) == 1 and isinstance(cmd[0], (list, tuple)):
            cmd = cmd[0]
        return ["ip", "netns", "exec", self.nsname(ns), *map(str, cmd)]

    def run(self, ns: str, *cmd, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Runs cmd in namespace ns; text stdout/stderr captured. check: raise on non-zero."""
        argv = self._argv(ns, cmd)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def popen(self, ns: str, *cmd, **kwargs) -> subprocess.Popen:
        """Starts cmd in namespace ns (subprocess.Popen kwargs pass through). `lab.sh down` ends
        whatever is still running in the lab's namespaces."""
        return subprocess.Popen(self._argv(ns, cmd), **kwargs)

    def ifindex(self, ns: str, ifname: str) -> int:
        r = subprocess.run(["ip", "-n", self.nsname(ns), "-j", "link", "show", "dev", ifname],
                           capture_output=True, text=True, check=True)
        return int(json.loads(r.stdout)[0]["ifindex"])

    def links(self, ns: str = "host") -> str:
        """`ip -o link` of a namespace, e.g. to map `tcpdump -i any` ifindexes to names."""
        return subprocess.run(["ip", "-n", self.nsname(ns), "-o", "link"], capture_output=True, text=True,
                              check=True).stdout

    def conntrack_text(self, ns: str = "host", extended: bool = False) -> str:
        cmd = ["conntrack", "-L"] + (["-o", "extended"] if extended else [])
        return self.run(ns, *cmd).stdout

    def conntrack(self, ns: str = "host") -> list[ConntrackEntry]:
        return parse_conntrack(self.conntrack_text(ns))

    def flush_conntrack(self, ns: str = "host") -> None:
        self.run(ns, "conntrack", "-F", check=False)

    def points(self) -> list[tuple[str, str, str]]:
        """The capture points along the containers' path: (name, namespace, ifname); with the
        user-defined network also c3-eth0, c3-veth and usernet (its bridge)."""
        h = self.ns["host"]
        points = [("c1-eth0", self.ns["c1"], "eth0"), ("c1-veth", h, self.veth["c1"]),
                  ("c2-eth0", self.ns["c2"], "eth0"), ("c2-veth", h, self.veth["c2"]),
                  ("docker0", h, self.ifname["bridge"]), ("uplink", h, self.ifname["uplink"])]
        if self.usernet:
            points += [("c3-eth0", self.ns["c3"], "eth0"), ("c3-veth", h, self.veth["c3"]),
                       ("usernet", h, self.ifname["usernet_bridge"])]
        return points

    def wait_listening(self, ns: str, proto: str, port: int, timeout: float = 5) -> None:
        """Waits until a socket listens on port (proto "tcp" or "udp") in ns."""
        flag = "-ltnH" if proto == "tcp" else "-lunH"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(ns, "ss", flag, check=False).stdout
            if re.search(rf":{port}\s", out):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {proto}/{port} in {self.nsname(ns)}")


# --------------------------------------------------------------------------------------------
# Captures


class Tcpdump:
    """tcpdump in a namespace, nanosecond timestamps, written to a file.

    Started on construction; returns only once tcpdump has said "listening on" (its socket is
    open, so everything sent afterwards is captured). Also a context manager. ``stop()`` waits
    0.2 s, sends SIGINT, waits for tcpdump to exit and returns the file path; ``captured``/``received``/``dropped`` then hold
    tcpdump's final counters.

    --immediate-mode matters: without it, packets still sitting in a not-yet-retired TPACKET_V3
    block when SIGINT arrives are never written (seen here: "6 received by filter, 2 captured").
    -Z root keeps the file owned by root (Debian's tcpdump otherwise drops to user tcpdump).
    """

    def __init__(self, ns: str, iface: str, path: str | os.PathLike, *, linktype: str | None = None,
                 filter: str | None = None, snaplen: int | None = None, buffer_kib: int = 32768,
                 timeout: float = 10):
        self.path = Path(path)
        self.ns = ns
        self.iface = iface
        argv = ["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-Z", "root",
                "--time-stamp-precision", "nano", "--immediate-mode", "-U", "-B", str(buffer_kib),
                "-w", str(self.path)]
        if linktype:
            argv += ["-y", linktype]
        if snaplen:
            argv += ["-s", str(snaplen)]
        if filter:
            argv.append(filter)
        self.argv = argv
        self.captured = self.received = self.dropped = None
        self.stderr_lines: list[str] = []
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self._fd = self._proc.stderr.fileno()
        self._partial = b""
        self._wait_listening(timeout)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _read_lines(self) -> bool:
        """One os.read of tcpdump's stderr into stderr_lines; False at EOF. (Raw reads: a
        buffered readline could hold a second line back while select() waits on the fd.)"""
        chunk = os.read(self._fd, 4096)
        if not chunk:
            if self._partial:
                self.stderr_lines.append(self._partial.decode(errors="replace"))
                self._partial = b""
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        self.stderr_lines += [line.decode(errors="replace") for line in lines]
        return True

    def _wait_listening(self, timeout: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while not any("listening on" in line for line in self.stderr_lines):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self._proc.kill()
                    self._proc.wait()
                    raise TimeoutError(f"tcpdump on {self.ns}:{self.iface} not listening after {timeout}s: "
                                       + " | ".join(self.stderr_lines))
                if not self._read_lines():
                    self._proc.wait()
                    raise RuntimeError(f"tcpdump on {self.ns}:{self.iface} exited {self._proc.returncode}: "
                                       + " | ".join(self.stderr_lines))
        finally:
            sel.close()

    def _drain(self) -> None:
        while self._read_lines():
            pass

    def stop(self, timeout: float = 10, settle: float = 0.2) -> Path:
        """Stops tcpdump after `settle` seconds (time for the last frames of a just-finished
        exchange to be read from the ring) and returns the file."""
        if self._proc.poll() is None:
            time.sleep(settle)
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(timeout)
        for line in self.stderr_lines:
            m = re.match(r"(\d+) packets? (captured|received by filter|dropped by kernel)", line)
            if m:
                setattr(self, {"captured": "captured", "received by filter": "received",
                               "dropped by kernel": "dropped"}[m.group(2)], int(m.group(1)))
        return self.path

    def __enter__(self) -> "Tcpdump":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all(captures: Sequence[Tcpdump], settle: float = 0.2) -> list[Path]:
    """Stops several captures after one shared settle time; returns their files."""
    time.sleep(settle)
    return [c.stop(settle=0) for c in captures]


def tcpdump_any(ns: str, path: str | os.PathLike, **kwargs) -> Tcpdump:
    """`tcpdump -i any -y LINUX_SLL2` in ns: one file, every interface, ifindex per packet."""
    return Tcpdump(ns, "any", path, linktype="LINUX_SLL2", **kwargs)


# Wireshark dissects UDP port 5353 as mDNS; the lab's echo traffic there is plain bytes.
DEFAULT_DECODE_AS = (f"udp.port=={UDP_DPORT},data",)


def tshark_fields(pcap: str | os.PathLike, fields: Sequence[str], filter: str | None = None,
                  decode_as: Sequence[str] = DEFAULT_DECODE_AS) -> list[tuple[str, ...]]:
    """Reads pcap with tshark (independently of hoptrace): one tuple of strings per packet, in
    file order. Missing fields are ""; a field occurring several times (an ICMP error's quoted
    header) is comma-joined. tshark 4.0 prints frame.time_epoch with all 9 decimals for a
    nanosecond file (no -o needed; lab_selftest checks this). decode_as: `-d` rules; by
    default UDP 5353 is read as data, so `data.data` is the scenario's payload in hex."""
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", "aggregator=,"]
    for rule in decode_as:
        argv += ["-d", rule]
    for f in fields:
        argv += ["-e", f]
    if filter:
        argv += ["-Y", filter]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return [tuple(line.split("\t")) for line in r.stdout.splitlines()]


def packet_count(pcap: str | os.PathLike) -> int:
    """Packets in a capture, counted by capinfos."""
    r = subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(pcap)], capture_output=True, text=True,
                       check=True)
    return int(r.stdout.split()[-1])


def epoch_ns(text: str) -> int:
    """tshark's frame.time_epoch ("1795294903.485709370") as integer nanoseconds, without going
    through a float (a double cannot hold today's epoch to the nanosecond)."""
    sec, _, frac = text.strip().partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"not an epoch time with at most 9 decimals: {text!r}")
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0") or "0")


def nearest_rank(samples: Sequence[int], p: float) -> int:
    """The nearest-rank p-th percentile: the smallest sample with at least p% of the samples at
    or below it (so it is always a real sample)."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)
    rank = math.ceil(fractions.Fraction(str(p)) * len(s) / 100)  # exact: 99.9 stays 999/10
    return s[min(max(rank, 1), len(s)) - 1]


class Checks:
    """The e2e tests' way of reporting: ``checks(name, fn)`` runs one check (fn returns a detail
    to print, or raises) and prints one PASS/FAIL line, and returns fn's result (None if it
    raised); ``checks.summary()`` prints the last line,
    exactly "N passed, M failed", and returns the exit code (0 all passed, 1 otherwise).
    HOPTRACE_TEST_VERBOSE=1 adds the traceback of each failure."""

    def __init__(self) -> None:
        self.results: list[bool] = []

    def __call__(self, name: str, fn) -> object:
        try:
            detail = fn()
            print(f"PASS {name}" + (f": {detail}" if detail not in (None, "") else ""), flush=True)
            self.results.append(True)
            return detail
        except Exception as e:  # noqa: BLE001 - a failed check is reported, the rest still run
            msg = str(e).strip().replace("\n", " | ") or type(e).__name__
            print(f"FAIL {name}: {msg}", flush=True)
            if os.environ.get("HOPTRACE_TEST_VERBOSE"):
                import traceback
                traceback.print_exc()
            self.results.append(False)
            return None

    def summary(self) -> int:
        passed, failed = self.results.count(True), self.results.count(False)
        print(f"{passed} passed, {failed} failed", flush=True)
        return 0 if failed == 0 and passed > 0 else 1


def expect(cond: object, msg: str) -> None:
    """Raises AssertionError(msg) unless cond: the body of a check."""
    if not cond:
        raise AssertionError(msg)


# --------------------------------------------------------------------------------------------
# Traffic (the scenario's; also for tests)


@dataclasses.dataclass
class PingResult:
    container: str
    transmitted: int
    received: int
    output: str


def ping_both(lab: Lab, count: int = PING_COUNT, interval: float = PING_INTERVAL_S, ident: int = PING_IDENT,
              dest: str | None = None) -> dict[str, PingResult]:
    """c1 and c2 ping the server with the SAME ICMP echo id (`ping -e`); c2 starts once c1's flow
    is in conntrack, so the host's MASQUERADE keeps c1's id and rewrites c2's."""
    dest = dest or lab.ip["server"]
    procs = {}
    for name in ("c1", "c2"):
        procs[name] = lab.popen(name, "ping", "-n", "-c", count, "-i", interval, "-e", ident, "-W", 2, dest,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if name == "c1":
            _wait_for_flow(lab, "icmp", lab.ip["c1"], dest)
    results = {}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=count * interval + 30)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        tx, rx = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        results[name] = PingResult(name, tx, rx, out)
    return results


def udp_payloads(container: str, count: int = UDP_COUNT) -> list[bytes]:
    """What udp_both sends from one container: distinct payloads, the last one identical for c1
    and c2 (and of the same length as theirs, so only NAT-stable fields can tell them apart)."""
    return [f"hoptrace udp {container} seq={i}\n".encode() for i in range(count - 1)] + [SAME_UDP_PAYLOAD]


@dataclasses.dataclass
class UdpResult:
    container: str
    sent: list[bytes]
    echoed: list[bool]  # per datagram: the server's echo came back identical


def udp_both(lab: Lab, count: int = UDP_COUNT, sport: int = UDP_SPORT, dport: int = UDP_DPORT,
             interval: float = PING_INTERVAL_S) -> dict[str, UdpResult]:
    """c1 and c2 each send `count` datagrams from the SAME source port to the server, which
    echoes each one (socat UDP-RECVFROM,fork PIPE). The client is this file run inside the
    container (`lablib.py _udp-client`): one datagram per send(), unlike a socat client whose
    reads of a pipe can merge lines into one datagram."""
    server = lab.popen("server", "socat", "-T", "2", f"UDP-RECVFROM:{dport},fork,reuseaddr", "PIPE",
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", dport)
        procs = {}
        for name in ("c1", "c2"):
            payloads = udp_payloads(name, count)
            procs[name] = (payloads, lab.popen(
                name, sys.executable, str(Path(__file__).resolve()), "_udp-client", lab.ip["server"], dport, sport,
                interval, *[p.hex() for p in payloads], stdout=subprocess.PIPE, text=True))
            if name == "c1":
                _wait_for_flow(lab, "udp", lab.ip["c1"], lab.ip["server"])
        results = {}
        for name, (payloads, p) in procs.items():
            out, _ = p.communicate(timeout=count * (interval + 2) + 30)
            echoed = [line.strip() == "ok" for line in out.splitlines()]
            results[name] = UdpResult(name, payloads, echoed + [False] * (count - len(echoed)))
        return results
    finally:
        _terminate(server)


def tcp_upload(lab: Lab, mb: float, port: int = TCP_PORT, container: str = "c1") -> int:
    """Uploads `mb` MiB from a container to a socat listener on the server; returns the bytes
    the server received."""
    server = lab.popen("server", "socat", "-u", f"TCP-LISTEN:{port},reuseaddr", "STDOUT",
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "tcp", port)
        counted = {"n": 0}

        def count() -> None:
            while chunk := server.stdout.read(1 << 16):
                counted["n"] += len(chunk)

        t = threading.Thread(target=count, daemon=True)
        t.start()
        lab.run(container, sys.executable, str(Path(__file__).resolve()), "_tcp-client", lab.ip["server"], port,
                int(mb * 1024 * 1024), timeout=300)
        server.wait(timeout=30)
        t.join(30)
        return counted["n"]
    finally:
        _terminate(server)


def _wait_for_flow(lab: Lab, proto: str, src: str, dst: str, timeout: float = STAGGER_MAX_S) -> bool:
    """Waits until the host's conntrack table holds a proto flow src -> dst."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = lab.run("host", "conntrack", "-L", "-p", proto, "-s", src, "-d", dst, check=False)
        if "src=" in r.stdout:
            return True
        time.sleep(0.01)
    return False


def _terminate(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _udp_client(server: str, dport: int, sport: int, interval: float, payloads_hex: list[str]) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", sport))
    s.connect((server, dport))
    s.settimeout(2)
    for i, h in enumerate(payloads_hex):
        if i:
            time.sleep(interval)
        payload = bytes.fromhex(h)
        s.send(payload)
        try:
            ok = s.recv(65535) == payload
        except OSError:
            ok = False
        print("ok" if ok else "lost", flush=True)
    return 0


def _tcp_client(server: str, port: int, nbytes: int) -> int:
    # A pattern with period 251 (prime): consecutive segments carry different payload bytes.
    block = bytes(i % 251 for i in range(251 * 256))
    with socket.create_connection((server, port), timeout=30) as s:
        left = nbytes
        while left > 0:
            chunk = block[: min(left, len(block))]
            s.sendall(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        while s.recv(4096):
            pass
    return 0


# --------------------------------------------------------------------------------------------
# The scenario (examples/scenario.sh)


def run_scenario(outdir: str | os.PathLike, prefix: str | None = None, tcp_mb: float = 0) -> int:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or os.environ.get("HOPTRACE_LAB_PREFIX") or "hoptrace"
    lab = Lab(prefix, reuse=True)
    with lab:
        print(f"scenario: lab '{lab.prefix}' " + ("built for this run" if lab.owned else "already up, reused"))
        (outdir / "host-links.txt").write_text(lab.links("host"))
        lab.flush_conntrack("host")  # only this run's flows in conntrack.txt
        captures = []
        try:
            for name, ns, ifname in lab.points():
                captures.append(Tcpdump(ns, ifname, outdir / f"{name}.pcap"))
            captures.append(tcpdump_any(lab.ns["host"], outdir / "host-any.pcap"))
            captures.append(Tcpdump(lab.ns["server"], lab.ifname["server"], outdir / "server-eth0.pcap"))
            print(f"scenario: {len(captures)} tcpdumps listening")

            pings = ping_both(lab)
            for r in pings.values():
                print(f"scenario: ping from {r.container}: {r.transmitted} sent, {r.received} received")
            udp = udp_both(lab)
            for r in udp.values():
                print(f"scenario: udp from {r.container}: {len(r.sent)} sent, {sum(r.echoed)} echoed")
            if tcp_mb:
                got = tcp_upload(lab, tcp_mb)
                print(f"scenario: tcp upload c1 -> server: {int(tcp_mb * 1048576)} bytes sent, {got} received")
            time.sleep(1)
            (outdir / "conntrack.txt").write_text(lab.conntrack_text("host"))
        finally:
            stop_all(captures, settle=0)  # the traffic ended a second ago
    print(f"scenario: files in {outdir}:")
    for c in captures:
        drops = f", {c.dropped} dropped by kernel" if c.dropped else ""
        print(f"  {c.path.name:18} {packet_count(c.path):6} packets{drops}")
    for extra in ("conntrack.txt", "host-links.txt"):
        print(f"  {extra:18} {len((outdir / extra).read_text().splitlines()):6} lines")
    ok = all(r.received == r.transmitted > 0 for r in pings.values()) and all(
        all(r.echoed) for r in udp.values())
    if not ok:
        print("scenario: some traffic got no answer", file=sys.stderr)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Internal helpers, run inside a namespace by the traffic functions above.
    if argv and argv[0] == "_udp-client":
        return _udp_client(argv[1], int(argv[2]), int(argv[3]), float(argv[4]), argv[5:])
    if argv and argv[0] == "_tcp-client":
        return _tcp_client(argv[1], int(argv[2]), int(argv[3]))

    ap = argparse.ArgumentParser(prog="lablib.py", description="hoptrace lab helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scenario", help="capture the scenario's traffic at every point into OUTDIR")
    sc.add_argument("--prefix", default=None, help="lab prefix (default $HOPTRACE_LAB_PREFIX or hoptrace)")
    sc.add_argument("--tcp-mb", type=float, default=0, help="also upload N MiB over TCP from c1")
    sc.add_argument("outdir")
    sub.add_parser("reap", help="remove labs of lablib runs whose process is gone")
    args = ap.parse_args(argv)
    if args.cmd == "reap":
        if os.geteuid() != 0:
            print("lablib.py: reap needs root", file=sys.stderr)
            return 1
        for p in reap_stale_labs():
            print(f"reaped lab '{p}'")
        return 0
    reason = _netns_unusable_reason()
    if reason:
        print(f"lablib.py: {reason}", file=sys.stderr)
        return 1
    try:
        return run_scenario(args.outdir, args.prefix, args.tcp_mb)
    except (RuntimeError, TimeoutError, subprocess.SubprocessError) as e:
        print(f"lablib.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
