#!/usr/bin/env python3
"""Live capture benchmark: hoptrace capturing the four points of a container's path, against four tcpdump
processes writing pcap files on the same points, in the same run on the same machine.

A UDP flood goes from container c1 through its veth, docker0 and the uplink (masqueraded) to the lab's
server, which drops it in its INPUT chain (so no replies or ICMP errors double the load). For each tool and
each rate we report, per million packets sent (each seen at four points: divide by 4 for a sighting):

- kernel drops (pcap_stats, per point and summed over the four points);
- process CPU *during the capture* (from the start of the processes to the stop signal: what competes with the
  traffic on a production host), read from the kernel's per-thread run time (/proc/PID/task/*/schedstat, in
  ns) just before the signal;
- process CPU *after the stop* (hoptrace stores its spool file as packets then; tcpdump just exits) = the total
  from wait4's rusage minus the above;
- the whole machine's busy time (/proc/stat) during the capture and in total, minus the same flood with no
  capture at all: this charges the kernel's copies into the capture rings to whoever caused them.

Rounds alternate between the tools (and between hoptrace builds when --hoptrace is given several times, e.g.
--hoptrace old=/tmp/old/hoptrace --hoptrace new=build/cli/hoptrace) so that machine noise hits all alike;
medians are reported, with the ratios hoptrace / tcpdump of the same run.

Run as root:  bench/capture_bench.py --hoptrace build/cli/hoptrace [--packets 200000] [--rounds 3]
Only addresses inside the lab's own namespaces are used.
"""

import argparse
import json
import re
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
import lablib  # noqa: E402

PORT = 9999
SENDER = r"""
import socket, sys, time
n, rate, dst, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"hoptrace-bench " + b"x" * 48
start = time.perf_counter()
for i in range(n):
    s.sendto(payload + i.to_bytes(4, "big"), (dst, port))
    if rate > 0 and i % 64 == 63:
        ahead = (i + 1) / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
print(n / (time.perf_counter() - start))
"""


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all CPUs, /proc/stat). The kernel's copy of a packet
    into a capture ring is charged to whichever task runs when it happens, often the sender: only the whole
    machine's count, minus a run of the same flood with no capture, shows what capturing costs."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process's live threads have run so far, from the scheduler's ns counters.
    Read before the process is signalled to stop, so every thread is still there."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


def process_user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds so far from /proc/PID/stat: clock ticks, so 10 ms resolution per process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def flood(lab: lablib.Lab, packets: int, rate: float) -> tuple[float, float]:
    """Sends the flood; returns (packets/s achieved, CPU seconds the sender used)."""
    before = children_cpu()
    out = lab.run("c1", sys.executable, "-c", SENDER, str(packets), str(rate), lab.ip["server"], str(PORT),
                  timeout=600)
    return float(out.stdout.strip() or 0), children_cpu() - before


def run_baseline(lab: lablib.Lab, packets: int, rate: float) -> dict:
    busy = machine_busy()
    pps, _ = flood(lab, packets, rate)
    time.sleep(0.3)
    return {"machine_s": machine_busy() - busy, "send_pps": pps}


def start_tcpdump(ns: str, iface: str, path: Path) -> subprocess.Popen:
    """tcpdump as people run it for throughput: buffered writes, no --immediate-mode, a 64 MiB ring."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-Z", "root",
                             "--time-stamp-precision", "nano", "-B", "65536", "-w", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "listening on" not in line:
        raise RuntimeError(f"tcpdump on {ns}:{iface} did not start: {line.strip()}")
    return proc


POINT_ROLES = ("container", "veth", "bridge", "uplink")


class Moments:
    """CPU of the capturing processes (scheduler ns, and user/system ticks) and the machine's busy time at the
    moments of one run: 'ready' (every point captures), 'stop' (just before the stop signal)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.marks = {}

    def mark(self, name: str) -> None:
        user_sys = [process_user_sys(pid) for pid in self.pids]
        self.marks[name] = {"cpu": sum(process_cpu(pid) for pid in self.pids),
                            "user": sum(u for u, _ in user_sys), "sys": sum(s for _, s in user_sys),
                            "machine": machine_busy(), "t": time.monotonic()}

    def result(self, start_machine: float, end_machine: float, t_end: float, total_cpu: float) -> dict:
        """Startup (start to ready: opening the rings; the kernel zeroes each 64 MiB ring as it allocates it),
        capture (ready to stop: the flood, what competes with the traffic), after (stop to exit)."""
        ready, stop = self.marks["ready"], self.marks["stop"]
        return {"startup_cpu_s": ready["cpu"], "capture_cpu_s": stop["cpu"] - ready["cpu"],
                "capture_user_s": stop["user"] - ready["user"], "capture_sys_s": stop["sys"] - ready["sys"],
                "after_cpu_s": total_cpu - stop["cpu"], "cpu_s": total_cpu,
                "capture_machine_s": stop["machine"] - ready["machine"], "after_machine_s": end_machine - stop["machine"],
                "machine_s": end_machine - start_machine, "capture_wall_s": stop["t"] - ready["t"],
                "after_wall_s": t_end - stop["t"]}


