#!/usr/bin/env python3
"""A real Docker engine for hoptrace's end-to-end tests, in namespaces of its own.

Debian's ``docker.io`` (dockerd 20.10, containerd, runc) runs inside a network namespace this module
creates, never in the machine's own, and never touches the machine's own Docker: its own containerd,
data root, exec root, socket, pidfile, daemon.json, trust key and cgroup parent, all named by one prefix
(``htdk`` + 6 hex) and kept in /var/tmp/PREFIX/. The namespaces:

    PREFIX-engine  dockerd + containerd (docker0, br-…, the containers' veths, Docker's iptables rules)
                   eth0 203.0.113.2/24, default via 203.0.113.1 ──┐
    PREFIX-router  eth0 203.0.113.1/24, eth1 198.51.100.1/24 ─────┘ (connected routes only: replies need
                                                                    Docker's MASQUERADE)
    PREFIX-server  eth0 198.51.100.10/24, default via 198.51.100.1

``ip netns exec`` remounts /sys, and dockerd then fails ("Devices cgroup isn't mounted"), so the daemon
is started with ``nsenter --net=/run/netns/PREFIX-engine``, inside a private mount namespace (``unshare
--mount``) shared with its containerd, so that its overlay and nsfs mounts vanish with it; a tmpfs on /run in
there takes the few files they put at fixed paths (/run/containerd/s/, /run/docker/plugins). There is no
registry: the image is built offline from ``busybox-static`` (a rootfs with /bin/busybox and the links of
``busybox --install -s``, tarred and ``docker import``-ed).

Typical test::

    with dockerlib.Engine() as engine:                # reaps engines of killed runs first
        engine.docker("run", "-d", "--name", "web", engine.image, "sleep", "600")
        ns = engine.attach("web")                     # a named netns for the container (tcpdump, ip)
        subprocess.run([hoptrace, "trace", "--container", "web", "--host-netns", engine.ns["engine"], ...],
                       env=engine.env())              # DOCKER_HOST: hoptrace's `docker inspect` asks this engine

Teardown (``down``, also on atexit/SIGTERM/SIGHUP/the lablib watchdog, and for a run killed with SIGKILL on the
next run): every process in the three namespaces or in the engine's cgroups is killed (dockerd, containerd, the
shims, docker-proxy, the containers' processes), the cgroups removed, the namespaces deleted (the veths go with
them), the data and exec roots removed.

Standard library only; the watchdog, captures and readers are lablib's.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Sequence

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402

PREFIX_STEM = "htdk"
# Which process owns which engine: {"pid", "start"}; an engine whose owner is gone is reaped.
OWNER_DIR = Path("/run/hoptrace-docker")
# Each engine's directory, PREFIX/: data roots (overlay2 needs a real file system, not tmpfs on older kernels), the exec
# roots and sockets (short paths: a unix socket path has 108 bytes), logs, the image's rootfs.
DATA_PARENT = Path("/var/tmp")
IMAGE = "hoptrace-busybox:offline"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
REQUIRED_TOOLS = ("dockerd", "containerd", "runc", "nsenter", "unshare", "ip")

ENGINE_IP = "203.0.113.2"
ROUTER_IP = "203.0.113.1"
ROUTER_SERVER_IP = "198.51.100.1"
SERVER_IP = "198.51.100.10"


def _log(msg: str) -> None:
    print(f"dockerlib: {msg}", file=sys.stderr, flush=True)


def docker_client() -> str | None:
    """Debian's docker.io client (/usr/bin/docker) when installed, so the client and the engine are one
    release; else whatever `docker` is on PATH."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


