#!/usr/bin/env python3
"""End-to-end test of `--trace-rules`: which iptables rule dropped or rewrote a traced packet.

One lab (published port 8080:80, so Docker's DNAT rules are there too), seven cases one after the other (in the
order 1, 6, 2, 3, 4, 7, 5), each with its own database. The expectations never come from hoptrace: the test runs
its own `nft -a monitor trace` in the lab's host namespace around every run (the kernel sends each trace event
to every listener; the monitor's lines name family, table, chain, the rule's handle and the verdict), reads the
rule counters (`iptables -L CHAIN -v -x -n`), and turns the monitor's handle into the rule's `iptables -S CHAIN`
line (the `nft -a list chain` order of handles is `iptables -S`'s order of rules).

1. FORWARD drop: `iptables -I FORWARD -p udp --dport 9999 -j DROP`, c1 sends 10 datagrams. The UDP flow's
   lost entry has `rules` == [filter FORWARD, that rule's `iptables -S` text, verdict drop, packets = the rule
   counter's delta = the monitor's drop verdicts of that handle]; the text report says `dropped by filter
   FORWARD <rule>`. In every case with --trace-rules, every rule/policy verdict the monitor saw (outside hoptrace's
   own table) is a `rule_traces` row, as often, and top-level `rule_traces.packets` = the monitor's distinct trace
   ids. (The monitor's lines are not the kernel's events one for one: an event that carries only the packet's
   headers prints as a bare `packet:` line, so the test compares verdicts, not `events`.)
6. The same traffic without --trace-rules: no `rule_traces` key, no `rules` in the lost entries, no table;
   the lost entry's `probable_rules` names the drop rule whose counter moved, with the counter's delta
   during the run, no trace event at all.
2. Docker style: chain DOCKER-USER jumped to from FORWARD, `-A DOCKER-USER -d SERVER -p icmp -j DROP`, 3 pings:
   the rules name chain DOCKER-USER with that rule, packets 3 (= counter = monitor), not FORWARD's jump.
3. MASQUERADE: a ping that passes; the src rewrite's `rule` is nat POSTROUTING with the rule the monitor saw
   for the flow's first echo request (the lab's `-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`); a rewrite's
   `rule` is compared on the contract's keys (family, table, chain, rule), more keys may appear; the reply's
   rewrite (conntrack's) names no rule.
4. DNAT: a client in the server namespace connects to the host's published port; the DNAT rule's counter took
   the SYN (+1), the monitor must have seen the SYN go nat PREROUTING → jump DOCKER → that rule (so hoptrace traced
   the connection's first packet), and the dst and dport rewrites' `rule` is nat DOCKER `! -i docker0 -p tcp -m
   tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80`, the text report's `by nat DOCKER …`.
7. `iptables -P FORWARD DROP` (for the case only), 10 datagrams: the rules entry is the policy (`"rule": ""`,
   `"policy": true`, verdict drop, packets = the policy counter of `iptables -L FORWARD -v -x` = the monitor's
   `filter FORWARD policy drop` events).
5. No table left behind: while a run traces, `nft list tables` shows `table inet hoptrace_<its pid>` (and the
   monitor saw that table set nftrace); after every normal run none; after SIGINT twice none; after SIGKILL it
   IS there, and the next `capture --trace-rules --duration 1` removes it, but not the table of a capture that
   is still running.

`--evidence-only` runs the lab, the traffic and the evidence without hoptrace (the test's own table sets
nftrace): a check of the test itself.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces (or nft) are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (LABLIB_PY, PACED_UDP_SENDER, Background, Checks, expect, guarded, netns_left, query, report_json, run,  # noqa: E402
                         short, workdir)

EVIDENCE_ONLY = "--evidence-only" in sys.argv[1:]

PUBLISHED, INNER = 8080, 80
DPORT, SPORT, N = 9999, 40999, 10
POLICY_DPORT = 9998
PING2_IDENT, PING2_COUNT = 4611, 3
PING3_IDENT, PING3_COUNT = 4612, 3
NBYTES = 20000


NFNLGRP_NFTRACE_BIT = 1 << (9 - 1)  # netfilter's multicast group 9 in /proc/net/netlink's Groups bitmask
TABLE_RE = re.compile(r"^table (\S+) (hoptrace_(\d+))\s*$")


# --------------------------------------------------------------------------------------------
# Evidence: nft monitor trace, nft/iptables listings, rule counters


class Event:
    """One line of `nft -a monitor trace` other than a `packet:` line: one trace event."""

    RULE_RE = re.compile(r"^rule (?P<rule>.*?)(?: # handle (?P<handle>\d+))? \(verdict (?P<verdict>\S+)"
                         r"(?: (?P<target>[^)]+))?\)\s*$")

    def __init__(self, tid: str, family: str, table: str, chain: str, rest: str, pkt: str):
        self.id, self.family, self.table, self.chain, self.pkt = tid, family, table, chain, pkt
        self.kind = rest.split()[0] if rest.split() else ""
        self.rule = self.handle = self.verdict = self.target = None
        self.raw = rest
        m = self.RULE_RE.match(rest)
        if self.kind == "rule" and m:
            self.rule, self.verdict, self.target = m.group("rule"), m.group("verdict"), m.group("target")
            self.handle = int(m.group("handle")) if m.group("handle") else None
        elif self.kind in ("policy", "return") and len(rest.split()) > 1:
            self.verdict = rest.split()[1]

    def __repr__(self) -> str:
        return f"{self.id} {self.family} {self.table} {self.chain} {self.raw}"


class NftMonitor:
    """`nft -a monitor trace` in a namespace, started before the traffic, stopped after it. The constructor
    returns once nft has joined the trace group (a NETLINK_NETFILTER socket with group 9 in
    /proc/net/netlink: nothing sent later is missed)."""

    LINE_RE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*)$")

    def __init__(self, lab: lablib.Lab, path: Path, ns: str = "host"):
        self.lab, self.ns, self.path = lab, ns, path
        before = self._listeners()
        self._out = open(path, "w")
        self.proc = lab.popen(ns, "nft", "-a", "monitor", "trace", stdin=subprocess.DEVNULL, stdout=self._out,
                              stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while self._listeners() <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nft monitor trace did not start: exit {self.proc.returncode}: "
                                   f"{short(path.read_text())}")
            time.sleep(0.02)
        self.events: list[Event] = []
        self.lines: list[str] = []

    def _listeners(self) -> int:
        out = self.lab.run(self.ns, "cat", "/proc/net/netlink").stdout.splitlines()[1:]
        n = 0
        for line in out:
            f = line.split()
            if len(f) > 3 and f[1] == "12" and int(f[3], 16) & NFNLGRP_NFTRACE_BIT:
                n += 1
        return n

    def stop(self, settle: float = 0.3) -> "NftMonitor":
        if self.proc.poll() is None:
            time.sleep(settle)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self.lines = self.path.read_text(errors="replace").splitlines()
        self.events = []
        self.packet_lines: list[tuple[str, str, str, str, str]] = []
        last_pkt: dict[str, str] = {}
        for line in self.lines:
            m = self.LINE_RE.match(line)
            if not m:
                continue
            # The kernel dumps the packet's headers with a base chain's first event; the chains it jumps to share
            # them (and the same trace id).
            key = m["id"]
            rest = m["rest"]
            if rest.startswith("packet:"):
                last_pkt[key] = rest
                self.packet_lines.append((m["id"], m["family"], m["table"], m["chain"], rest))
                continue
            self.events.append(Event(m["id"], m["family"], m["table"], m["chain"], rest, last_pkt.get(key, "")))
        return self

    def ids(self) -> set[str]:
        return {e.id for e in self.events}

    def drops(self, family: str, table: str, chain: str, handle: int | None = None) -> list[Event]:
        return [e for e in self.events if (e.family, e.table, e.chain) == (family, table, chain)
                and e.kind == "rule" and e.verdict == "drop" and (handle is None or e.handle == handle)]

    def packets(self, host_own: tuple[str, ...] = ()) -> set[tuple[int, int]]:
        """The packets the kernel traced, told apart by (IPv4 id, IP length), which no hook or NAT changes (trace ids
        do not tell packets apart: the kernel derives them from the skb's address, flow hash and input interface,
        so consecutive packets of a flow often share one, and one packet gets another id in each hook). Packets sent
        from an address in `host_own` (the host's own: IGMP reports from the bridge) are left out."""
        out = set()
        for *_, rest in self.packet_lines:
            i, n = re.search(r" ip id (\d+) ", rest), re.search(r" ip length (\d+) ", rest)
            src = re.search(r" ip saddr (\S+) ", rest)
            if src and src.group(1) in host_own:
                continue
            if i and n:
                out.add((int(i.group(1)), int(n.group(1))))
        return out

    def verdicts(self) -> dict[tuple, int]:
        """{(family, table, chain, rule|policy|return, handle, verdict): events} outside hoptrace's own table."""
        out: dict[tuple, int] = {}
        for e in self.events:
            if e.kind in ("rule", "policy", "return") and not e.table.startswith("hoptrace_"):
                k = (e.family, e.table, e.chain, e.kind, e.handle, e.verdict)
                out[k] = out.get(k, 0) + 1
        return out

    def tables(self) -> set[tuple[str, str]]:
        return {(e.family, e.table) for e in self.events}


def iptables_rule(lab: lablib.Lab, table: str, chain: str, handle: int) -> str:
    """The `iptables -t TABLE -S CHAIN` line of the rule with this nft handle, without "-A CHAIN ": iptables-nft
    lists a chain's rules in the kernel's order, which is the order of handles in `nft -a list chain`."""
    listing = lab.run("host", "nft", "-a", "list", "chain", "ip", table, chain).stdout.splitlines()
    handles = []
    for line in listing:
        s = line.strip()
        m = re.search(r" # handle (\d+)$", s)
        if m and not s.startswith(("chain ", "table ")):
            handles.append(int(m.group(1)))
    rules = [x for x in lab.run("host", "iptables", "-t", table, "-S", chain).stdout.splitlines()
             if x.startswith(f"-A {chain} ")]
    expect(len(handles) == len(rules), f"{len(handles)} rules in nft -a list chain ip {table} {chain}, "
           f"{len(rules)} in iptables -S: {short(' | '.join(listing))}")
    expect(handle in handles, f"no handle {handle} in ip {table} {chain}: {short(' | '.join(listing))}")
    return rules[handles.index(handle)][len(f"-A {chain} "):]


def rule_counter(lab: lablib.Lab, chain: str, pattern: str, table: str = "filter") -> int:
    """Packet counter of the rule of `chain` whose `-L -v -x -n` line contains `pattern` (exactly one)."""
    out = lab.run("host", "iptables", "-t", table, "-L", chain, "-v", "-x", "-n").stdout
    hits = [line for line in out.splitlines()[2:] if pattern in line]
    expect(len(hits) == 1, f"{len(hits)} rules matching {pattern!r} in {table} {chain}: {short(out)}")
    return int(hits[0].split()[0])


def hoptrace_tables(lab: lablib.Lab) -> list[tuple[str, str, int]]:
    """(family, name, pid) of every hoptrace_<pid> table in the host namespace (`nft list tables`)."""
    return parse_tables(lab.run("host", "nft", "list", "tables").stdout)


def parse_tables(text: str) -> list[tuple[str, str, int]]:
    """The hoptrace_<pid> tables in `nft list tables` output, as (family, name, pid)."""
    return [(m[1], m[2], int(m[3])) for m in map(TABLE_RE.match, text.splitlines()) if m]


# --------------------------------------------------------------------------------------------
# Running hoptrace (or, with --evidence-only, the traffic under the test's own nftrace table)

OWN_TABLE = "trace_rules_evidence"  # not hoptrace_<pid>: no hoptrace run would take it for its own


class Run:
    def __init__(self, rc: int, out: str, err: str, pid: int, during: str, db: Path):
        self.rc, self.out, self.err, self.pid, self.during, self.db = rc, out, err, pid, during, db


def traced(hoptrace: Path | None, lab: lablib.Lab, tmp: Path, tag: str, traffic: list[list[str]],
           trace_rules: bool = True, timeout: float = 60) -> Run:
    """`hoptrace trace [--trace-rules] --netns c1 --host-netns host --db TMP/TAG.db -- sh -c 'TRAFFIC'`; the
    CMD first saves `nft list tables` of the host namespace (the tables while hoptrace runs)."""
    db = tmp / f"{tag}.db"
    during = tmp / f"{tag}.tables"
    list_tables = ["ip", "netns", "exec", lab.ns["host"], "nft", "list", "tables"]
    script = shlex.join(list_tables) + f" > {shlex.quote(str(during))}; " + " ; ".join(
        shlex.join(list(map(str, c))) for c in traffic) + " ; true"
    if hoptrace is None:
        if trace_rules:
            lab.run("host", "nft", "-f", "-", input=f"""
table inet {OWN_TABLE} {{
  chain pre {{ type filter hook prerouting priority -350; ip saddr 172.17.0.0/16 meta nftrace set 1;
              ip daddr {lab.ip['host']} meta nftrace set 1; }}
}}""")
        try:
            r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout)
        finally:
            if trace_rules:
                lab.run("host", "nft", "delete", "table", "inet", OWN_TABLE)
        return Run(r.returncode, r.stdout, r.stderr, 0, during.read_text(), db)
    argv = [str(hoptrace), "trace", *(["--trace-rules"] if trace_rules else []), "--netns", lab.ns["c1"],
            "--host-netns", lab.ns["host"], "--db", str(db), "--", "sh", "-c", script]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return Run(p.returncode, out, err, p.pid, during.read_text() if during.exists() else "", db)


