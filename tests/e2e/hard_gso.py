#!/usr/bin/env python3
"""End-to-end test of segmentation offloads: GSO super-packets cut into MTU-sized segments on the uplink.

In the lab's host namespace the uplink's offloads are turned off (`ethtool -K eth0 gso off tso off`),
while the containers' veths keep TSO/GSO on: c1's TCP stack hands GSO super-packets (frames far larger
than the 1500-byte MTU) to its eth0, they cross the veth and docker0 whole, and the host cuts each into
MTU-sized segments as it sends them out of the uplink — what a real NIC's TSO does after the tap, done
here in software before it. c1 uploads UPLOAD_BYTES to a socat sink on the server under `hoptrace trace
--netns c1 --host-netns host`, while tcpdump records docker0 and the uplink for independent evidence.

What tshark reads in tcpdump's files decides what must be found: the super-packets are the upload's data
packets at docker0 with an IP length above the MTU; each data packet at the uplink is either one that
docker0 saw whole (same IP id, IP length, sequence number and payload length) or a segment whose
sequence range lies inside a super-packet's (where a retransmission overlaps the original, the one whose
IP id plus the segment's index is the segment's IP id: Linux numbers segments that way). Then in
hoptrace's database every such segment's journey must be `segment-of` the journey of that super-packet
(the same four fields at its first sighting), whose last point is docker0; the report must show the flow without losses and with one segmentation
entry between docker0 and the uplink with tshark's counts and sizes, the docker0 → uplink hop must have
one sample per packet docker0 saw, and the text report must say it in words. The capture keeps running
1 s after the upload (trace's --grace), so a super-packet the segments were not tied to would be
reported lost after docker0.

The test fails (it does not skip) if docker0 saw no super-packet at all or the uplink still carried
one: then the lab did not exercise segmentation. Veths have offered TSO since Linux 2.6.x and a local
TCP socket always builds super-packets for a TSO device, so this holds on any kernel CI runs.

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
from live_common import (Checks, TcpSink, expect, point_ids, query, report_json, run, run_lab_test,  # noqa: E402
                         short, tcp_client_argv)

UPLOAD_BYTES = 4 * 1024 * 1024
MTU = 1500  # the lab's links: an IP length above it is a GSO super-packet
SNAPLEN = 128
FIELDS = ["ip.id", "ip.len", "tcp.seq_raw", "tcp.len"]


def main() -> int:
    return run_lab_test("hard-gso", "TCP upload, GSO/TSO off on the uplink", run_gso)


def offloads(lab: lablib.Lab, ns: str, ifname: str) -> dict[str, str]:
    """`ethtool -k` of an interface: {"tcp-segmentation-offload": "on", …}."""
    out = lab.run(ns, "ethtool", "-k", ifname).stdout
    return {k.strip(): v.split()[0] for k, v in (line.split(":", 1) for line in out.splitlines() if ": " in line)}


def data_packets(pcap: Path, client: str, server: str) -> list[tuple[int, int, int, int]]:
    """The upload's data packets (client → server, payload) as tshark reads them: (ip.id, ip.len, seq, len)."""
    rows = lablib.tshark_fields(pcap, FIELDS, f"ip.src == {client} && ip.dst == {server} && "
                                              f"tcp.dstport == {lablib.TCP_PORT} && tcp.len > 0")
    return [(int(i, 16), int(n), int(s), int(ln)) for i, n, s, ln in rows]


