#!/usr/bin/env python3
"""End-to-end test of the traceroute table: ICMP errors tied to their probes, per TTL.

In a fresh lab, `hoptrace trace --netns c1 --host-netns host` runs three traceroutes from c1 to the
server one after the other — UDP (the default), ICMP echo (`-I`) and TCP SYN (`-T`), each with
three probes per TTL sent one at a time (`-N 1`) — with ICMP rate limiting off in the lab's
namespaces so that every probe that should be answered is. The evidence is traceroute's own
output: for each TTL the address that answered and how many of the three probes it answered.

The report must have one traceroute per method whose rows are traceroute's rows: TTL 1 answered by
the host (172.17.0.1, time exceeded) after the probe passed c1 eth0 → veth → docker0; TTL 2 by the
router (192.168.43.1) after all four points; TTL 3 reached the server. Each row's probes carry the
way the answer came back; the router's errors arrive at the uplink quoting the masqueraded probe
(192.168.43.116) and leave c1's eth0 quoting the original one (172.17.0.2), same ports. The round
trip hoptrace measured at c1's eth0 is positive, shrinks at each point further out, and is never
more than traceroute's own (user-space) time. For the ICMP method, whose probes are one flow, the
TTL 1 probes are reported as expired after docker0, and nothing as dropped.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import run_lab_test, Checks, expect, report_json, run, short  # noqa: E402

QUERIES = 3
METHODS = {"udp": [], "icmp": ["-I"], "tcp": ["-T"]}
# traceroute's slack: its times come from user space, around our kernel timestamps; it prints µs.
SLACK_NS = 20_000


def main() -> int:
    return run_lab_test("hard-traceroute", "traceroute from a container", run_traceroute)


def parse_traceroute(text: str) -> dict[int, list[tuple[str, float]]]:
    """TTL -> [(address, ms)] per answered probe, from `traceroute -n` output."""
    rows: dict[int, list[tuple[str, float]]] = {}
    for line in text.splitlines()[1:]:
        m = re.match(r"\s*(\d+)\s+(.*)", line)
        if not m:
            continue
        ttl, rest = int(m.group(1)), m.group(2)
        answers, addr = [], None
        for tok in rest.split():
            if re.fullmatch(r"[0-9a-f.:]+", tok) and "." in tok and not re.fullmatch(r"\d+\.\d+", tok):
                addr = tok
            elif re.fullmatch(r"\d+\.\d+", tok):
                answers.append((addr, float(tok)))
        rows[ttl] = answers
    return rows


def run_traceroute(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1, server = lab.ns["c1"], lab.ip["server"]
    for ns in ("host", "router", "server"):
        lab.run(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
    outs = {m: tmp / f"traceroute-{m}.out" for m in METHODS}
    traffic = " && ".join(
        shlex.join(["ip", "netns", "exec", c1, "traceroute", "-n", *flags, "-N", "1", "-q", str(QUERIES), "-w", "2",
                    server]) + f" > {shlex.quote(str(outs[m]))}"
        for m, flags in METHODS.items())
    db = tmp / "traceroute.db"
    lab.flush_conntrack()
    r = run(hoptrace, "trace", "--netns", c1, "--host-netns", lab.ns["host"], "--db", db, "--", "sh", "-c", traffic,
            timeout=120)
    if checks("hoptrace trace around three traceroutes exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return
    seen = {m: parse_traceroute(outs[m].read_text()) for m in METHODS}
    want_hops = {1: lab.ip["bridge"], 2: lab.ip["router"], 3: server}

    def traceroute_itself() -> str:
        for m, rows in seen.items():
            got = {ttl: {a for a, _ in answers} for ttl, answers in rows.items()}
            expect(got == {t: {a} for t, a in want_hops.items()}, f"{m}: traceroute printed {got}")
            expect(all(len(a) == QUERIES for a in rows.values()), f"{m}: unanswered probes: {rows}")
        return "each method: " + ", ".join(f"ttl {t} {a}" for t, a in want_hops.items()) + f", {QUERIES}/{QUERIES}"
    if checks("traceroute itself saw host, router, server, every probe answered", traceroute_itself) is None:
        return

    report = report_json(hoptrace, db)
    roles = {p["role"]: p["name"] for p in report["points"]}
    c_eth0, veth, bridge, uplink = roles["container"], roles["veth"], roles["bridge"], roles["uplink"]
    traces = {t["proto"]: t for t in report.get("traceroutes", [])}

    def one_per_method() -> str:
        expect(sorted(traces) == sorted(METHODS), f"traceroutes for {sorted(traces)}, want {sorted(METHODS)}")
        for m, t in traces.items():
            expect(t["src"] == lab.ip["c1"] and t["dst"] == server, f"{m}: {t['src']} → {t['dst']}")
            expect(t["reached_destination"] is True, f"{m}: destination not reached")
        return f"{len(traces)} traceroutes {lab.ip['c1']} → {server}"
    if checks("one traceroute per method, from c1 to the server", one_per_method) is None:
        return

    for m in METHODS:
        t = traces[m]

        def rows_match(m=m, t=t) -> str:
            got = {h["ttl"]: (h["reporters"], h["answered"], len(h["probes"])) for h in t["hops"]}
            want = {ttl: ([a for a, _ in answers][:1], len(answers), QUERIES) for ttl, answers in seen[m].items()}
            expect(got == want, f"rows {got}, traceroute printed {want}")
            expect([h["reached_destination"] for h in t["hops"]] == [False, False, True],
                   f"reached {[h['reached_destination'] for h in t['hops']]}")
            return ", ".join(f"ttl {ttl} {r[0][0]} {r[1]}/{r[2]}" for ttl, r in sorted(got.items()))
        checks(f"{m}: one row per TTL with traceroute's reporter and answers", rows_match)

        def paths(m=m, t=t) -> str:
            row = {h["ttl"]: h for h in t["hops"]}
            want = {1: [c_eth0, veth, bridge], 2: [c_eth0, veth, bridge, uplink], 3: [c_eth0, veth, bridge, uplink]}
            for ttl, path in want.items():
                for p in row[ttl]["probes"]:
                    expect(p["path"] == path, f"ttl {ttl} probe path {p['path']}, want {path}")
                    back = p["answer"]["path"]
                    expect(back == list(reversed(path)), f"ttl {ttl} answer path {back}, want reversed {path}")
            return f"ttl 1 expired after {bridge}; ttl 2, 3 crossed all four points; answers came back the same way"
        checks(f"{m}: each probe's path through our points and its answer's way back", paths)

        def rtts(m=m, t=t) -> str:
            worst = 0
            for h in t["hops"]:
                mine = []
                for p in h["probes"]:
                    at = {x["point"]: x["ns"] for x in p["rtt"]}
                    order = [x for x in (c_eth0, veth, bridge, uplink) if x in at]
                    values = [at[x] for x in order]
                    expect(all(v > 0 for v in values) and values == sorted(values, reverse=True),
                           f"ttl {h['ttl']}: round trips {at} not positive and shrinking outwards")
                    mine.append(at[c_eth0])
                theirs = sorted(int(ms * 1e6) for _, ms in seen[m][h["ttl"]])
                for ours, tr in zip(sorted(mine), theirs):
                    expect(ours <= tr + SLACK_NS, f"ttl {h['ttl']}: {ours} ns at {c_eth0} > traceroute's {tr} ns")
                    worst = max(worst, ours)
            return f"positive, shrinking outwards, ≤ traceroute's times (largest {worst / 1e3:.1f} µs at {c_eth0})"
        checks(f"{m}: round trip per point, within traceroute's own measurement", rtts)

    def de_nat() -> str:
        row = {h["ttl"]: h for h in traces["udp"]["hops"]}
        for p in row[2]["probes"]:
            q = p["answer"]["quoted"]
            expect([x["at"] for x in q] == [uplink, c_eth0], f"quoted at {[x['at'] for x in q]}")
            expect(q[0]["src"] == lab.ip["host"] and q[1]["src"] == lab.ip["c1"],
                   f"quoted sources {q[0]['src']} at {uplink}, {q[1]['src']} at {c_eth0}")
            expect(q[0]["sport"] == q[1]["sport"] and q[0]["dport"] == q[1]["dport"], f"ports changed: {q}")
            flow = next(f for f in report["flows"] if f["id"] == p["flow"])
            expect(q[1]["dport"] == flow["original"]["dport"], f"quote dport {q[1]['dport']}, flow {flow['original']}")
        return f"quoted {lab.ip['host']} at {uplink}, {lab.ip['c1']} at {c_eth0}"
    checks("the router's errors carry the masqueraded probe in, the original one out", de_nat)

    def icmp_losses() -> str:
        probe_flows = {p["flow"] for h in traces["icmp"]["hops"] for p in h["probes"]}
        expect(len(probe_flows) == 1, f"icmp probes in flows {probe_flows}")
        flow = next(f for f in report["flows"] if f["id"] in probe_flows)
        got = [(x["cause"], x["after"], x["count"]) for x in flow["lost"]]
        expect(got == [("expired", bridge, QUERIES)], f"icmp flow losses {got}")
        dropped = [(f["id"], x) for f in report["flows"] for x in f["lost"] if x["cause"] == "dropped"]
        expect(not dropped, f"dropped: {dropped}")
        return f"{QUERIES} expired after {bridge} (ttl 1); nothing dropped anywhere"
    checks("the ICMP probes that expired in the host are 'expired', not lost", icmp_losses)


if __name__ == "__main__":
    sys.exit(main())