def in_ns(lab: lablib.Lab, role: str, *argv) -> list[str]:
    return ["ip", "netns", "exec", lab.ns[role], *map(str, argv)]


def report_text(hoptrace: Path, db: Path) -> str:
    r = run(hoptrace, "report", "--db", db)
    expect(r.returncode == 0, f"hoptrace report --db {db.name} exited {r.returncode}: {short(r.stderr)}")
    return r.stdout


def check_run(checks: Checks, case: str, r: Run, lab: lablib.Lab, mon: NftMonitor, trace_rules: bool = True) -> bool:
    """The checks every traced run shares: exit 0; the table hoptrace_<pid> (inet) existed during the run and
    set nftrace (the monitor saw its chains), and is gone now."""
    ok = checks(f"{case}: hoptrace trace{' --trace-rules' if trace_rules else ''} exits 0",
                lambda: expect(r.rc == 0, f"exit {r.rc}: {short(r.err)}") or f"{len(r.out.splitlines())} report lines")
    if EVIDENCE_ONLY:
        return ok is not None
    if trace_rules and ok is not None:
        def table_during() -> str:
            got = parse_tables(r.during)
            expect(got == [("inet", f"hoptrace_{r.pid}", r.pid)], f"hoptrace tables while it ran: {got} "
                   f"(pid {r.pid}); nft list tables: {short(r.during)}")
            mine = [e for e in mon.events if (e.family, e.table) == ("inet", f"hoptrace_{r.pid}")]
            expect(mine, f"the monitor saw no event of table inet hoptrace_{r.pid}: tables {sorted(mon.tables())}")
            return f"table inet hoptrace_{r.pid} while it ran; {len(mine)} of the monitor's events are its own chains'"
        checks(f"{case}: while it ran, table inet hoptrace_<pid> was there and set nftrace", table_during)
    checks(f"{case}: no hoptrace_ table left after the run",
           lambda: expect(not hoptrace_tables(lab), f"left: {hoptrace_tables(lab)}") or "none")
    return ok is not None


