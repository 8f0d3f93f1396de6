#!/usr/bin/env python3
"""End-to-end test of a published port (`docker run -p 8080:80`): DNAT in the host's PREROUTING.

The lab is built with `lab.sh up --publish 8080:80`, which installs Docker's rules in the host
namespace (nat: PREROUTING -m addrtype --dst-type LOCAL -j DOCKER, DOCKER ! -i docker0 -p tcp
--dport 8080 -j DNAT --to-destination 172.17.0.2:80; filter: Docker's FORWARD accept for it); the
test checks them with iptables-save. Then a TCP listener on c1 port 80, and a client in the server
namespace that connects to 192.168.43.116:8080 and sends some bytes, captured with `hoptrace trace
--netns c1 --host-netns host`. The report must show the
flow's original destination 192.168.43.116:8080 and translated 172.17.0.2:80, the forward rewrite
of dst and dport between the uplink eth0 and docker0, the reverse rewrite of src and sport on the
replies between docker0 and eth0, the path eth0 → docker0 → veth → c1's eth0, no losses, and
conntrack "agrees" with what `conntrack -L` in the host namespace says.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (run_lab_test, LABLIB_PY, Checks, expect, guarded, netns_left, report_json, run, short,  # noqa: E402
                         workdir)

PUBLISHED = 8080
INNER = 80
NBYTES = 20000


def main() -> int:
    return run_lab_test("hard-dnat", "published port through DNAT", run_dnat,
                        lab_options={"publish": [f"{PUBLISHED}:{INNER}"]})


def run_dnat(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    host_ip, c1_ip, server_ip = lab.ip["host"], lab.ip["c1"], lab.ip["server"]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]

    def published() -> str:
        expect(lab.published == [lablib.PublishedPort(PUBLISHED, INNER, "tcp")], f"lab.published {lab.published}")
        nat = lab.run("host", "iptables-save", "-t", "nat").stdout.splitlines()
        filt = lab.run("host", "iptables-save", "-t", "filter").stdout.splitlines()
        want = [(nat, "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"),
                (nat, f"-A DOCKER ! -i {bridge} -p tcp -m tcp --dport {PUBLISHED} -j DNAT --to-destination "
                      f"{c1_ip}:{INNER}"),
                # Docker's own accept for the published port (the lab's FORWARD policy accepts anyway).
                (filt, f"-A FORWARD -o {bridge} -j DOCKER"),
                (filt, f"-A DOCKER -d {c1_ip}/32 ! -i {bridge} -o {bridge} -p tcp -m tcp --dport {INNER} -j ACCEPT")]
        for rules, rule in want:
            expect(rule in rules, f"no '{rule}' in iptables-save: {short(' | '.join(rules))}")
        policy = next(r for r in filt if r.startswith(":FORWARD "))
        return f"DNAT to {c1_ip}:{INNER}; FORWARD {policy.split()[1]} plus Docker's ACCEPT to {c1_ip}:{INNER}"
    if checks("lab.sh --publish: Docker's DNAT and FORWARD accept in the lab's host", published) is None:
        return

    def topology() -> str:
        import json
        r = run(hoptrace, "topology", "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--json")
        expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
        rules = [(n["kind"], n["rule"]) for n in json.loads(r.stdout)["nat"]]
        dnat = f"-A DOCKER ! -i {bridge} -p tcp -m tcp --dport {PUBLISHED} -j DNAT --to-destination {c1_ip}:{INNER}"
        expect(("DNAT", dnat) in rules, f"DNAT rule not listed: {rules}")
        # Docker's hairpin rule (-s c1 -d c1 … MASQUERADE) only concerns c1 talking to itself by the published port.
        hairpin = [rule for kind, rule in rules if kind == "MASQUERADE" and f"-d {c1_ip}/32" in rule]
        expect(not hairpin, f"the hairpin rule is listed as the path's masquerade: {hairpin}")
        return f"{len(rules)} rules: the DNAT to {c1_ip}:{INNER} and the masquerade, not the hairpin rule"
    checks("hoptrace topology lists the DNAT rule and not Docker's hairpin MASQUERADE", topology)

    db = tmp / "dnat.db"
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
        client = ["ip", "netns", "exec", lab.ns["server"], sys.executable, str(LABLIB_PY), "_tcp-client", host_ip,
                  str(PUBLISHED), str(NBYTES)]
        r = run(hoptrace, "trace", "--netns", lab.ns["c1"], "--host-netns", lab.ns["host"], "--db", db, "--",
                *client, timeout=120)
        listener.wait(10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        t.join(10)
    conntrack = lab.conntrack()
    if checks("hoptrace trace around the client's connection exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or f"{len(r.stdout.splitlines())} report lines") is None:
        return
    checks("the listener in c1 got every byte",
           lambda: expect(got["n"] == NBYTES, f"{got['n']} of {NBYTES}") or f"{NBYTES} bytes")

    report = report_json(hoptrace, db)
    flows = [f for f in report["flows"] if f["proto"] == "tcp" and f["original"]["dst"] == host_ip
             and f["original"]["dport"] == PUBLISHED]
    if checks("one TCP flow to the published port",
              lambda: expect(len(flows) == 1, f"{len(flows)} flows: {[(f['original'], f['translated']) for f in report['flows']]}")
              or f"flow {flows[0]['id']}") is None:
        return
    flow = flows[0]
    o, tr = flow["original"], flow["translated"]

    def tuples() -> str:
        expect(o["src"] == server_ip and (o["dst"], o["dport"]) == (host_ip, PUBLISHED), f"original {o}")
        expect((tr["src"], tr["sport"]) == (server_ip, o["sport"]) and (tr["dst"], tr["dport"]) == (c1_ip, INNER),
               f"translated {tr}")
        return f"{o['src']}:{o['sport']} → {o['dst']}:{o['dport']} ⇒ {tr['dst']}:{tr['dport']}"
    checks("original dst 192.168.43.116:8080, translated 172.17.0.2:80", tuples)

    def rewrites() -> str:
        got_rw = sorted((x["field"], str(x["from"]), str(x["to"]), tuple(x["between"]), x["direction"])
                        for x in flow["rewrites"])
        want = sorted([("dst", host_ip, c1_ip, (uplink, bridge), "forward"),
                       ("dport", str(PUBLISHED), str(INNER), (uplink, bridge), "forward"),
                       ("src", c1_ip, host_ip, (bridge, uplink), "reply"),
                       ("sport", str(INNER), str(PUBLISHED), (bridge, uplink), "reply")])
        expect(got_rw == want, f"rewrites {got_rw}, want {want}")
        return "; ".join(f"{d} {f} {a} → {b} {p[0]}→{p[1]}" for f, a, b, p, d in got_rw)
    checks("DNAT rewrites: dst/dport forward eth0→docker0, src/sport reply docker0→eth0", rewrites)

    def path() -> str:
        want = [uplink, bridge, lab.veth["c1"], f"{lab.ns['c1']}:eth0"]
        expect(flow.get("path") == want, f"path {flow.get('path')}, want {want}")
        return " → ".join(want)
    checks("path eth0 → docker0 → veth → c1's eth0", path)

    def points_in_order() -> str:
        # The points' path order is innermost first whichever way the flows started (here: from the far side).
        want = [f"{lab.ns['c1']}:eth0", lab.veth["c1"], bridge, uplink]
        got = [p["name"] for p in sorted(report["points"], key=lambda p: p.get("path_order", 99))]
        expect(got == want and [p.get("path_order") for p in report["points"]] == [0, 1, 2, 3],
               f"points in path order {got}, want {want} (0 = innermost)")
        return " < ".join(want)
    checks("points in path order innermost first (c1's eth0, veth, docker0, eth0), though the flow came in", points_in_order)

    def no_losses() -> str:
        expect(flow["lost"] == [], f"lost {flow['lost']}")
        expect(flow["forward_journeys"] > 0 and flow["reply_journeys"] > 0,
               f"journeys forward {flow['forward_journeys']}, reply {flow['reply_journeys']}")
        return f"{flow['forward_journeys']} forward and {flow['reply_journeys']} reply journeys, none lost"
    checks("no losses", no_losses)

    def agrees() -> str:
        c = flow.get("conntrack") or {}
        expect(c.get("state") == "agrees", f"conntrack {c}")
        ct = [e for e in conntrack if e.proto == "tcp" and e.original.dst == host_ip and e.original.dport == PUBLISHED]
        expect(len(ct) == 1, f"conntrack -L: {[e.raw for e in conntrack]}")
        e = ct[0]
        expect((e.original.src, e.original.sport) == (o["src"], o["sport"]), f"conntrack -L {e.raw}, original {o}")
        t2 = e.translated()
        expect((t2.src, t2.dst, t2.sport, t2.dport) == (tr["src"], tr["dst"], tr["sport"], tr["dport"]),
               f"conntrack -L {e.raw}, translated {tr}")
        return f"'agrees'; conntrack -L: {short(e.raw, 200)}"
    checks("conntrack agrees, same tuples as conntrack -L", agrees)


if __name__ == "__main__":
    sys.exit(main())