def run_tcpdump(lab: lablib.Lab, workdir: Path, packets: int, rate: float) -> dict:
    points = [("c1", lab.ifname["container"]), ("host", lab.veth["c1"]), ("host", lab.ifname["bridge"]),
              ("host", lab.ifname["uplink"])]
    before = children_cpu()
    start_machine = machine_busy()
    procs = [start_tcpdump(lab.nsname(ns), iface, workdir / f"td-{i}.pcap") for i, (ns, iface) in enumerate(points)]
    moments = Moments([p.pid for p in procs])
    time.sleep(0.3)
    moments.mark("ready")
    pps, sender_cpu = flood(lab, packets, rate)
    time.sleep(0.3)
    moments.mark("stop")
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    drops = {}
    captured = 0
    for role, proc in zip(POINT_ROLES, procs):
        _, err = proc.communicate(timeout=120)
        for m in re.finditer(r"(\d+) packets? (captured|dropped by kernel)", err):
            if m.group(2) == "captured":
                captured += int(m.group(1))
            else:
                drops[role] = int(m.group(1))
    t_end = time.monotonic()
    end_machine = machine_busy()
    for i in range(len(procs)):
        (workdir / f"td-{i}.pcap").unlink(missing_ok=True)
    cpu = children_cpu() - before - sender_cpu
    return {**moments.result(start_machine, end_machine, t_end, cpu), "drops": sum(drops.values()),
            "drops_by_point": drops, "captured": captured, "stored": captured, "send_pps": pps}