def check_rule_traces(checks: Checks, case: str, report: dict, r: Run, mon: NftMonitor,
                      lab: lablib.Lab) -> None:
    """Top-level rule_traces and the rule_traces rows against the monitor: every rule/policy verdict the monitor saw
    outside hoptrace's table is a row (same family, table, chain, type, handle, verdict, as often); `packets` = the
    containers' packets the monitor saw (told apart by IPv4 id and length; the host's own left out, which hoptrace
    may leave untied); tied + untied = walks."""
    def top() -> str:
        rt = report.get("rule_traces")
        expect(isinstance(rt, dict), f"no rule_traces object: keys {sorted(report)}")
        keys = {"events", "walks", "packets", "tied", "untied", "lost_events"}
        expect(keys <= set(rt), f"rule_traces {rt}: missing {sorted(keys - set(rt))}")
        expect(rt["lost_events"] == 0, f"rule_traces {rt}")
        expect(rt["tied"] + rt["untied"] == rt["walks"] and rt["tied"] > 0, f"rule_traces {rt}")
        rows = query(r.db, "SELECT family, tbl, chain, type, handle, verdict FROM rule_traces")
        expect(len(rows) == rt["events"], f"{len(rows)} rule_traces rows, report {rt}")
        stored: dict[tuple, int] = {}
        for fam, tbl, chain, typ, handle, verdict in rows:
            if typ in ("rule", "policy", "return"):
                k = (fam, tbl, chain, typ, int(handle) if handle not in (None, "") else None, verdict)
                stored[k] = stored.get(k, 0) + 1
        seen = mon.verdicts()
        diff = {k: (stored.get(k, 0), seen.get(k, 0)) for k in set(stored) | set(seen) if stored.get(k) != seen.get(k)}
        expect(not diff, f"(stored, nft monitor) differ: {sorted(diff.items(), key=str)}")
        return (f"{rt['events']} events, {sum(seen.values())} of them verdicts, each as nft monitor saw it "
                f"({len(seen)} distinct rule/policy verdicts)")
    checks(f"{case}: rule_traces: every verdict nft monitor saw is stored, as often", top)

    def count() -> str:
        rt = report.get("rule_traces") or {}
        traced = mon.packets(host_own=(lab.ip["bridge"],))
        expect(rt.get("packets") == len(traced),
               f"rule_traces.packets {rt.get('packets')}, nft monitor saw {len(traced)} packets (by IPv4 id and "
               f"length, the host's own left out)")
        return (f"{len(traced)} packets = what nft monitor saw, told apart by IPv4 id and length "
                f"({rt.get('walks')} walks through a hook, {rt.get('tied')} tied)")
    checks(f"{case}: rule_traces.packets = the containers' packets nft monitor saw", count)