def static_busybox() -> str | None:
    """busybox-static's binary: a busybox ELF without a program interpreter (PT_INTERP), which runs in
    an image that has nothing else."""
    for path in BUSYBOX_CANDIDATES:
        try:
            raw = Path(path).read_bytes()
        except OSError:
            continue
        if raw[:4] != b"\x7fELF" or raw[4] != 2:  # 64-bit only: the test machines are
            continue
        phoff, = struct.unpack_from("<Q", raw, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", raw, 0x36)
        types = [struct.unpack_from("<I", raw, phoff + i * phentsize)[0] for i in range(phnum)]
        if 3 not in types:  # PT_INTERP
            return path
    return None


def unusable_reason() -> str | None:
    """Why a Docker engine cannot be run here (docker.io or busybox-static missing), or None."""
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if docker_client() is None:
        missing.append("docker")
    if missing:
        return "missing " + ", ".join(missing) + " (examples/install-deps.sh installs docker.io)"
    if static_busybox() is None:
        return "no static busybox in " + " or ".join(BUSYBOX_CANDIDATES) + " (install busybox-static)"
    return None


# --------------------------------------------------------------------------------------------
# Processes, cgroups and mounts of one prefix (also for reaping a killed run's engine)


def _netns_inode(path: str | os.PathLike) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # gone


def pids_of(prefix: str, netns_inodes: set[int]) -> list[int]:
    """Live processes in one of the namespaces (by inode) or in a cgroup named by the prefix (the containers,
    `--cgroup-parent PREFIX`). Zombies are left out: a killed shim's parent may be an init that never reaps."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or _is_zombie(int(entry)):
            continue
        pid = int(entry)
        if _netns_inode(f"/proc/{pid}/ns/net") in netns_inodes:
            pids.append(pid)
            continue
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(f"/{prefix}/" in line or line.endswith(f"/{prefix}") for line in cgroups.splitlines()):
            pids.append(pid)
    return pids


def _kill_all(prefix: str, netns_inodes: set[int], timeout: float = 10) -> list[int]:
    """SIGKILLs every process of the prefix until none is left (a dying shim can leave a child behind for a
    moment). Returns the pids still alive after `timeout` (zombies excluded)."""
    deadline = time.monotonic() + timeout
    left: list[int] = []
    while True:
        left = []
        for pid in pids_of(prefix, netns_inodes):
            left.append(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _cgroup_mounts() -> list[Path]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[4]))
    return mounts


def _remove_cgroups(prefix: str, depth: int = 4) -> None:
    """Removes the cgroup directories named `prefix` (and their children) in every hierarchy, down to
    `depth` levels (cgroupfs puts them at the hierarchy's root, or below a nested root like
    memory:/process_api/…)."""
    def remove_tree(d: Path) -> None:
        for child in sorted((c for c in d.iterdir() if c.is_dir()), reverse=True):
            remove_tree(child)
        try:
            d.rmdir()
        except OSError as e:
            _log(f"cannot remove cgroup {d}: {e}")

    def walk(d: Path, level: int) -> None:
        try:
            children = [c for c in d.iterdir() if c.is_dir() and not c.is_symlink()]
        except OSError:
            return
        for c in children:
            if c.name == prefix:
                remove_tree(c)
            elif level < depth:
                walk(c, level + 1)

    for m in _cgroup_mounts():
        walk(m, 1)


def _unmount_under(*dirs: Path) -> None:
    """Lazily unmounts whatever is mounted below dirs in this mount namespace, deepest first (nothing,
    normally: the engine's mounts live in its private mount namespace)."""
    roots = [str(d) for d in dirs]
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp == r or mp.startswith(r + "/") for r in roots):
            targets.append(mp)
    for mp in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30)


def namespaces_of(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix + "-"))
    except OSError:
        return []


