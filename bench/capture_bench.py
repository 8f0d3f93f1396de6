#!/usr/bin/env python3
"""Live capture benchmark: hoptrace capturing the four points of a container's path, against four tcpdump
processes writing pcap files on the same points, in the same run on the same machine.

A UDP flood goes from container c1 through its veth, docker0 and the uplink (masqueraded) to the lab's
server, which drops it in its INPUT chain (so no replies or ICMP errors double the load). For each tool and
each rate we report, per million packets sent: kernel drops (pcap_stats, summed over the four points) and
CPU seconds (user + system of the capturing processes, from wait4's rusage). Rounds alternate between the
tools so that machine noise hits both alike; medians are reported with the ratio hoptrace / tcpdump.

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


def run_tcpdump(lab: lablib.Lab, workdir: Path, packets: int, rate: float) -> dict:
    points = [("c1", lab.ifname["container"]), ("host", lab.veth["c1"]), ("host", lab.ifname["bridge"]),
              ("host", lab.ifname["uplink"])]
    before = children_cpu()
    busy = machine_busy()
    procs = [start_tcpdump(lab.nsname(ns), iface, workdir / f"td-{i}.pcap") for i, (ns, iface) in enumerate(points)]
    pps, sender_cpu = flood(lab, packets, rate)
    time.sleep(0.3)
    drops = captured = 0
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=120)
        for m in re.finditer(r"(\d+) packets? (captured|dropped by kernel)", err):
            if m.group(2) == "captured":
                captured += int(m.group(1))
            else:
                drops += int(m.group(1))
    machine = machine_busy() - busy
    for i in range(len(procs)):
        (workdir / f"td-{i}.pcap").unlink(missing_ok=True)
    cpu = children_cpu() - before - sender_cpu
    return {"cpu_s": cpu, "machine_s": machine, "drops": drops, "captured": captured, "send_pps": pps}


def run_hoptrace(lab: lablib.Lab, hoptrace: Path, workdir: Path, packets: int, rate: float) -> dict:
    db = workdir / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    before = children_cpu()
    busy = machine_busy()
    proc = subprocess.Popen([str(hoptrace), "capture", "--db", str(db), "--netns", lab.ns["c1"], "--host-netns",
                             lab.ns["host"], "--quiet", "--no-correlate", "--buffer-mb", "64"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # hoptrace prints nothing when quiet; wait until all four points hold a packet socket (a probe packet
    # would disturb the count, so poll /proc for the process's packet sockets instead).
    deadline = time.time() + 10
    while time.time() < deadline:
        socks = sum(1 for fd in Path(f"/proc/{proc.pid}/fd").iterdir() if "socket" in os.readlink(fd)) \
            if Path(f"/proc/{proc.pid}/fd").exists() else 0
        if socks >= 4:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    pps, sender_cpu = flood(lab, packets, rate)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    machine = machine_busy() - busy
    cpu = children_cpu() - before - sender_cpu
    if proc.returncode != 0:
        raise RuntimeError(f"hoptrace capture failed: {err.strip()}")
    con = sqlite3.connect(db)
    drops, captured = con.execute("SELECT sum(kernel_drops), sum(packets) FROM points").fetchone()
    con.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return {"cpu_s": cpu, "machine_s": machine, "drops": drops or 0, "captured": captured or 0, "send_pps": pps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hoptrace", default=os.environ.get("HOPTRACE_BIN", "build/cli/hoptrace"))
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rates", default="20000,0", help="packets/s, comma separated; 0 = as fast as possible")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("capture_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    hoptrace = Path(args.hoptrace).resolve()
    results = []
    with lablib.Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        lab.run("server", "iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT), "-j", "DROP")
        workdir = Path(tmp)
        for rate in [float(r) for r in args.rates.split(",")]:
            runs = {"tcpdump": [], "hoptrace": []}
            baseline = []
            for _ in range(args.rounds):
                baseline.append(run_baseline(lab, args.packets, rate))
                runs["tcpdump"].append(run_tcpdump(lab, workdir, args.packets, rate))
                runs["hoptrace"].append(run_hoptrace(lab, hoptrace, workdir, args.packets, rate))
            base = statistics.median(r["machine_s"] for r in baseline)
            row = {"rate_pps": rate, "packets": args.packets}
            for tool, rs in runs.items():
                row[tool] = {
                    "cpu_s_per_mpkt": statistics.median(r["cpu_s"] for r in rs) / args.packets * 1e6,
                    "machine_s_per_mpkt": (statistics.median(r["machine_s"] for r in rs) - base) / args.packets * 1e6,
                    "drops_per_mpkt": statistics.median(r["drops"] for r in rs) / args.packets * 1e6,
                    "captured": statistics.median(r["captured"] for r in rs),
                    "send_pps": statistics.median(r["send_pps"] for r in rs),
                }
            t, h = row["tcpdump"], row["hoptrace"]
            row["cpu_ratio"] = h["cpu_s_per_mpkt"] / t["cpu_s_per_mpkt"] if t["cpu_s_per_mpkt"] else None
            row["machine_ratio"] = (h["machine_s_per_mpkt"] / t["machine_s_per_mpkt"]
                                    if t["machine_s_per_mpkt"] > 0 else None)
            results.append(row)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'rate':>10} {'tool':>9} {'CPU s/Mpkt':>11} {'machine s/Mpkt':>15} {'drops/Mpkt':>11} {'captured':>10} "
          f"{'sent pps':>9}")
    for row in results:
        rate = "max" if row["rate_pps"] == 0 else f"{row['rate_pps']:.0f}/s"
        for tool in ("tcpdump", "hoptrace"):
            r = row[tool]
            print(f"{rate:>10} {tool:>9} {r['cpu_s_per_mpkt']:>11.2f} {r['machine_s_per_mpkt']:>15.2f} "
                  f"{r['drops_per_mpkt']:>11.0f} "
                  f"{r['captured']:>10.0f} {r['send_pps']:>9.0f}")
        for label, ratio in (("process CPU", row["cpu_ratio"]), ("machine CPU over the flood alone", row["machine_ratio"])):
            text = f"{ratio:.2f}" if ratio is not None else "n/a"
            print(f"{'':>10} {label} per packet, hoptrace / tcpdump (4 processes): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