def rule_keys(rule: object) -> object:
    """A rewrite's "rule" cut to the contract's keys (family, table, chain, rule); others may appear."""
    if not isinstance(rule, dict):
        return rule
    return {k: rule.get(k) for k in ("family", "table", "chain", "rule")}


def one_flow(report: dict, pred, what: str) -> dict:
    flows = [f for f in report.get("flows", []) if pred(f)]
    expect(len(flows) == 1, f"{len(flows)} flows {what}: {[(f['proto'], f['original']) for f in report.get('flows', [])]}")
    return flows[0]


# --------------------------------------------------------------------------------------------
# The cases


def lost_rule_case(checks: Checks, hoptrace: Path | None, lab: lablib.Lab, tmp: Path, case: str, tag: str,
                   traffic: list[list[str]], chain: str, counter_pattern: str, sent: int, flow_pred, what: str,
                   trace_rules: bool = True) -> None:
    """A drop by one rule of `chain` (filter): counter delta = monitor's drop verdicts = sent = the lost
    entry's rules[0].packets; the rule text is the monitor's handle's `iptables -S` line."""
    before = rule_counter(lab, chain, counter_pattern)
    lab.flush_conntrack()
    mon = NftMonitor(lab, tmp / f"{tag}.monitor")
    try:
        r = traced(hoptrace, lab, tmp, tag, traffic, trace_rules)
    finally:
        mon.stop()
    dropped = rule_counter(lab, chain, counter_pattern) - before
    ran = check_run(checks, case, r, lab, mon, trace_rules)
    if not ran:
        return

    if not trace_rules:
        checks(f"{case}: no table while it ran, no trace event at all (nothing set nftrace)",
               lambda: (expect(not parse_tables(r.during), f"tables while it ran: {short(r.during)}"),
                        expect(not mon.events, f"{len(mon.events)} events: {short(repr(mon.events[:5]))}")) and None
               or f"counter +{dropped}, no hoptrace_ table, nft monitor silent")
        if EVIDENCE_ONLY:
            return
        report = report_json(hoptrace, r.db)
        flow = one_flow(report, flow_pred, what)

        def plain() -> str:
            expect("rule_traces" not in report, f"rule_traces {report.get('rule_traces')}")
            expect(flow["lost"], f"the flow shows no loss: {flow['lost']}")
            bad = [x for f in report["flows"] for x in f["lost"] if "rules" in x]
            expect(not bad, f"lost entries with rules: {bad}")
            bad_rw = [x for f in report["flows"] for x in f["rewrites"] if "rule" in x]
            expect(not bad_rw, f"rewrites with rule: {bad_rw}")
            return f"no rule_traces key; lost {[(x['after'], x['count']) for x in flow['lost']]} without rules"
        checks(f"{case}: the JSON has no rule_traces, the lost entries no rules", plain)

        def probable() -> str:
            # The inference from the rules' counters: the drop rule whose counter moved, by `iptables -S`'s text.
            listing = lab.run("host", "iptables", "-S", chain).stdout.splitlines()
            texts = [x[len(f"-A {chain} "):] for x in listing if x.startswith(f"-A {chain} ") and counter_pattern.split(":")[-1] in x]
            expect(len(texts) == 1, f"iptables -S {chain}: {listing}")
            got = flow["lost"][0].get("probable_rules", [])
            mine = [x for x in got if x.get("chain") == chain and x.get("rule") == texts[0]]
            expect(len(mine) == 1 and mine[0].get("counter") == dropped and mine[0].get("table") == "filter",
                   f"probable_rules {got}, want filter {chain} {texts[0]!r} with counter {dropped}")
            t = report_text(hoptrace, r.db)
            expect(f"probably dropped by filter {chain} {texts[0]}" in t, f"the text report: {short(t, 1500)}")
            return f"probably dropped by filter {chain} {texts[0]} (its counter moved by {dropped} = iptables')"
        checks(f"{case}: without traces, the drop rule whose counter moved is named as an inference (= iptables' "
               "counter)", probable)
        return

    drop_events = mon.drops("ip", "filter", chain)
    handles = sorted({e.handle for e in drop_events})

    def evidence() -> str:
        expect(dropped == sent, f"rule counter +{dropped}, sent {sent}")
        expect(len(handles) == 1 and handles[0] is not None, f"drop verdicts in filter {chain} by handles {handles}")
        expect(len(drop_events) == dropped, f"nft monitor: {len(drop_events)} drop verdicts in filter {chain}, "
               f"rule counter +{dropped}")
        other = [e for e in mon.events if e.verdict == "drop" and e not in drop_events]
        expect(not other, f"other drops: {other}")
        return f"rule counter +{dropped} = sent = nft monitor's drop verdicts of handle {handles[0]} in filter {chain}"
    if checks(f"{case}: evidence: counter delta = sent = nft monitor's drop verdicts", evidence) is None:
        return
    rule_text = iptables_rule(lab, "filter", chain, handles[0])
    if EVIDENCE_ONLY:
        print(f"  ({case}: iptables -S {chain}: {rule_text})", flush=True)
        return

    report = report_json(hoptrace, r.db)
    check_rule_traces(checks, case, report, r, mon, lab)
    flow = one_flow(report, flow_pred, what)

    def lost_rules() -> str:
        want = [{"netns": lab.ns["host"], "family": "ip", "table": "filter", "chain": chain, "rule": rule_text,
                 "verdict": "drop", "packets": dropped}]
        lost = flow.get("lost", [])
        expect(len(lost) == 1, f"lost {lost}")
        got = lost[0].get("rules")
        expect(got == want, f"rules {got}, want {want}")
        expect(lost[0].get("count") == dropped, f"lost {lost[0]}: count, counter +{dropped}")
        return f"lost after {lost[0]['after']}: filter {chain} '{rule_text}' drop, packets {dropped} = counter"
    checks(f"{case}: lost[].rules = [filter {chain}, the rule's iptables -S text, drop, packets = counter]",
           lost_rules)

    def text() -> str:
        want = f"dropped by filter {chain} {rule_text}"
        t = report_text(hoptrace, r.db)
        expect(want in t, f"no '{want}' in the text report: {short(t, 1500)}")
        return want
    checks(f"{case}: the text report says 'dropped by filter {chain} …'", text)