def remove_prefix(prefix: str) -> list[int]:
    """Everything an engine of this prefix made, gone: its processes, cgroups, mounts, namespaces (and so its
    veths), data and exec roots, owner marker. Idempotent; returns pids that would not die."""
    names = namespaces_of(prefix)
    inodes = {i for i in (_netns_inode(Path("/run/netns", n)) for n in names) if i is not None}
    alive = _kill_all(prefix, inodes)
    if alive:
        _log(f"{prefix}: processes still alive after SIGKILL: {alive}")
    _remove_cgroups(prefix)
    data = DATA_PARENT / prefix
    _unmount_under(data)
    for n in names:
        r = subprocess.run(["ip", "netns", "del", n], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            _log(f"ip netns del {n}: {r.stderr.strip()}")
    shutil.rmtree(data, ignore_errors=True)
    (OWNER_DIR / prefix).unlink(missing_ok=True)
    return alive


def reap_stale_engines() -> list[str]:
    """Removes engines whose owning process is gone (a run killed with SIGKILL, e.g. by a ctest timeout):
    those with an owner marker naming a dead process, and namespaces/roots named htdk… with no marker."""
    prefixes = set()
    if OWNER_DIR.is_dir():
        for marker in OWNER_DIR.iterdir():
            try:
                owner = json.loads(marker.read_text())
                alive = lablib._proc_start_time(int(owner["pid"])) == owner["start"]
            except (OSError, ValueError, KeyError, TypeError):
                alive = False
            if not alive:
                prefixes.add(marker.name)
    # A run killed between creating a namespace and writing its marker cannot happen (the marker comes
    # first), but one killed while removing the marker last can leave pieces behind.
    owned = {m.name for m in OWNER_DIR.iterdir()} if OWNER_DIR.is_dir() else set()
    candidates = set()
    for parent in (Path("/run/netns"), DATA_PARENT):
        try:
            candidates |= {n.split("-")[0] for n in os.listdir(parent) if n.startswith(PREFIX_STEM)}
        except OSError:
            pass
    prefixes |= {p for p in candidates if len(p) == len(PREFIX_STEM) + 6 and p not in owned}
    for p in sorted(prefixes):
        remove_prefix(p)
    return sorted(prefixes)


# --------------------------------------------------------------------------------------------
# The engine


_active: list["Engine"] = []


def _down_all() -> None:
    for e in list(_active):
        e.down()


class Engine:
    """dockerd (with its own containerd) in a namespace of its own, a router and a far server behind it.

    Attributes: prefix; ns {"engine", "router", "server"} -> namespace name; ip {"uplink", "router",
    "router_server", "server"}; ifname {"uplink"} (the engine's, "eth0"); host (DOCKER_HOST, unix://…);
    image (the offline busybox image, after up()); data, run (the data and exec roots' parents)."""

    def __init__(self) -> None:
        self.prefix = PREFIX_STEM + secrets.token_hex(3)
        p = self.prefix
        self.ns = {"engine": f"{p}-engine", "router": f"{p}-router", "server": f"{p}-server"}
        self.ip = {"uplink": ENGINE_IP, "router": ROUTER_IP, "router_server": ROUTER_SERVER_IP, "server": SERVER_IP}
        self.ifname = {"uplink": "eth0"}
        self.data = DATA_PARENT / p
        self.run_dir = self.data / "run"
        self.socket = self.run_dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.image = IMAGE
        self.client = docker_client() or "docker"
        self._daemon: subprocess.Popen | None = None
        self._attached: list[str] = []
        self.owned = False

    # -- life cycle

    def __enter__(self) -> "Engine":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "Engine":
        """Builds the namespaces, starts containerd and dockerd, imports the image. Idempotent."""
        if self.owned:
            return self
        _install_cleanup()
        for p in reap_stale_engines():
            _log(f"reaped the engine of a killed run: {p}")
        OWNER_DIR.mkdir(mode=0o755, exist_ok=True)
        pid = os.getpid()
        (OWNER_DIR / self.prefix).write_text(json.dumps({"pid": pid, "start": lablib._proc_start_time(pid)}) + "\n")
        self.owned = True
        _active.append(self)
        try:
            self._network()
            self._start_daemon()
            self._build_image()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stops the engine and removes everything it made. Idempotent."""
        if not self.owned:
            return
        self.owned = False
        if self in _active:
            _active.remove(self)
        alive = remove_prefix(self.prefix)
        if self._daemon is not None and self._daemon.poll() is None:
            self._daemon.kill()
        if self._daemon is not None:
            try:
                self._daemon.wait(5)
            except subprocess.TimeoutExpired:
                alive.append(self._daemon.pid)
        if alive:
            _log(f"{self.prefix}: left running: {alive}")

    def _ip(self, *args: str) -> None:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def _sysctl(self, ns: str, setting: str) -> None:
        r = subprocess.run(["ip", "netns", "exec", self.ns[ns], "sysctl", "-qw", setting], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"sysctl {setting} in {self.ns[ns]}: {r.stderr.strip()}")

    def _network(self) -> None:
        e, r, s = self.ns["engine"], self.ns["router"], self.ns["server"]
        for n in (e, r, s):
            self._ip("netns", "add", n)
            self._ip("-n", n, "link", "set", "lo", "up")
        self._ip("-n", e, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", r)
        self._ip("-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", s)
        for ns, dev, addr in ((e, "eth0", ENGINE_IP), (r, "eth0", ROUTER_IP), (r, "eth1", ROUTER_SERVER_IP),
                              (s, "eth0", SERVER_IP)):
            self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self._ip("-n", ns, "link", "set", dev, "up")
        self._ip("-n", e, "route", "add", "default", "via", ROUTER_IP)
        self._ip("-n", s, "route", "add", "default", "via", ROUTER_SERVER_IP)
        self._sysctl("router", "net.ipv4.ip_forward=1")
        for ns in ("engine", "router", "server"):  # no IPv6 chatter (router solicitations, MLD) in the captures
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")
            self._sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")

    def _start_daemon(self) -> None:
        d, run = self.data, self.run_dir
        d.mkdir(mode=0o711)
        run.mkdir(mode=0o711)  # nothing of the engine's lands in the machine's /run (a tmpfs hides it, below)
        # containerd of our own: dockerd would otherwise use a system containerd at /run/containerd.
        (d / "containerd.toml").write_text(
            "version = 2\n"
            f'root = "{d}/containerd"\n'
            f'state = "{run}/containerd"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{run}/containerd.sock"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{d}/containerd-opt"\n')
        # Not the machine's /etc/docker/daemon.json; and the trust key not in /etc/docker/key.json (a setting of
        # the config file only, in 20.10).
        (d / "daemon.json").write_text(json.dumps({"deprecated-key-path": f"{d}/key.json"}) + "\n")
        dockerd = ["dockerd", "--config-file", f"{d}/daemon.json", "--containerd", f"{run}/containerd.sock",
                   "--data-root", f"{d}/data", "--exec-root", f"{run}/exec", "-H", self.host,
                   "--pidfile", f"{run}/dockerd.pid", "--iptables=true", "--ip-forward=true",
                   "--cgroup-parent", self.prefix, "--exec-opt", "native.cgroupdriver=cgroupfs",
                   "--shutdown-timeout", "1"]
        # One private mount namespace for containerd and dockerd: the shims must see dockerd's overlay
        # mounts, and nothing of theirs is left mounted in the machine's mount namespace. A tmpfs on /run there
        # takes what they write to fixed paths (/run/containerd/s/ for the shims' sockets, /run/docker/plugins)
        # and hides the machine's own /run/containerd and /run/docker from them.
        # Where the kernel has AppArmor (Debian's default), dockerd would load its docker-default profile into
        # the kernel (shared with the machine's own Docker, and impossible without apparmor_parser, which
        # docker.io only recommends): hiding securityfs there makes the engine and runc see AppArmor as off.
        script = ('mount -t tmpfs -o mode=755 hoptrace-engine-run /run || exit 1\n'
                  'if [ -d /sys/kernel/security/apparmor ]; then\n'
                  '  mount -t tmpfs -o mode=755 hoptrace-engine-nosec /sys/kernel/security || exit 1\n'
                  'fi\n'
                  f'containerd --config "{d}/containerd.toml" >"{d}/containerd.log" 2>&1 &\n'
                  f'i=0; while [ ! -S "{run}/containerd.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n'
                  'exec "$@"\n')
        with open(d / "dockerd.log", "wb") as log:
            self._daemon = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns['engine']}", "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script, "sh", *dockerd],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            r = self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
            if r.returncode == 0:
                self.server_version = r.stdout.strip()
                return
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join((d / "dockerd.log").read_text(errors="replace").splitlines()[-5:])
                raise RuntimeError(f"dockerd did not come up ({self._daemon.poll()=}): {tail}")
            time.sleep(0.1)

    def _build_image(self) -> None:
        busybox = static_busybox()
        rootfs = self.data / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        for sub in ("tmp", "www", "etc"):
            (rootfs / sub).mkdir()
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"], check=True,
                       capture_output=True, timeout=30)
        (rootfs / "www" / "index.html").write_text("hoptrace docker e2e\n")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(rootfs, arcname=".")
        r = subprocess.run([self.client, "-H", self.host, "import", "-c", 'CMD ["/bin/sh"]', "-", self.image],
                           input=buf.getvalue(), capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"docker import: {r.stderr.decode(errors='replace').strip()}")

    # -- using it

    def env(self) -> dict[str, str]:
        """The environment for programs that should talk to this engine (hoptrace's `docker inspect`):
        DOCKER_HOST, and PATH with the client's directory first."""
        path = os.path.dirname(self.client) + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return {**os.environ, "DOCKER_HOST": self.host, "PATH": path}

    def docker(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs the docker client against this engine; text output captured."""
        argv = [self.client, "-H", self.host, *map(str, args)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def inspect(self, container: str) -> dict:
        return json.loads(self.docker("inspect", "--type", "container", container).stdout)[0]

    def pid(self, container: str) -> int:
        return int(self.inspect(container)["State"]["Pid"])

    def attach(self, container: str) -> str:
        """A named network namespace (PREFIX-c-NAME) for a running container's, so that `ip netns exec` (tcpdump,
        conntrack) can enter it; removed with the engine."""
        name = f"{self.prefix}-c-{container}"
        if name not in self._attached:
            self._ip("netns", "attach", name, str(self.pid(container)))
            self._attached.append(name)
        return name

    def run_in(self, ns: str, *cmd, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs cmd with `ip netns exec` in one of ns (a key of self.ns, or a full name)."""
        argv = ["ip", "netns", "exec", self.ns.get(ns, ns), *map(str, cmd)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def popen_in(self, ns: str, *cmd, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns.get(ns, ns), *map(str, cmd)], **kwargs)

    def conntrack(self) -> list[lablib.ConntrackEntry]:
        """`conntrack -L` in the engine's namespace (Docker's NAT happens there)."""
        return lablib.parse_conntrack(self.run_in("engine", "conntrack", "-L").stdout)

    def iptables_save(self, table: str) -> list[str]:
        return self.run_in("engine", "iptables-save", "-t", table).stdout.splitlines()

    # -- Docker's firewall as iptables and nft themselves print it (the references of the --trace-rules checks).
    # The three listings keep the chain's order, so a rule's position in one is its position in the others.

    def iptables_rules(self, chain: str, table: str = "filter") -> list[str]:
        """The rules of a chain as `iptables -S CHAIN` prints them, minus the leading `-A CHAIN `."""
        lines = self.run_in("engine", "iptables", "-t", table, "-S", chain).stdout.splitlines()
        head = f"-A {chain} "
        return [line[len(head):] for line in lines if line.startswith(head)]

    def rule_counters(self, chain: str, table: str = "filter") -> list[int]:
        """Each rule's packet counter, in the chain's order (`iptables -L CHAIN -v -x -n`)."""
        lines = self.run_in("engine", "iptables", "-t", table, "-L", chain, "-v", "-x", "-n").stdout.splitlines()
        return [int(line.split()[0]) for line in lines[2:] if line.strip()]

    def nft_rule_handles(self, chain: str, table: str = "filter", family: str = "ip") -> list[int]:
        """Each rule's nftables handle, in the chain's order (`nft -a list chain FAMILY TABLE CHAIN`)."""
        out = self.run_in("engine", "nft", "-a", "list", "chain", family, table, chain).stdout
        return [int(line.rsplit("# handle ", 1)[1]) for line in out.splitlines()
                if "# handle " in line and not line.strip().startswith("chain ")]

    def nft_tables(self) -> list[str]:
        """`nft list tables` in the engine's namespace: "FAMILY NAME" each."""
        out = self.run_in("engine", "nft", "list", "tables").stdout
        return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")]

    def nft_monitor_trace(self, path: Path) -> "NftTrace":
        """`nft -a monitor trace` in the engine's namespace, writing to path, until its stop()."""
        return NftTrace(self, path)


class NftTrace:
    """The kernel's trace events as nft itself prints them (`nft -a monitor trace`, line-buffered to a file), for
    packets someone marked with nftrace. stop() ends it and returns the events, each a dict: id, family, table, chain,
    kind ("rule", "policy", "packet", "return", …), handle (rules; None otherwise), verdict ("drop", "accept", …;
    "" for a packet line), text (the rest of the line)."""

    def __init__(self, engine: Engine, path: Path):
        self.path = Path(path)
        self._out = open(self.path, "wb")
        self._proc = engine.popen_in("engine", "stdbuf", "-oL", "nft", "-a", "monitor", "trace", stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # Subscribed once nft is running; give it a moment (nothing is traced before hoptrace's table anyway).
        time.sleep(0.3)
        if self._proc.poll() is not None:
            raise RuntimeError(f"nft monitor trace exited {self._proc.returncode}: {self.path.read_text()}")

    def stop(self, settle: float = 0.3) -> list[dict]:
        time.sleep(settle)  # the last events of the traffic are read and printed
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._out.close()
        return parse_nft_trace(self.path.read_text(errors="replace"))


def parse_nft_trace(text: str) -> list[dict]:
    """Lines of `nft -a monitor trace`: `trace id ID FAMILY TABLE CHAIN rule TEXT # handle N (verdict V)`,
    `… CHAIN policy accept`, `… CHAIN packet: HEADERS`."""
    events = []
    for line in text.splitlines():
        w = line.split(None, 6)
        if len(w) < 6 or w[:2] != ["trace", "id"]:
            continue
        rest = w[6] if len(w) > 6 else ""
        e = {"id": w[2], "family": w[3], "table": w[4], "chain": w[5], "kind": rest.split(" ", 1)[0].rstrip(":"),
             "handle": None, "verdict": "", "text": rest}
        if e["kind"] == "rule" and "(verdict " in rest:
            body, verdict = rest.rsplit("(verdict ", 1)
            e["verdict"] = verdict.rstrip(") ").split()[0]
            if "# handle " in body:
                e["handle"] = int(body.rsplit("# handle ", 1)[1].split()[0])
        elif e["kind"] == "policy":
            e["verdict"] = rest.split()[1] if len(rest.split()) > 1 else ""
        events.append(e)
    return events


_cleanup_installed = False


def _install_cleanup() -> None:
    """Engines are removed on exit, and on the signals lablib handles (its handler runs atexit hooks via
    SystemExit): SIGTERM, SIGHUP and the watchdog's SIGALRM."""
    global _cleanup_installed
    if _cleanup_installed:
        return
    _cleanup_installed = True
    atexit.register(_down_all)
    lablib._install_cleanup()
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)}

        def on_signal(signum: int, frame) -> None:
            _log(f"{signal.Signals(signum).name}: removing {len(_active)} engine(s)")
            _down_all()
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)
            raise SystemExit(1 if signum == signal.SIGALRM else 128 + signum)
        for sig in previous:
            signal.signal(sig, on_signal)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv != ["reap"]:
        print("usage: dockerlib.py reap   # remove engines of dockerlib runs whose process is gone", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("dockerlib.py: reap needs root", file=sys.stderr)
        return 1
    for p in reap_stale_engines():
        print(f"reaped engine '{p}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