def run_hoptrace(lab: lablib.Lab, hoptrace: Path, workdir: Path, packets: int, rate: float) -> dict:
    db = workdir / "bench.db"
    for suffix in ("", "-wal", "-shm", "-spool"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    before = children_cpu()
    start_machine = machine_busy()
    proc = subprocess.Popen([str(hoptrace), "capture", "--db", str(db), "--netns", lab.ns["c1"], "--host-netns",
                             lab.ns["host"], "--no-correlate", "--buffer-mb", "64"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # "capturing on …" comes once every point captures (rings allocated, the capture window open); the status
    # line is off because stderr is no terminal.
    for line in proc.stderr:
        if line.startswith("capturing on"):
            break
    else:
        proc.wait()
        raise RuntimeError("hoptrace capture did not start")
    moments = Moments([proc.pid])
    time.sleep(0.3)
    moments.mark("ready")
    pps, sender_cpu = flood(lab, packets, rate)
    time.sleep(0.3)
    moments.mark("stop")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    t_end = time.monotonic()
    end_machine = machine_busy()
    cpu = children_cpu() - before - sender_cpu
    if proc.returncode != 0:
        raise RuntimeError(f"hoptrace capture failed: {err.strip()}")
    con = sqlite3.connect(db)
    drops, captured = con.execute("SELECT sum(kernel_drops), sum(packets) FROM points").fetchone()
    drops_by_point = dict(con.execute("SELECT role, kernel_drops FROM points"))
    stored = con.execute("SELECT count(*) FROM packets").fetchone()[0]
    # Frames a build left unstored: in capture_chunks (7824020), or a spool file the database still names (after it).
    has_chunks = con.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'capture_chunks'").fetchone()[0]
    spooled = con.execute("SELECT coalesce(sum(frames), 0) FROM capture_chunks").fetchone()[0] if has_chunks else 0
    spool_file = con.execute("SELECT value FROM meta WHERE key = 'spool_file'").fetchone()
    if spool_file is not None:
        start = con.execute("SELECT value FROM meta WHERE key = 'spool_stored_bytes'").fetchone()
        spooled += spool_file_frames(db.parent / spool_file[0], int(start[0]) if start else 0)
    con.close()
    for suffix in ("", "-wal", "-shm", "-spool"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return {**moments.result(start_machine, end_machine, t_end, cpu), "drops": drops or 0,
            "drops_by_point": drops_by_point, "captured": captured or 0, "stored": stored, "spooled": spooled,
            "send_pps": pps}


def spool_file_frames(path: Path, offset: int) -> int:
    """Frames in the whole chunks of a spool file after `offset` (docs/schema.md: a 44-byte header with the frame
    count at byte 12 and the data length at byte 32, the records, an 8-byte trailer)."""
    frames = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while offset + 44 <= size:
            f.seek(offset)
            header = f.read(44)
            data_len = int.from_bytes(header[32:40], "little")
            if header[:4] != b"HTSC" or offset + 44 + data_len + 8 > size:
                break
            frames += int.from_bytes(header[12:16], "little")
            offset += 44 + data_len + 8
    return frames


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def print_table(results: list[dict]) -> None:
    tools = [k for k in results[0] if isinstance(results[0][k], dict) and "capture_cpu_s_per_mpkt" in results[0][k]]
    builds = [t for t in tools if t != "tcpdump"]
    print("CPU seconds per million packets sent (4 sightings each), medians over the rounds. capture = from every "
          "point ready to the stop signal (the flood); after = stop signal to exit; per packet = capture + after; "
          "machine = /proc/stat busy minus the flood alone. startup = s per run (opening the rings), not per packet.")
    print(f"{'rate':>8} {'tool':>9} {'startup s':>9} {'capture':>8} {'user':>6} {'sys':>6} {'after':>7} "
          f"{'per pkt':>8} {'mach cap':>8} {'mach pkt':>8} {'drops':>6} {'stored':>8} {'after s':>7} {'sent pps':>8}")
    for row in results:
        rate = "max" if row["rate_pps"] == 0 else f"{row['rate_pps']:.0f}/s"
        for tool in tools:
            r = row[tool]
            print(f"{rate:>8} {tool:>9} {r['startup_cpu_s']:>9.2f} {r['capture_cpu_s_per_mpkt']:>8.2f} "
                  f"{r['capture_user_s_per_mpkt']:>6.2f} {r['capture_sys_s_per_mpkt']:>6.2f} "
                  f"{r['after_cpu_s_per_mpkt']:>7.2f} {r['packet_cpu_s_per_mpkt']:>8.2f} "
                  f"{r['capture_machine_s_per_mpkt']:>8.2f} {r['packet_machine_s_per_mpkt']:>8.2f} "
                  f"{r['drops_per_mpkt']:>6.0f} {r['stored']:>8.0f} {r['after_wall_s']:>7.2f} {r['send_pps']:>8.0f}")
        for label in builds:
            q = row[label]["ratios"]
            text = {k: f"{v:.2f}" if v is not None else "n/a" for k, v in q.items()}
            print(f"{'':>8} {label} / tcpdump (4 processes): process CPU during the capture {text['capture_cpu']}, "
                  f"per packet in all {text['packet_cpu']}; machine CPU during the capture {text['capture_machine']}, "
                  f"per packet in all {text['packet_machine']}; kernel drops at points where tcpdump had none: "
                  f"{row[label]['drops_where_tcpdump_had_none']}"
                  + (f"; {row[label]['spooled_left_max']} frames left spooled!" if row[label]['spooled_left_max']
                     else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hoptrace", action="append",
                    help="[LABEL=]PATH of a hoptrace binary; repeat to compare builds in the same run "
                         "(default: $HOPTRACE_BIN or build/cli/hoptrace)")
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rates", default="20000,0", help="packets/s, comma separated; 0 = as fast as possible")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write every run's numbers to FILE (JSON)")
    ap.add_argument("--table", metavar="FILE", help="print the table of an earlier run's --json FILE, run nothing")
    args = ap.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return 0
    if os.geteuid() != 0:
        print("capture_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    builds = {}
    for spec in args.hoptrace or [os.environ.get("HOPTRACE_BIN", "build/cli/hoptrace")]:
        label, _, path = spec.rpartition("=")
        label = label or ("hoptrace" if not builds else f"hoptrace{len(builds) + 1}")
        if label in builds or label == "tcpdump":
            print(f"capture_bench: --hoptrace label '{label}' given twice (or 'tcpdump')", file=sys.stderr)
            return 2
        builds[label] = Path(path).resolve()
    tools = ["tcpdump", *builds]
    results = []
    with lablib.Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        lab.run("server", "iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT), "-j", "DROP")
        workdir = Path(tmp)
        for rate in [float(r) for r in args.rates.split(",")]:
            runs = {tool: [] for tool in tools}
            baseline = []
            for k in range(args.rounds):
                baseline.append(run_baseline(lab, args.packets, rate))
                # tcpdump first, then the builds in an order that rotates from round to round.
                order = list(builds)[k % len(builds):] + list(builds)[:k % len(builds)]
                runs["tcpdump"].append(run_tcpdump(lab, workdir, args.packets, rate))
                for label in order:
                    runs[label].append(run_hoptrace(lab, builds[label], workdir, args.packets, rate))
            base = statistics.median(r["machine_s"] for r in baseline)
            row = {"rate_pps": rate, "packets": args.packets, "baseline_machine_s": base}
            per_mpkt = 1e6 / args.packets
            keys = ("startup_cpu_s", "capture_cpu_s", "capture_user_s", "capture_sys_s", "after_cpu_s", "cpu_s",
                    "capture_machine_s", "after_machine_s", "machine_s", "capture_wall_s", "after_wall_s", "drops",
                    "captured", "stored", "send_pps")
            for tool, rs in runs.items():
                med = {key: statistics.median(r[key] for r in rs) for key in keys}
                # Per packet: the capture window (the hot path) and everything after it. The startup (mostly the
                # kernel zeroing the 64 MiB rings) is the same fixed cost for both tools and is shown apart.
                per_packet = [r["capture_cpu_s"] + r["after_cpu_s"] for r in rs]
                per_packet_machine = [r["capture_machine_s"] - base + r["after_machine_s"] for r in rs]
                row[tool] = {
                    "startup_cpu_s": med["startup_cpu_s"],
                    "capture_cpu_s_per_mpkt": med["capture_cpu_s"] * per_mpkt,
                    "capture_user_s_per_mpkt": med["capture_user_s"] * per_mpkt,
                    "capture_sys_s_per_mpkt": med["capture_sys_s"] * per_mpkt,
                    "after_cpu_s_per_mpkt": med["after_cpu_s"] * per_mpkt,
                    "packet_cpu_s_per_mpkt": statistics.median(per_packet) * per_mpkt,
                    "cpu_s_per_mpkt": med["cpu_s"] * per_mpkt,
                    "capture_machine_s_per_mpkt": (med["capture_machine_s"] - base) * per_mpkt,
                    "packet_machine_s_per_mpkt": statistics.median(per_packet_machine) * per_mpkt,
                    "machine_s_per_mpkt": (med["machine_s"] - base) * per_mpkt,
                    "drops_per_mpkt": med["drops"] * per_mpkt,
                    "drops_by_point_max": {role: max(r["drops_by_point"].get(role, 0) for r in rs)
                                           for role in POINT_ROLES},
                    "captured": med["captured"],
                    "stored": med["stored"],
                    "spooled_left_max": max(r.get("spooled", 0) for r in rs),
                    "after_wall_s": med["after_wall_s"],
                    "send_pps": med["send_pps"],
                    "runs": rs,
                }
            t = row["tcpdump"]
            for label in builds:
                h = row[label]
                h["ratios"] = {
                    "capture_cpu": ratio(h["capture_cpu_s_per_mpkt"], t["capture_cpu_s_per_mpkt"]),
                    "packet_cpu": ratio(h["packet_cpu_s_per_mpkt"], t["packet_cpu_s_per_mpkt"]),
                    "capture_machine": ratio(h["capture_machine_s_per_mpkt"], t["capture_machine_s_per_mpkt"]),
                    "packet_machine": ratio(h["packet_machine_s_per_mpkt"], t["packet_machine_s_per_mpkt"]),
                }
                # "No drops wherever tcpdump has none": per point, over every round.
                h["drops_where_tcpdump_had_none"] = sum(
                    h["drops_by_point_max"][role] for role in POINT_ROLES if t["drops_by_point_max"][role] == 0)
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
