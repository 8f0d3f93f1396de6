#!/usr/bin/env python3
"""End-to-end test of retransmissions: each its own journey, tied to the segment it repeats.

In a fresh lab the host drops a few of c1's TCP segments in FORWARD (`-m statistic --mode nth`),
so c1's kernel retransmits them. `hoptrace trace --netns c1 --host-netns host` runs around an
upload of 2 MiB to a sink on the server, while tcpdump captures c1's eth0 for tshark's opinion.

The report must show the dropped segments as lost after docker0, expected at the uplink, as many
as the DROP rule counted, with cause `dropped`; as many retransmitted journeys as tshark flags
`tcp.analysis.retransmission` at c1's eth0; each retransmission tied (journeys.relation =
'repeats') to an earlier journey whose sequence range holds its first byte; every dropped segment
repeated by at least one retransmission; and the upload complete at the server.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import (run_lab_test, Checks, TcpSink, expect, query, report_json, run, short,  # noqa: E402
                         tcp_client_argv, forward_drops)

PORT = 5201
NBYTES = 2 * 1024 * 1024
EVERY = 10  # drop one segment in EVERY that the host forwards to the sink (GSO: up to 64 KiB each)


def main() -> int:
    return run_lab_test("hard-retrans", "TCP retransmissions", run_retrans)


def run_retrans(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1 = lab.ns["c1"]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]
    # Only data segments (length > 200 bytes), never the handshake or the FIN: the test wants
    # retransmitted data, not a connection that gives up.
    lab.run("host", "iptables", "-I", "FORWARD", "-p", "tcp", "--dport", PORT, "-m", "length", "--length", "200:65535",
            "-m", "statistic", "--mode", "nth", "--every", EVERY, "--packet", "5", "-j", "DROP")
    db = tmp / "retrans.db"
    sink = TcpSink(lab, PORT)
    lab.flush_conntrack()
    with lablib.Tcpdump(c1, "eth0", tmp / "c1-eth0.pcap", snaplen=128, filter=f"tcp port {PORT}") as dump:
        r = run(hoptrace, "trace", "--netns", c1, "--host-netns", lab.ns["host"], "--db", db, "--quiet",
                "--", *tcp_client_argv(lab, "c1", NBYTES, PORT), timeout=180)
        pcap = dump.stop()
    received = sink.close()
    dropped = forward_drops(lab, PORT)
    if checks("hoptrace trace around a 2 MiB upload exits 0 and the server got every byte", lambda: (
            expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}"),
            expect(received == NBYTES, f"server received {received} of {NBYTES}"),
            expect(dropped > 0, "the DROP rule matched nothing"))
            and None or f"{received} bytes received, the host dropped {dropped} segments") is None:
        return

    report = report_json(hoptrace, db)
    flows = [f for f in report["flows"] if f["proto"] == "tcp" and f["original"]["dport"] == PORT]
    if checks("one TCP flow to the sink", lambda: expect(len(flows) == 1, f"{len(flows)} flows")
              or f"flow {flows[0]['id']}") is None:
        return
    flow = flows[0]

    def lost() -> str:
        got = [(x["after"], x["expected"], x["direction"], x["cause"], x["count"]) for x in flow["lost"]]
        want = [(bridge, uplink, "forward", "dropped", dropped)]
        expect(got == want, f"lost {got}, want {want}")
        return f"{dropped} lost after {bridge}, expected at {uplink}, cause dropped = the DROP counter"
    checks("dropped segments: lost after docker0, expected at the uplink, count = iptables", lost)

    # The evidence at c1's eth0, read by tshark: every data segment's (seq, len) in order. A segment whose first
    # byte was sent before is a retransmission; tshark's own analysis flags must all be among them.
    segments = [(int(a), int(b)) for a, b in lablib.tshark_fields(
        pcap, ["tcp.seq_raw", "tcp.len"], filter=f"tcp.dstport == {PORT} && tcp.len > 0")]
    flagged = {(int(a), int(b)) for a, b in lablib.tshark_fields(
        pcap, ["tcp.seq_raw", "tcp.len"], filter="tcp.analysis.retransmission || tcp.analysis.out_of_order || "
                                                 "tcp.analysis.fast_retransmission || tcp.analysis.spurious_retransmission")}
    repeats = []
    sent_up_to = None
    for seq, length in segments:
        if sent_up_to is not None and (seq - sent_up_to) % (1 << 32) >= (1 << 31):  # seq before the highest byte sent
            repeats.append((seq, length))
        end = (seq + length) % (1 << 32)
        if sent_up_to is None or (end - sent_up_to) % (1 << 32) < (1 << 31):
            sent_up_to = end

    def counted() -> str:
        mine = sorted((seq, length) for seq, length in query(db, """
            SELECT p.tcp_seq, p.payload_len FROM journeys j JOIN packets p ON p.journey_id = j.id
            JOIN points pt ON pt.id = p.point_id
            WHERE j.relation = 'repeats' AND j.flow_id = ? AND pt.role = 'container'""", (flow["id"],)))
        expect(len(repeats) > 0, "no segment at c1's eth0 repeats earlier bytes: nothing was retransmitted?")
        expect(mine == sorted(repeats), f"hoptrace's repeats at c1 eth0 {mine}, the capture's {sorted(repeats)}")
        expect(flow["repeated_journeys"] == {"forward": len(repeats), "reply": 0}, f"report {flow['repeated_journeys']}")
        expect(flagged <= set(mine), f"tshark flags {sorted(flagged - set(mine))} that hoptrace does not repeat")
        return (f"{len(mine)} retransmitted journeys = the segments at c1's eth0 that resend bytes "
                f"(tshark flags {len(flagged)} of them)")
    checks("retransmissions: exactly the segments that resend bytes, tshark's flags included", counted)

    def tied() -> str:
        rows = query(db, """
            SELECT r.id, rp.tcp_seq, o.id, op.tcp_seq, op.payload_len + ((op.tcp_flags & 3) != 0)
            FROM journeys r JOIN journeys o ON o.id = r.related_id
            JOIN packets rp ON rp.journey_id = r.id AND rp.hop = 0
            JOIN packets op ON op.journey_id = o.id AND op.hop = 0
            WHERE r.relation = 'repeats' AND r.flow_id = ?""", (flow["id"],))
        expect(len(rows) == flow["repeated_journeys"]["forward"], f"{len(rows)} rows")
        for rid, rseq, oid, oseq, olen in rows:
            expect(oid < rid and (rseq - oseq) % (1 << 32) < olen,
                   f"journey {rid} (seq {rseq}) tied to {oid} (seq {oseq}, {olen} bytes)")
        lost_ids = [j for (j,) in query(db, """
            SELECT j.id FROM journeys j JOIN points p ON p.id = j.last_point
            WHERE j.flow_id = ? AND j.direction = 'forward' AND p.name = ?""", (flow["id"], bridge))]
        repeated = {oid for _, _, oid, _, _ in rows}
        expect(len(lost_ids) == dropped, f"{len(lost_ids)} journeys end at {bridge}")
        expect(set(lost_ids) <= repeated, f"dropped journeys never repeated: {sorted(set(lost_ids) - repeated)}")
        return f"{len(rows)} retransmissions, each inside an earlier journey's bytes; all {len(lost_ids)} drops repeated"
    checks("each retransmission is tied to the journey whose bytes it repeats", tied)


if __name__ == "__main__":
    sys.exit(main())