def case_masquerade(checks: Checks, hoptrace: Path | None, lab: lablib.Lab, tmp: Path) -> None:
    case, c1, server = "3 MASQUERADE", lab.ip["c1"], lab.ip["server"]
    lab.flush_conntrack()
    mon = NftMonitor(lab, tmp / "masq.monitor")
    ping_out = tmp / "masq.ping"
    try:
        r = traced(hoptrace, lab, tmp, "masq", [
            ["sh", "-c", shlex.join(in_ns(lab, "c1", "ping", "-n", "-c", PING3_COUNT, "-i", "0.2", "-e", PING3_IDENT,
                                          "-W", "2", server)) + f" > {shlex.quote(str(ping_out))}"]])
    finally:
        mon.stop()
    if not check_run(checks, case, r, lab, mon):
        return

    found: dict[str, int] = {}

    def evidence() -> str:
        out = ping_out.read_text() if ping_out.exists() else ""
        expect(f"{PING3_COUNT} packets transmitted, {PING3_COUNT} received" in out, f"ping: {short(out)}")
        first = [e for e in mon.events if (e.family, e.table, e.chain) == ("ip", "nat", "POSTROUTING")
                 and e.kind == "rule" and f"ip saddr {c1} " in e.pkt and f"ip daddr {server} " in e.pkt
                 and "echo-request" in e.pkt and f"icmp id {PING3_IDENT} " in e.pkt and "icmp sequence 1 " in e.pkt]
        expect(len(first) == 1 and "masquerade" in (first[0].rule or "") and first[0].verdict == "accept",
               f"nat POSTROUTING rules of the first echo request: {first}")
        found["handle"] = first[0].handle
        return f"{PING3_COUNT}/{PING3_COUNT} answered; trace id {first[0].id}: nat POSTROUTING handle {first[0].handle}"
    if checks(f"{case}: evidence: the ping passed, nft monitor saw nat POSTROUTING masquerade its first echo request",
              evidence) is None:
        return
    handle = found["handle"]
    rule_text = iptables_rule(lab, "nat", "POSTROUTING", handle)
    lab_rule = f"-s {lab.env['BRIDGE_SUBNET']} ! -o {lab.ifname['bridge']} -j MASQUERADE"
    checks(f"{case}: evidence: that handle is the lab's MASQUERADE rule in iptables -t nat -S POSTROUTING",
           lambda: expect(rule_text == lab_rule, f"handle {handle}: '{rule_text}', the lab's '{lab_rule}'")
           or f"handle {handle}: {rule_text}")
    if EVIDENCE_ONLY:
        return

    report = report_json(hoptrace, r.db)
    check_rule_traces(checks, case, report, r, mon, lab)
    flow = one_flow(report, lambda f: f["proto"] == "icmp" and f["original"].get("id") == PING3_IDENT,
                    f"icmp id {PING3_IDENT}")

    def rewrite() -> str:
        want = {"family": "ip", "table": "nat", "chain": "POSTROUTING", "rule": rule_text}
        src = [x for x in flow["rewrites"] if x["field"] == "src" and x["direction"] == "forward"]
        expect(len(src) == 1, f"rewrites {flow['rewrites']}")
        expect(rule_keys(src[0].get("rule")) == want, f"src rewrite {src[0]}, want rule {want}")
        reply = [x for x in flow["rewrites"] if x["direction"] == "reply" and "rule" in x]
        expect(not reply, f"reply rewrites (conntrack's, no rule ran) name a rule: {reply}")
        expect(not flow["lost"], f"lost {flow['lost']}")
        return f"src {src[0]['from']} → {src[0]['to']} by nat POSTROUTING '{rule_text}'; the reply's rewrite names none"
    checks(f"{case}: the src rewrite's rule = nat POSTROUTING, the MASQUERADE rule's iptables -S text", rewrite)

    def text() -> str:
        want = f"by nat POSTROUTING {rule_text}"
        t = report_text(hoptrace, r.db)
        expect(want in t, f"no '{want}' in the text report: {short(t, 1500)}")
        return want
    checks(f"{case}: the text report says 'by nat POSTROUTING …'", text)


