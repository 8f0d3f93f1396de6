#!/usr/bin/env python3
"""End-to-end test of loss localisation: a FORWARD drop in the host.

In the lab's host namespace `iptables -I FORWARD -p udp --dport 9999 -j DROP`; c1 sends exactly
N=20 UDP datagrams (distinct payloads) to 198.51.100.10:9999 and pings the server, captured with
`hoptrace trace --netns c1 --host-netns host`. The UDP flow must be reported lost after docker0,
expected at the uplink eth0, N times, which is also the DROP rule's packet counter (`iptables -L
FORWARD -v -x -n`); the ping's flow must show no loss.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import run_lab_test, Checks, expect, forward_drops, report_json, run, short  # noqa: E402

N = 20
DPORT = 9999
SPORT = 40999
PING_COUNT = 5
PING_IDENT = 4343

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
for i in range(int(sys.argv[4])):
    s.sendto(f"hoptrace drop test datagram {i:02d}\\n".encode(), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.02)
"""


def main() -> int:
    return run_lab_test("hard-drop", "UDP dropped in FORWARD", run_drop)


def run_drop(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1, server = lab.ns["c1"], lab.ip["server"]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]
    lab.run("host", "iptables", "-I", "FORWARD", "-p", "udp", "--dport", DPORT, "-j", "DROP")
    before = forward_drops(lab, DPORT)
    db = tmp / "drop.db"
    ping_out = tmp / "ping.out"
    traffic = " && ".join([
        shlex.join(["ip", "netns", "exec", c1, sys.executable, "-c", SENDER, server, str(DPORT), str(SPORT), str(N)]),
        shlex.join(["ip", "netns", "exec", c1, "ping", "-n", "-c", str(PING_COUNT), "-i", "0.2", "-e",
                    str(PING_IDENT), "-W", "2", server]) + f" > {shlex.quote(str(ping_out))}",
    ])
    lab.flush_conntrack()
    r = run(hoptrace, "trace", "--netns", c1, "--host-netns", lab.ns["host"], "--db", db, "--", "sh", "-c", traffic,
            timeout=120)
    dropped = forward_drops(lab, DPORT) - before
    if checks("hoptrace trace around the UDP datagrams and the ping exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return
    checks("the DROP rule counted N packets, the ping went through", lambda: (
        expect(dropped == N, f"iptables counter {dropped}, sent {N}"),
        expect(f"{PING_COUNT} packets transmitted, {PING_COUNT} received" in ping_out.read_text(),
               short(ping_out.read_text())))
        and None or f"DROP counter {dropped}, {PING_COUNT}/{PING_COUNT} pings answered")

    report = report_json(hoptrace, db)
    udp = [f for f in report["flows"] if f["proto"] == "udp" and f["original"]["dport"] == DPORT]
    icmp = [f for f in report["flows"] if f["proto"] == "icmp" and f["original"].get("id") == PING_IDENT]
    if checks("the UDP flow and the ping's flow are in the report", lambda: expect(
            len(udp) == 1 and len(icmp) == 1,
            f"udp {len(udp)}, icmp {len(icmp)}: {[(f['proto'], f['original']) for f in report['flows']]}")
            or f"udp flow {udp[0]['id']}, icmp flow {icmp[0]['id']}") is None:
        return
    flow = udp[0]

    def udp_lost() -> str:
        want = [{"after": bridge, "expected": uplink, "direction": "forward", "count": N}]
        got = [{k: x[k] for k in ("after", "expected", "direction", "count")} for x in flow["lost"]]
        expect(got == want, f"lost {got}, want {want}; path {flow.get('path')}, "
               f"{flow['forward_journeys']} forward journeys")
        expect(flow["forward_journeys"] == N, f"{flow['forward_journeys']} forward journeys, sent {N}")
        return f"lost after {bridge}, expected at {uplink}: {N} = sent = iptables counter {dropped}"
    checks("UDP lost after docker0, expected at eth0, count N = the DROP rule's counter", udp_lost)

    def others_clean() -> str:
        bad = [(f["id"], f["proto"], f["original"], f["lost"]) for f in report["flows"] if f is not flow and f["lost"]]
        expect(not bad, f"other flows with losses: {bad}")
        expect(icmp[0]["forward_journeys"] == PING_COUNT and icmp[0]["reply_journeys"] == PING_COUNT,
               f"ping journeys {icmp[0]['forward_journeys']}/{icmp[0]['reply_journeys']}")
        return f"{len(report['flows']) - 1} other flow(s), none lost; ping {PING_COUNT}+{PING_COUNT} journeys"
    checks("no other flow (the ping) shows losses", others_clean)


if __name__ == "__main__":
    sys.exit(main())