def run_gso(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    c1, host, server = lab.ns["c1"], lab.ns["host"], lab.ip["server"]
    bridge, uplink = lab.ifname["bridge"], lab.ifname["uplink"]
    lab.run("host", "ethtool", "-K", uplink, "gso", "off", "tso", "off")

    def offload_state() -> str:
        up = offloads(lab, "host", uplink)
        veth = offloads(lab, "host", lab.veth["c1"])
        inside = offloads(lab, "c1", "eth0")
        expect(up.get("tcp-segmentation-offload") == "off" and up.get("generic-segmentation-offload") == "off",
               f"{uplink}: tso {up.get('tcp-segmentation-offload')}, gso {up.get('generic-segmentation-offload')}")
        expect(veth.get("tcp-segmentation-offload") == "on" and inside.get("tcp-segmentation-offload") == "on",
               f"tso on {lab.veth['c1']}: {veth.get('tcp-segmentation-offload')}, "
               f"on c1 eth0: {inside.get('tcp-segmentation-offload')}")
        return f"{uplink}: tso off, gso off; {lab.veth['c1']} and c1 eth0: tso on"
    checks("offloads off on the uplink only", offload_state)

    db = tmp / "gso.db"
    cap_filter = f"tcp port {lablib.TCP_PORT}"
    sink = TcpSink(lab)
    captures = []
    try:
        captures = [lablib.Tcpdump(host, bridge, tmp / "docker0.pcap", snaplen=SNAPLEN, filter=cap_filter),
                    lablib.Tcpdump(host, uplink, tmp / "uplink.pcap", snaplen=SNAPLEN, filter=cap_filter)]
        lab.flush_conntrack()
        r = run(hoptrace, "trace", "--netns", c1, "--host-netns", host, "--db", db, "--snaplen", SNAPLEN,
                "--", *tcp_client_argv(lab, "c1", UPLOAD_BYTES), timeout=240)
    finally:
        lablib.stop_all(captures)
        received = sink.close()
    if checks("hoptrace trace around the upload exits 0, the server got every byte", lambda: (
            expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}"),
            expect(received == UPLOAD_BYTES, f"server received {received} of {UPLOAD_BYTES} bytes"))
            and None or f"{received} bytes received, {len(r.stdout.splitlines())} report lines") is None:
        return
    kernel_drops = [c.dropped for c in captures]

    # Independent evidence: tshark on tcpdump's files.
    client_nat = lab.ip["host"]
    at_bridge = data_packets(captures[0].path, lab.ip["c1"], server)
    at_uplink = data_packets(captures[1].path, client_nat, server)
    supers = [p for p in at_bridge if p[1] > MTU]
    whole = set(at_bridge)  # (ip.id, ip.len, seq, len): what NAT leaves alone
    gso_size = max((p[3] for p in at_uplink), default=1)  # the MSS: each segment's but a super-packet's last

    def holds(s: tuple, pkt: tuple) -> bool:
        offset = (pkt[2] - s[2]) % 2**32
        return offset < s[3] and offset + pkt[3] <= s[3] and pkt[3] < s[3]

    def numbered(s: tuple, pkt: tuple) -> bool:
        """Linux numbers the segments of a super-packet with its IP id + 0, 1, 2 …"""
        return (pkt[0] - s[0]) % 65536 == ((pkt[2] - s[2]) % 2**32) // gso_size

    expected: dict[tuple, tuple] = {}  # uplink packet -> the super-packet it was cut from
    unexplained = []
    for pkt in at_uplink:
        if pkt in whole:
            continue
        holders = [s for s in supers if holds(s, pkt)]
        if len(holders) > 1:  # a retransmission overlapping the original: its IP id tells
            holders = [s for s in holders if numbered(s, pkt)]
        if len(holders) == 1:
            expected[pkt] = holders[0]
        else:
            unexplained.append((pkt, len(holders)))
    ids_follow = sum(1 for pkt, s in expected.items() if numbered(s, pkt))
    max_segment = max((p[1] for p in expected), default=0)

    def evidence() -> str:
        expect(not any(kernel_drops), f"tcpdump's kernel drops (docker0, uplink): {kernel_drops}")
        expect(supers, f"no GSO super-packet at {bridge}: none of its {len(at_bridge)} data packets is longer than "
               f"the {MTU}-byte MTU, so this lab did not exercise segmentation (TSO/GSO unavailable on the veths?)")
        too_big = [p for p in at_uplink if p[1] > MTU]
        expect(not too_big, f"{len(too_big)} packets above the MTU on {uplink}: offloads still on? first {too_big[:3]}")
        expect(not unexplained, f"{len(unexplained)} uplink data packets neither seen whole at {bridge} nor inside "
               f"exactly one super-packet: {unexplained[:5]}")
        expect(expected, "no uplink packet is a segment")
        return (f"{len(supers)} super-packets at {bridge} (IP length {min(p[1] for p in supers)}–"
                f"{max(p[1] for p in supers)}) became {len(expected)} segments on {uplink} (IP length up to "
                f"{max_segment}); {len(at_uplink) - len(expected)} data "
                f"packets crossed whole; IP id = super-packet's + index for {ids_follow} of {len(expected)} segments")
    if checks("tshark: super-packets at docker0, only MTU-sized packets on the uplink", evidence) is None:
        return

    points = point_ids(db)
    pid_bridge, pid_uplink = points.get(bridge), points.get(uplink)

    def segments_tied() -> str:
        expect(pid_bridge is not None and pid_uplink is not None, f"points {sorted(points)}")
        rows = query(db, "SELECT p.ip_id, p.ip_len, p.tcp_seq, p.payload_len, j.relation, r.last_point, "
                         "h.ip_id, h.ip_len, h.tcp_seq, h.payload_len "
                         "FROM packets p JOIN journeys j ON j.id = p.journey_id "
                         "LEFT JOIN journeys r ON r.id = j.related_id "
                         "LEFT JOIN packets h ON h.journey_id = r.id AND h.hop = 0 "
                         "WHERE p.point_id = ? AND p.src = ? AND p.dst = ? AND p.payload_len > 0",
                     (pid_uplink, client_nat, server))
        mine = {tuple(row[:4]): (row[4], row[5], tuple(row[6:])) for row in rows}
        expect(len(rows) == len(at_uplink) and len(mine) == len(rows),
               f"hoptrace stored {len(rows)} uplink data packets ({len(mine)} distinct), tshark read {len(at_uplink)}")
        wrong = []
        for key, s in expected.items():
            got = mine.get(key)
            want = ("segment-of", pid_bridge, s)
            if got != want:
                wrong.append((key, got, want))
        expect(not wrong, f"{len(wrong)} of {len(expected)} segments not tied to their super-packet "
               f"(packet, (relation, super's last point, super-packet), wanted): {wrong[:4]}")
        extra = [(k, v) for k, v in mine.items() if k not in expected and v[0] == "segment-of"]
        expect(not extra, f"packets that crossed whole taken for segments: {extra[:4]}")
        return (f"all {len(expected)} segments on {uplink} are segment-of the journey of the super-packet "
                f"tshark found them in, which ended at {bridge}")
    checks("every uplink segment's journey is segment-of its super-packet's, ended at docker0", segments_tied)

    report = report_json(hoptrace, db)
    flows = [f for f in report["flows"] if f["proto"] == "tcp" and f["original"]["dport"] == lablib.TCP_PORT]
    if checks("the upload's flow is in the report", lambda: expect(
            len(flows) == 1, f"{len(flows)} flows to port {lablib.TCP_PORT}: {[f['original'] for f in flows]}")
            or f"flow {flows[0]['id']}") is None:
        return
    flow = flows[0]

    def no_loss() -> str:
        expect(flow["lost"] == [], f"lost: {flow['lost']}")
        return f"no loss in {flow['forward_journeys']} forward and {flow['reply_journeys']} reply journeys"
    checks("no packet of the upload reported lost", no_loss)

    def segmentation_entry() -> str:
        want = [{"between": [bridge, uplink], "direction": "forward", "super_packets": len(supers),
                 "segments": len(expected), "max_super_packet_bytes": max(p[1] for p in supers),
                 "max_segment_bytes": max_segment}]
        expect(flow.get("segmentation") == want, f"segmentation {flow.get('segmentation')}, want {want}")
        return f"{want[0]}"
    checks("the report's segmentation entry has tshark's counts and sizes", segmentation_entry)

    def one_sample_per_packet() -> str:
        at_bridge_all = lablib.tshark_fields(captures[0].path, ["frame.number"],
                                             f"ip.src == {lab.ip['c1']} && tcp.dstport == {lablib.TCP_PORT}")
        hop = [h for h in flow["hops"] if h["direction"] == "forward" and h["from"] == bridge and h["to"] == uplink]
        expect(len(hop) == 1 and hop[0]["count"] == len(at_bridge_all),
               f"hop {bridge} → {uplink}: {hop}; tshark: {len(at_bridge_all)} packets c1 → server at {bridge}")
        return f"{hop[0]['count']} samples = packets c1 → server at {bridge}; p50 {hop[0]['p50_ns']} ns"
    checks("the docker0 → uplink hop has one sample per packet docker0 saw", one_sample_per_packet)

    def in_words() -> str:
        text = " ".join(r.stdout.split())
        phrase = f"{len(supers)} super-packets (up to "
        tail = (f"were cut into {len(expected)} segments (up to {max_segment} bytes) between {bridge} and {uplink} "
                "(GSO/TSO).")
        expect(phrase in text and tail in text, f"no {phrase!r}…{tail!r} in the text report: {short(text, 1500)}")
        start = text.index(phrase)
        return text[start:text.index(tail, start) + len(tail)]
    checks("the text report says the super-packets were cut between docker0 and the uplink", in_words)


if __name__ == "__main__":
    sys.exit(main())