def case_dnat(checks: Checks, hoptrace: Path | None, lab: lablib.Lab, tmp: Path) -> None:
    case, host_ip, server = "4 DNAT", lab.ip["host"], lab.ip["server"]
    listener = lab.popen("c1", "socat", "-u", f"TCP-LISTEN:{INNER},reuseaddr", "STDOUT", stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    got = {"n": 0}

    def count() -> None:
        while chunk := listener.stdout.read(1 << 16):
            got["n"] += len(chunk)
    t = threading.Thread(target=count, daemon=True)
    t.start()
    try:
        lab.wait_listening("c1", "tcp", INNER)
        lab.flush_conntrack()
        dnat_before = rule_counter(lab, "DOCKER", "DNAT", table="nat")
        mon = NftMonitor(lab, tmp / "dnat.monitor")
        try:
            r = traced(hoptrace, lab, tmp, "dnat", [in_ns(lab, "server", sys.executable, LABLIB_PY, "_tcp-client",
                                                          host_ip, PUBLISHED, NBYTES)])
        finally:
            mon.stop()
        try:
            listener.wait(10 if r.rc == 0 else 0.1)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        t.join(10)
    dnat_taken = rule_counter(lab, "DOCKER", "DNAT", table="nat") - dnat_before
    if not check_run(checks, case, r, lab, mon):
        return
    want_rule = (f"! -i {lab.ifname['bridge']} -p tcp -m tcp --dport {PUBLISHED} -j DNAT --to-destination "
                 f"{lab.ip['c1']}:{INNER}")

    def counted() -> str:
        expect(got["n"] == NBYTES, f"c1's listener got {got['n']} of {NBYTES} bytes")
        expect(dnat_taken == 1, f"nat DOCKER DNAT rule counter +{dnat_taken}, want 1 (the SYN; conntrack does the rest)")
        rules = [x[len("-A DOCKER "):] for x in lab.run("host", "iptables", "-t", "nat", "-S", "DOCKER").stdout.splitlines()
                 if "-j DNAT" in x]
        expect(rules == [want_rule], f"DNAT rules in iptables -t nat -S DOCKER: {rules}")
        return f"{NBYTES} bytes arrived; nat DOCKER '{want_rule}' counted +1 (the SYN)"
    if checks(f"{case}: evidence: every byte arrived, Docker's DNAT rule took the SYN (counter +1)", counted) is None:
        return
    found: dict[str, object] = {}

    def traced_syn() -> str:
        syn = [e for e in mon.events if (e.family, e.table) == ("ip", "nat") and e.kind == "rule"
               and e.rule and "dnat to" in e.rule and f"ip saddr {server} " in e.pkt
               and f"ip daddr {host_ip} " in e.pkt and f"tcp dport {PUBLISHED} " in e.pkt]
        if not syn:
            first = next((p for p in mon.packet_lines if f"tcp dport {PUBLISHED} " in p[4] or "tcp sport " in p[4]), None)
            raise AssertionError("the SYN was never traced (no nat event at all): nothing set nftrace on the "
                                 f"connection's first packet; the monitor's first TCP packet: {short(repr(first), 300)}")
        expect(len(syn) == 1 and syn[0].verdict == "accept", f"nat dnat rules of the connection: {syn}")
        jump = [e for e in mon.events if (e.family, e.table, e.chain) == ("ip", "nat", "PREROUTING")
                and e.id == syn[0].id and e.verdict == "jump" and e.target == syn[0].chain]
        expect(jump, f"no nat PREROUTING jump to {syn[0].chain} for trace id {syn[0].id}")
        found.update(chain=syn[0].chain, handle=syn[0].handle)
        text = iptables_rule(lab, "nat", syn[0].chain, syn[0].handle)
        expect(syn[0].chain == "DOCKER" and text == want_rule, f"nat {syn[0].chain} handle {syn[0].handle}: '{text}'")
        return f"nat PREROUTING → jump DOCKER → handle {syn[0].handle} '{text}' (verdict accept)"
    checks(f"{case}: evidence: nft monitor saw the SYN through nat PREROUTING → DOCKER's DNAT rule (it was traced)",
           traced_syn)
    chain, rule_text = "DOCKER", want_rule
    if EVIDENCE_ONLY:
        return

    report = report_json(hoptrace, r.db)
    check_rule_traces(checks, case, report, r, mon, lab)
    flow = one_flow(report, lambda f: f["proto"] == "tcp" and f["original"].get("dst") == host_ip
                    and f["original"].get("dport") == PUBLISHED, f"tcp to {host_ip}:{PUBLISHED}")

    def rewrite() -> str:
        want = {"family": "ip", "table": "nat", "chain": chain, "rule": rule_text}
        fw = {x["field"]: x for x in flow["rewrites"] if x["direction"] == "forward"}
        expect(set(fw) == {"dst", "dport"}, f"forward rewrites {list(fw.values())}")
        for field in ("dst", "dport"):
            expect(rule_keys(fw[field].get("rule")) == want, f"{field} rewrite {fw[field]}, want rule {want}")
        reply = [x for x in flow["rewrites"] if x["direction"] == "reply" and "rule" in x]
        expect(not reply, f"reply rewrites (conntrack's, no rule ran) name a rule: {reply}")
        return f"dst/dport → {fw['dst']['to']}:{fw['dport']['to']} by nat {chain} '{rule_text}'"
    checks(f"{case}: the dst and dport rewrites' rule = nat {chain}, Docker's DNAT rule text", rewrite)

    def text() -> str:
        want = f"by nat {chain} {rule_text}"
        tx = report_text(hoptrace, r.db)
        expect(want in tx, f"no '{want}' in the text report: {short(tx, 1500)}")
        return want
    checks(f"{case}: the text report says 'by nat {chain} …'", text)


def policy_counter(lab: lablib.Lab, chain: str) -> int:
    """The packets a built-in chain's policy took: "Chain FORWARD (policy DROP 10 packets, 290 bytes)"."""
    out = lab.run("host", "iptables", "-L", chain, "-v", "-x", "-n").stdout
    m = re.match(rf"Chain {chain} \(policy \S+ (\d+) packets", out)
    expect(m, f"no policy counter: {short(out)}")
    return int(m.group(1))


def case_policy(checks: Checks, hoptrace: Path | None, lab: lablib.Lab, tmp: Path) -> None:
    """7. `iptables -P FORWARD DROP`: the rules entry is the policy ("rule": "", "policy": true)."""
    case, server = "7 FORWARD policy drop", lab.ip["server"]
    lab.run("host", "iptables", "-P", "FORWARD", "DROP")
    try:
        before = policy_counter(lab, "FORWARD")
        lab.flush_conntrack()
        mon = NftMonitor(lab, tmp / "policy.monitor")
        try:
            r = traced(hoptrace, lab, tmp, "policy", [in_ns(lab, "c1", sys.executable, "-c", PACED_UDP_SENDER, server,
                                                            SPORT, POLICY_DPORT, N, "trace-rules", 0.02)])
        finally:
            mon.stop()
        dropped = policy_counter(lab, "FORWARD") - before
    finally:
        lab.run("host", "iptables", "-P", "FORWARD", "ACCEPT")
    if not check_run(checks, case, r, lab, mon):
        return

    def evidence() -> str:
        pol = [e for e in mon.events if (e.family, e.table, e.chain, e.kind, e.verdict)
               == ("ip", "filter", "FORWARD", "policy", "drop")]
        expect(dropped == N and len(pol) == N, f"policy counter +{dropped}, nft monitor {len(pol)} policy drops, "
               f"sent {N}")
        other = [e for e in mon.events if e.verdict == "drop" and e not in pol]
        expect(not other, f"other drops: {other}")
        return f"policy counter +{dropped} = sent = nft monitor's 'filter FORWARD policy drop' events"
    if checks(f"{case}: evidence: policy counter delta = sent = nft monitor's policy drops", evidence) is None:
        return
    if EVIDENCE_ONLY:
        return

    report = report_json(hoptrace, r.db)
    check_rule_traces(checks, case, report, r, mon, lab)
    flow = one_flow(report, lambda f: f["proto"] == "udp" and f["original"].get("dport") == POLICY_DPORT,
                    f"udp to port {POLICY_DPORT}")

    def lost_rules() -> str:
        want = [{"netns": lab.ns["host"], "family": "ip", "table": "filter", "chain": "FORWARD", "rule": "",
                 "verdict": "drop", "policy": True, "packets": dropped}]
        lost = flow.get("lost", [])
        expect(len(lost) == 1, f"lost {lost}")
        expect(lost[0].get("rules") == want, f"rules {lost[0].get('rules')}, want {want}")
        return f"lost after {lost[0]['after']}: filter FORWARD policy drop, packets {dropped} = policy counter"
    checks(f"{case}: lost[].rules = [filter FORWARD, rule '', policy true, drop, packets = policy counter]",
           lost_rules)

    def text() -> str:
        t = report_text(hoptrace, r.db)
        want = "dropped by the policy of filter FORWARD"
        expect(want in t, f"no '{want}' in the text report: {short(t, 1500)}")
        return want
    checks(f"{case}: the text report says 'dropped by the policy of filter FORWARD'", text)


def case_leftovers(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    """SIGINT twice, SIGKILL, the next run's clean-up (not of a running capture's table)."""
    case = "5 no table left"
    host, c1 = lab.ns["host"], lab.ns["c1"]

    def capture(tag: str, duration: float) -> Background:
        return Background(hoptrace, "capture", "--trace-rules", "--netns", c1, "--host-netns", host, "--db",
                          tmp / f"{tag}.db", "--duration", duration)

    def has_own_table(cap: Background) -> str:
        want = ("inet", f"hoptrace_{cap.proc.pid}", cap.proc.pid)
        expect(hoptrace_tables(lab) == [want], f"tables {hoptrace_tables(lab)}, want [{want}]")
        return f"table inet hoptrace_{cap.proc.pid}"

    # SIGINT twice, 0.3 s apart.
    cap = capture("sigint", 30)
    try:
        checks(f"{case}: a running capture --trace-rules has its table", lambda: has_own_table(cap))
        cap.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        cap.proc.send_signal(signal.SIGINT)
        rc, _out, err = cap.wait(30)
    finally:
        cap.kill()
    checks(f"{case}: after SIGINT twice no hoptrace_ table",
           lambda: expect(not hoptrace_tables(lab), f"left: {hoptrace_tables(lab)}; hoptrace exit {rc}: {short(err)}")
           or f"none (hoptrace exit {rc})")

    # SIGKILL: the table is owned by hoptrace's netlink socket (flags owner), so the kernel removes it with the
    # process.
    cap = capture("sigkill", 30)
    killed = cap.proc.pid
    try:
        checks(f"{case}: a running capture --trace-rules has its table (before SIGKILL)", lambda: has_own_table(cap))
        listing = lab.run("host", "nft", "list", "table", "inet", f"hoptrace_{killed}", check=False).stdout
    finally:
        cap.kill()
    checks(f"{case}: the table is owned by hoptrace's socket, and after SIGKILL it is gone with it",
           lambda: (expect("flags owner" in listing, f"nft list table: {short(listing)}"),
                    expect(not hoptrace_tables(lab), f"tables {hoptrace_tables(lab)} after SIGKILL of {killed}"))
           and None or f"'flags owner'; no table after SIGKILL of {killed}")

    # A table a dead run left where the kernel could not own it (before 5.12): made here by hand, unowned, for a
    # pid that does not exist. The next run removes it.
    dead = 4_000_000
    while Path(f"/proc/{dead}").exists():
        dead += 1
    lab.run("host", "nft", "add", "table", "inet", f"hoptrace_{dead}")
    r = run(hoptrace, "capture", "--trace-rules", "--netns", c1, "--host-netns", host, "--db", tmp / "next.db",
            "--duration", 1, timeout=60)
    checks(f"{case}: the next capture --trace-rules --duration 1 exits 0 and removed a dead run's unowned table",
           lambda: (expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}"),
                    expect(not hoptrace_tables(lab), f"left: {hoptrace_tables(lab)}"),
                    expect(f"hoptrace_{dead}" in r.stderr, f"no note about it: {short(r.stderr)}")) and None
           or f"no hoptrace_ table left (hoptrace_{dead} removed, said)")

    # A running capture's table is not a stale one: another run leaves it alone.
    cap = capture("running", 30)
    try:
        r = run(hoptrace, "capture", "--trace-rules", "--netns", c1, "--host-netns", host, "--db",
                tmp / "beside.db", "--duration", 1, timeout=60)
        checks(f"{case}: a second capture beside a running one leaves the running one's table alone",
               lambda: (expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}"), has_own_table(cap))[1])
        cap.interrupt()
        rc, _out, err = cap.wait(60)
    finally:
        cap.kill()
    checks(f"{case}: after both stopped no hoptrace_ table",
           lambda: expect(not hoptrace_tables(lab), f"left: {hoptrace_tables(lab)}; exit {rc}: {short(err)}")
           or f"none (the running one exited {rc} on SIGINT)")


def run_cases(checks: Checks, hoptrace: Path | None, lab: lablib.Lab, tmp: Path) -> None:
    server = lab.ip["server"]
    checks("the host namespace has no hoptrace_ table before the cases",
           lambda: expect(not hoptrace_tables(lab), f"tables {hoptrace_tables(lab)}") or "none")

    # 1. FORWARD drop (and 6. the same without --trace-rules), then the rule goes.
    lab.run("host", "iptables", "-I", "FORWARD", "-p", "udp", "--dport", DPORT, "-j", "DROP")
    udp_traffic = [in_ns(lab, "c1", sys.executable, "-c", PACED_UDP_SENDER, server, SPORT, DPORT, N, "trace-rules", 0.02)]
    udp_flow = lambda f: f["proto"] == "udp" and f["original"].get("dport") == DPORT  # noqa: E731
    guarded(checks, "1 FORWARD drop: ran", lost_rule_case, checks, hoptrace, lab, tmp, "1 FORWARD drop", "forward",
            udp_traffic, "FORWARD", f"dpt:{DPORT}", N, udp_flow, f"udp to port {DPORT}")
    guarded(checks, "6 without --trace-rules: ran", lost_rule_case, checks, hoptrace, lab, tmp,
            "6 without --trace-rules", "plain", udp_traffic, "FORWARD", f"dpt:{DPORT}", N, udp_flow,
            f"udp to port {DPORT}", False)
    lab.run("host", "iptables", "-D", "FORWARD", "-p", "udp", "--dport", DPORT, "-j", "DROP")

    # 2. A drop in a jumped-to chain, Docker style.
    lab.run("host", "iptables", "-N", "DOCKER-USER")
    lab.run("host", "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
    lab.run("host", "iptables", "-A", "DOCKER-USER", "-d", server, "-p", "icmp", "-j", "DROP")
    ping = [in_ns(lab, "c1", "ping", "-n", "-q", "-c", PING2_COUNT, "-i", "0.2", "-e", PING2_IDENT, "-W", "1", server)]
    guarded(checks, "2 DOCKER-USER drop: ran", lost_rule_case, checks, hoptrace, lab, tmp, "2 DOCKER-USER drop",
            "dockeruser", ping, "DOCKER-USER", "DROP", PING2_COUNT,
            lambda f: f["proto"] == "icmp" and f["original"].get("id") == PING2_IDENT, f"icmp id {PING2_IDENT}")
    lab.run("host", "iptables", "-D", "DOCKER-USER", "-d", server, "-p", "icmp", "-j", "DROP")
    lab.run("host", "iptables", "-D", "FORWARD", "-j", "DOCKER-USER")

    # 3. MASQUERADE, 4. DNAT.
    guarded(checks, "3 MASQUERADE: ran", case_masquerade, checks, hoptrace, lab, tmp)
    guarded(checks, "4 DNAT: ran", case_dnat, checks, hoptrace, lab, tmp)

    # 7. A policy drop.
    guarded(checks, "7 FORWARD policy drop: ran", case_policy, checks, hoptrace, lab, tmp)

    # 5. Interrupted and killed captures.
    if hoptrace is not None:
        guarded(checks, "5 no table left: ran", case_leftovers, checks, hoptrace, lab, tmp)


def main() -> int:
    lablib.require_root_or_skip()
    lablib.skip_unless_usable(None if shutil.which("nft") else "'nft' not found (package nftables)")
    hoptrace = None if EVIDENCE_ONLY else lablib.hoptrace_binary()
    lablib.arm_watchdog(170)
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-trace-rules-") as tmp, lablib.Lab(publish=[f"{PUBLISHED}:{INNER}"]) as lab:
        prefixes.append(lab.prefix)
        guarded(checks, "--trace-rules cases", run_cases, checks, hoptrace, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
