#!/usr/bin/env python3
"""Randomized trust test: colliding traffic from both containers, random drops, hoptrace vs the reference.

A printed seed (`--seed N` replays it) chooses the traffic and the drops. From one sender process that
holds sockets in both containers' namespaces (so c1 and c2 can send microseconds apart), the two
containers send mixed traffic that deliberately collides: raw IPv4 UDP with the same ports and the same
IP ids from both, datagrams of the same length and payload prefix, bursts of hundreds of identical-shape
datagrams, byte-identical repeats, UDP over sockets with the same source ports from both containers
(MASQUERADE rewrites the second), and ICMP echo with the same id from both (`ping -e`). iptables drops
some of it at random hops: FORWARD drop of one destination port (lost after docker0, expected at the
uplink), FORWARD drop of the replies from one echo port (lost after the uplink, expected at docker0),
and a drop in c2's INPUT (the reply reached c2's eth0: no loss on the path).

`hoptrace trace` captures while the test's tcpdumps record the six points; trust_reference.py computes
the truth from the pcaps + conntrack (validated against what was sent: counts and payload markers per
container, and the DROP rules' packet counters = the reference's losses). hoptrace's journeys, flows,
rewrites and losses must equal the reference's, live and for imports at ns and µs precision; any
journey it flags ambiguous must be one the reference cannot decide either (flagged <= undecidable).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import collections
import os
import random
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
import trust_journeys as tj  # noqa: E402
import trust_reference as tr  # noqa: E402
from live_common import Checks, expect, guarded, netns_left, workdir  # noqa: E402

ECHO_PORTS = (7100, 7102)
SINK_PORTS = (7101, 7103)
PING_IDENT = 5150
UDP_SPORTS = (41200, 41201)  # the same on both containers: MASQUERADE rewrites one side
RAW_SPORTS = (41300, 41301)


def plan(rng: random.Random, lab: lablib.Lab) -> tuple[list[dict], dict, dict]:
    """The sends (for tj.SENDER), the drops, and per container what was sent: {c: [(dport, payload)]}."""
    ns = {c: f"/run/netns/{lab.ns[c]}" for c in ("c1", "c2")}
    sent: dict[str, list] = {"c1": [], "c2": []}
    sends: list[dict] = []
    t = 0.0
    seq = 0
    id_pool = [rng.randrange(1, 65535) for _ in range(6)]
    prefix = bytes(rng.randrange(256) for _ in range(48))
    identical = [bytes(rng.randrange(256) for _ in range(rng.choice((40, 120)))) for _ in range(3)]

    def raw(c, dport, ident, payload):
        return {"ns": ns[c], "src": lab.ip[c], "dst": lab.ip["server"], "sport": rng.choice(RAW_SPORTS),
                "dport": dport, "id": ident, "payload": payload.hex()}
    kinds = ["burst", "burst", "collide", "collide", "repeat", "sockets", "sockets"]
    kinds += [rng.choice(kinds) for _ in range(rng.randint(1, 3))]
    rng.shuffle(kinds)
    big = bytes(rng.randrange(256) for _ in range(3000))
    for kind in kinds:
        if kind == "burst":  # hundreds of identical-shape datagrams (same length, same prefix)
            n = rng.randint(150, 400)
            dport = rng.choice(SINK_PORTS)
            gap = rng.choice((0.0001, 0.0003))
            for i in range(n):
                c = rng.choice(("c1", "c2"))
                seq += 1
                p = prefix + f"|burst {seq:06d}|".encode() + bytes(20)
                sends.append({"t": t, "raw4": raw(c, dport, rng.choice(id_pool), p)})
                sent[c].append((dport, p))
                t += gap
        elif kind == "collide":  # both containers: the same ports, ids, bytes, same instant
            for _ in range(rng.randint(3, 8)):
                frag = rng.random() < 0.3  # fragmented: after NAT the non-first fragments are byte-identical
                p = big if frag else rng.choice(identical)
                ident, dport, sport = rng.choice(id_pool), rng.choice(SINK_PORTS), rng.choice(RAW_SPORTS)
                pair = []
                for c in rng.sample(("c1", "c2"), 2):
                    r = raw(c, dport, ident, p)
                    r["sport"] = sport
                    r["frag"] = frag
                    pair.append(r)
                    sent[c].append((dport, p))
                sends.append({"t": t, "multi": pair})
                t += rng.choice((0.0005, 0.003, 0.03))
        elif kind == "repeat":  # one container, byte-identical datagrams, same id (FIFO)
            c = rng.choice(("c1", "c2"))
            p, ident, dport = rng.choice(identical), rng.choice(id_pool), rng.choice(SINK_PORTS)
            r = raw(c, dport, ident, p)
            for _ in range(rng.randint(2, 5)):
                sends.append({"t": t, "raw4": dict(r)})
                sent[c].append((dport, p))
                t += rng.choice((0.0002, 0.002, 0.02))
        else:  # sockets, same source ports on both, echoed or sunk
            for _ in range(rng.randint(20, 60)):
                c = rng.choice(("c1", "c2"))
                seq += 1
                dport = rng.choice(ECHO_PORTS + SINK_PORTS)
                p = prefix + f"|socket {seq:06d} {c}|".encode()
                sends.append({"t": t, "udp": {"ns": ns[c], "dst": lab.ip["server"], "sport": rng.choice(UDP_SPORTS),
                                              "dport": dport, "payload": p.hex()}})
                sent[c].append((dport, p))
                t += rng.choice((0.0002, 0.001, 0.005))
        t += rng.uniform(0.05, 0.2)
    drops = {"forward_dport": rng.choice(ECHO_PORTS + SINK_PORTS),
             "reply_sport": rng.choice(ECHO_PORTS), "c2_input_sport": rng.choice(ECHO_PORTS)}
    return sends, drops, sent


def rule_count(lab: lablib.Lab, ns: str, chain: str, needle: str) -> int:
    out = lab.run(ns, "iptables", "-L", chain, "-v", "-x", "-n").stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "DROP" and needle in line:
            return int(f[0])
    raise AssertionError(f"no DROP rule with {needle} in {chain}")


def kernel_drops(lab: lablib.Lab) -> int:
    """What the host's kernel dropped on its own, outside any iptables rule: conntrack's insert_failed and drop
    counters (two containers' identical pings clashing in the NAT table) and the neighbour cache's
    unresolved_discards (packets queued behind an unanswered ARP)."""
    n = 0
    ct = lab.run("host", "conntrack", "-S", check=False).stdout
    for key in ("insert_failed", "drop"):
        n += sum(int(v) for v in re.findall(rf"\b{key}=(\d+)", ct))
    arp = lab.run("host", "cat", "/proc/net/stat/arp_cache", check=False).stdout.splitlines()
    if len(arp) >= 2:
        head = arp[0].split()
        if "unresolved_discards" in head:
            col = head.index("unresolved_discards")
            n += sum(int(line.split()[col], 16) for line in arp[1:] if len(line.split()) > col)
    return n


def run_random(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path, seed: int) -> None:
    rng = random.Random(seed)
    ctx = tj.Ctx(checks, hoptrace, lab, tmp)
    sends, drops, sent = plan(rng, lab)
    n_pings = rng.randint(5, 15)
    lab.run("host", "iptables", "-I", "FORWARD", "-p", "udp", "--dport", drops["forward_dport"], "-j", "DROP")
    lab.run("host", "iptables", "-I", "FORWARD", "-p", "udp", "--sport", drops["reply_sport"], "-j", "DROP")
    lab.run("c2", "iptables", "-I", "INPUT", "-p", "udp", "--sport", drops["c2_input_sport"], "-j", "DROP")
    print(f"seed {seed}: {len(sends)} send steps, c1 {len(sent['c1'])} / c2 {len(sent['c2'])} datagrams, "
          f"{n_pings} pings each; drops {drops}", flush=True)
    pings = [tj.shlex.join(["ip", "netns", "exec", lab.ns[c], "sh", "-c",
                            f"sleep 1.3; ping -n -q -c {n_pings} -i 0.02 -e {PING_IDENT} -W 1 {lab.ip['server']}"])
             + " > /dev/null" for c in ("c1", "c2")]
    spec = {"sends": sends, "recv_s": 1.0}
    kernel_before = kernel_drops(lab)
    cr = tj.run_case(ctx, "random", None, None, extra_sh=pings, echo=ECHO_PORTS, sink=SINK_PORTS, both_spec=spec)
    if cr is None:
        return
    fwd_dropped = rule_count(lab, "host", "FORWARD", f"dpt:{drops['forward_dport']}")
    kernel_dropped = kernel_drops(lab) - kernel_before
    rep_dropped = rule_count(lab, "host", "FORWARD", f"spt:{drops['reply_sport']}")
    ports = set(ECHO_PORTS + SINK_PORTS)

    def rel(j: tr.Journey) -> bool:
        o = j.orig
        if not o:
            return False
        return (o[0] == 17 and o[4] in ports) or (o[0] == 1 and j.owner in ("c1", "c2"))

    def rel_flow(o: tuple) -> bool:
        return (o[0] == 17 and o[4] in ports and o[1] in (lab.ip["c1"], lab.ip["c2"])) or \
            (o[0] == 1 and o[1] in (lab.ip["c1"], lab.ip["c2"]))

    def truth(ref: tr.Reference) -> list[str]:
        problems = []
        for c in ("c1", "c2"):
            js = [j for j in ref.journeys if j.owner == c and j.direction == "forward" and j.orig
                  and j.orig[0] == 17 and j.orig[4] in ports and j.sightings[0].point == f"{c}-eth0"]
            js = [j for j in js if j.relation is None]  # a datagram = its first fragment
            got = collections.Counter((j.orig[4], bytes(j.sightings[0].payload)[:64]) for j in js)
            want = collections.Counter((d, p[:64]) for d, p in sent[c])
            if got != want:
                problems.append(f"{c}: {sum((want - got).values())} sent datagrams not seen leaving eth0 (e.g. "
                                f"{[(d, p[:40]) for d, p in (want - got).elements()][:1]}), "
                                f"{sum((got - want).values())} seen that were not sent")
            pj = [j for j in ref.journeys if j.owner == c and j.orig and j.orig[0] == 1 and j.direction == "forward"]
            if len(pj) != n_pings:
                problems.append(f"{c}: {len(pj)} echo requests, sent {n_pings}")
        lost = ref.losses()
        # iptables counts datagrams (the host reassembles before FORWARD): so does the reference, a fragmented
        # datagram's loss on its first fragment's journey. Fragmented datagrams the host never reassembled (two
        # containers' fragments with one IP id at one instant) are lost before docker0 without reaching the
        # rule: they are the only surplus allowed.
        dg = [j for j in ref.journeys if j.relation is None and j.direction == "forward" and j.orig
              and j.orig[0] == 17 and j.orig[4] == drops["forward_dport"] and j.lost_after]
        at_rule = sum(1 for j in dg if j.lost_after == "docker0")
        unreassembled = [j for j in dg if j.lost_after != "docker0"]
        lr = sum(n for (o, d, a, e), n in lost.items() if d == "reply" and o[4] == drops["reply_sport"])
        if at_rule + len(unreassembled) != fwd_dropped or any(not j.sightings[0].is_frag for j in unreassembled):
            problems.append(f"reference: {at_rule} forward datagrams to port {drops['forward_dport']} lost after docker0 "
                            f"(+{len(unreassembled)} elsewhere), iptables dropped {fwd_dropped}")
        if lr != rep_dropped:
            problems.append(f"reference: {lr} reply losses from port {drops['reply_sport']}, iptables dropped {rep_dropped}")
        other = {k: n for k, n in lost.items() if not ((k[1] == "forward" and k[0][4] == drops["forward_dport"])
                                                       or (k[1] == "reply" and k[0][4] == drops["reply_sport"]))}
        # The kernel drops a few packets on its own (a NAT clash of two identical pings, a packet queued behind an
        # unanswered ARP): its counters explain that many.
        if sum(other.values()) > kernel_dropped:
            problems.append(f"reference: losses no rule explains: {list(other.items())[:3]} (the kernel's own drop "
                            f"counters moved by {kernel_dropped})")
        elif other:
            print(f"reference: {sum(other.values())} losses explained by the kernel's own drop counters "
                  f"(+{kernel_dropped}): {list(other.items())[:3]}", flush=True)
        return problems
    tj.validate_reference(ctx, cr, rel, {}, None, complete=False, extra=truth)
    checks("random: the drops happened", lambda: expect(
        fwd_dropped > 0 or rep_dropped > 0, f"DROP counters {fwd_dropped}/{rep_dropped}")
        or f"FORWARD dropped {fwd_dropped} to dport {drops['forward_dport']}, {rep_dropped} replies from "
           f"sport {drops['reply_sport']}; undecidable: {len([j for j in cr.ref.journeys if j.undecidable and rel(j)])} "
           f"with conntrack, {len([j for j in cr.ref_noct.journeys if j.undecidable and rel(j)])} without")
    tj.check_journeys(ctx, cr, rel)
    tj.check_flows(ctx, cr, rel_flow, rel, label="flows, rewrites, losses")


def main() -> int:
    seed = None
    for i, a in enumerate(sys.argv):
        if a == "--seed" and i + 1 < len(sys.argv):
            seed = int(sys.argv[i + 1])
        elif a.startswith("--seed="):
            seed = int(a.split("=", 1)[1])
    if seed is None:
        seed = int(os.environ.get("HOPTRACE_TRUST_SEED", "0")) or random.SystemRandom().randrange(1, 2 ** 31)
    print(f"seed {seed} (replay: --seed {seed})", flush=True)
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    lablib.arm_watchdog(float(os.environ.get("HOPTRACE_E2E_DEADLINE_S", "170")))
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-trust-random-") as tmp, lablib.Lab() as lab:
        prefixes.append(lab.prefix)
        guarded(checks, f"randomized trust test (seed {seed})", run_random, checks, hoptrace, lab, tmp, seed)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
