#!/usr/bin/env python3
"""End-to-end test of `hoptrace export`: a live capture in the lab, exported to pcapng, read by Wireshark's tools.

`hoptrace capture --netns c1 --netns c2` runs while both containers ping the server with the same ICMP id
and send UDP from the same source port (so masquerade rewrites the second one's). Then
`hoptrace export --db DB -o out.pcapng`, and tshark/capinfos (never hoptrace's own reader) must see:

- one interface per point, named after it, described "role ROLE, netns NS, interface IF";
- one frame per row of the packets table, each with the database's bytes and its timestamp to the
  nanosecond (frame.time_epoch parsed as integer seconds + 9 digits), in time order;
- a comment on every frame: its journey and hop from the database, and at the hop where masquerade acted,
  the rewrite conntrack -L reports for that flow (independent evidence from the kernel);
- what was sent: the pings and datagrams at the containers' own points;
- `--flow "proto icmp"`: exactly the ICMP frames of the full export;
- a bad --flow is a usage error (exit 2) naming the term; a disk that fills up during the export is exit 1
  with one line naming the file, and no partial file is left.

Exit 0 if every check passed, 1 otherwise, 77 if namespaces are unavailable (a failure under
HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly "N passed, M failed".
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import run_lab_test, Background, Checks, expect, guarded, netns_left, run, short, workdir  # noqa: E402

FIELDS = ["frame.interface_name", "frame.interface_description", "frame.time_epoch", "frame.comment", "ip.src",
          "ip.dst", "icmp.type", "icmp.ident", "udp.srcport", "udp.dstport"]


def db_rows(db: Path) -> list[dict]:
    """The packets table in the order the export promises: time, then the point's place on the path, then id."""
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(
            "SELECT p.id, pt.name AS point, p.ts_ns, p.raw, p.proto, p.journey_id, p.hop, j.sightings, j.flow_id, "
            "j.direction FROM packets p JOIN points pt ON pt.id = p.point_id "
            "LEFT JOIN journeys j ON j.id = p.journey_id "
            "ORDER BY p.ts_ns, pt.path_order IS NULL, pt.path_order, pt.id, p.id")]
    finally:
        con.close()


def db_points(db: Path) -> list[dict]:
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(
            "SELECT id, name, role, netns, ifname FROM points ORDER BY path_order IS NULL, path_order, id")]
    finally:
        con.close()


def db_flows(db: Path) -> dict[int, dict]:
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in con.execute("SELECT * FROM flows")}
    finally:
        con.close()


def tshark_json_raw(pcap: Path) -> list[str]:
    """Each frame's bytes in hex, as tshark reads them (-T json -x: frame_raw)."""
    r = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "json", "-x"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"tshark -T json -x {pcap}: {r.stderr.strip()}")
    return [f["_source"]["layers"]["frame_raw"][0] for f in json.loads(r.stdout)]


def capinfos_interfaces(pcap: Path) -> tuple[int, list[tuple[str, str]]]:
    """capinfos -M -I: the interface count and (name, description) of each interface."""
    r = subprocess.run(["capinfos", "-M", "-I", str(pcap)], capture_output=True, text=True, timeout=60, check=True)
    m = re.search(r"Number of interfaces in file: (\d+)", r.stdout)
    names = re.findall(r"^\s+Name = (.*)$", r.stdout, re.M)
    descriptions = re.findall(r"^\s+Description = (.*)$", r.stdout, re.M)
    return (int(m.group(1)) if m else -1), list(zip(names, descriptions))


def main() -> int:
    return run_lab_test("export", "capture, export and read back with tshark", run_export)


def run_export(checks: Checks, hoptrace: Path, lab: lablib.Lab, tmp: Path) -> None:
    db, out = tmp / "live.db", tmp / "live.pcapng"
    lab.flush_conntrack()
    capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--netns", lab.ns["c2"],
                         "--host-netns", lab.ns["host"])
    try:
        pings = lablib.ping_both(lab)
        udp = lablib.udp_both(lab)
        capture.interrupt()
        rc, _out, err = capture.wait(timeout=60)
    finally:
        capture.kill()
    conntrack = lab.conntrack()
    if checks("hoptrace capture around both containers' pings and UDP exits 0",
              lambda: expect(rc == 0, f"exit {rc}: {short(err)}") or "exit 0") is None:
        return
    checks("the traffic went through", lambda: expect(
        all(p.received == p.transmitted == lablib.PING_COUNT for p in pings.values())
        and all(all(u.echoed) for u in udp.values()), f"pings {pings}, udp {udp}")
        or f"{lablib.PING_COUNT} pings and {lablib.UDP_COUNT} UDP echoes from each container")

    r = run(hoptrace, "export", "--db", db, "-o", out)
    if checks("hoptrace export exits 0", lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}")
              or r.stdout.strip()) is None:
        return

    rows, points, flows = db_rows(db), db_points(db), db_flows(db)
    frames = lablib.tshark_fields(out, FIELDS)

    def interfaces() -> str:
        count, described = capinfos_interfaces(out)
        expect(count == len(points), f"capinfos: {count} interfaces, the database has {len(points)} points")
        want = [(p["name"], f"role {p['role']}, netns {p['netns']}, interface {p['ifname']}") for p in points]
        expect(described == want, f"capinfos interfaces {described}, want {want}")
        return f"{count} interfaces: " + ", ".join(n for n, _ in described)
    checks("capinfos: one interface per point, named and described", interfaces)

    def packets_and_times() -> str:
        expect(len(frames) == len(rows), f"tshark reads {len(frames)} frames, the database has {len(rows)} packets")
        for k, (f, row) in enumerate(zip(frames, rows), 1):
            expect(f[0] == row["point"], f"frame {k}: interface {f[0]!r}, packet {row['id']} is at {row['point']!r}")
            expect(lablib.epoch_ns(f[2]) == row["ts_ns"], f"frame {k}: time {f[2]}, the database says {row['ts_ns']}")
        times = [lablib.epoch_ns(f[2]) for f in frames]
        expect(times == sorted(times), "frames are not in time order")
        return f"{len(frames)} frames = {len(rows)} rows, every timestamp equal to the nanosecond, in time order"
    checks("tshark: every packet, at its point, with the database's timestamp", packets_and_times)

    def bytes_equal() -> str:
        raw = tshark_json_raw(out)
        expect(len(raw) == len(rows), f"{len(raw)} frames in tshark's JSON")
        bad = [k for k, (h, row) in enumerate(zip(raw, rows), 1) if h != row["raw"].hex()]
        expect(not bad, f"frames whose bytes differ from packets.raw: {bad[:10]}")
        return f"{len(raw)} frames byte for byte"
    checks("tshark: every frame's bytes are the database's", bytes_equal)

    def comments() -> str:
        missing = [k for k, f in enumerate(frames, 1) if not f[3]]
        expect(not missing, f"frames without a comment: {missing[:10]}")
        journeys = set()
        for k, (f, row) in enumerate(zip(frames, rows), 1):
            if row["journey_id"] is None:
                expect(f[3].startswith("not matched ("), f"frame {k}: {f[3]!r} for a packet in no journey")
                continue
            journeys.add(row["journey_id"])
            want = (f"journey {row['journey_id']} (flow {row['flow_id']}, {row['direction']}), "
                    f"hop {row['hop'] + 1} of {row['sightings']}: ")
            expect(f[3].startswith(want), f"frame {k}: {f[3]!r}, want it to start with {want!r}")
            if row["hop"] == 0:
                expect(f[3] == want + f"first seen at {row['point']}", f"frame {k}: {f[3]!r}")
            else:
                expect(f" → {row['point']} after " in f[3], f"frame {k}: {f[3]!r}")
        return f"{len(frames)} comments, {len(journeys)} journeys"
    checks("a comment on every frame: its journey and hop", comments)

    def sent_traffic() -> str:
        seen = Counter()
        for f in frames:
            name = f[0]
            for c in ("c1", "c2"):
                if name != f"{lab.ns[c]}:eth0" or f[4] != lab.ip[c]:
                    continue
                if f[6] == "8" and f[7] == str(lablib.PING_IDENT):
                    seen[(c, "echo")] += 1
                if f[8] == str(lablib.UDP_SPORT) and f[9] == str(lablib.UDP_DPORT):
                    seen[(c, "udp")] += 1
        want = {(c, kind): n for c in ("c1", "c2") for kind, n in (("echo", lablib.PING_COUNT), ("udp", lablib.UDP_COUNT))}
        expect(dict(seen) == want, f"at the containers' points: {dict(seen)}, want {want}")
        return "each container's 5 echo requests and 5 datagrams at its own eth0"
    checks("tshark: what the containers sent is in the export, at their own points", sent_traffic)

    def rewrites_as_conntrack() -> str:
        entries = {(e.proto, e.original.src): e for e in conntrack if e.proto in ("icmp", "udp")}
        uplink = lab.ifname["uplink"]
        n = 0
        for f, row in zip(frames, rows):
            if row["journey_id"] is None or row["direction"] != "forward" or row["point"] != uplink:
                continue
            flow = flows[row["flow_id"]]
            proto = {1: "icmp", 17: "udp"}.get(flow["proto"])
            e = entries.get((proto, flow["orig_src"]))
            if proto is None or e is None or flow["orig_src"] not in (lab.ip["c1"], lab.ip["c2"]):
                continue
            t = e.translated()
            want = f"; rewrote src {e.original.src} → {t.src}"
            before, after = (e.original.id, t.id) if proto == "icmp" else (e.original.sport, t.sport)
            if before != after:
                want += f", {'id' if proto == 'icmp' else 'sport'} {before} → {after}"
            got = f[3][f[3].find("; rewrote"):] if "; rewrote" in f[3] else ""
            expect(got == want, f"{f[3]!r}: want the rewrite {want!r} (conntrack: {e.raw})")
            n += 1
        expect(n == 2 * (lablib.PING_COUNT + lablib.UDP_COUNT), f"{n} forward packets of our flows at the uplink")
        return f"{n} packets leaving by the uplink name conntrack's translation"
    checks("comments at the uplink name the rewrite conntrack reports", rewrites_as_conntrack)

    def flow_icmp() -> str:
        icmp_out = tmp / "icmp.pcapng"
        rf = run(hoptrace, "export", "--db", db, "-o", icmp_out, "--flow", "proto icmp")
        expect(rf.returncode == 0, f"exit {rf.returncode}: {short(rf.stderr)}")
        got = lablib.tshark_fields(icmp_out, ["frame.interface_name", "frame.time_epoch", "frame.comment"])
        want = lablib.tshark_fields(out, ["frame.interface_name", "frame.time_epoch", "frame.comment"], "icmp")
        not_icmp = lablib.tshark_fields(icmp_out, ["frame.number"], "not icmp")
        expect(not not_icmp, f"{len(not_icmp)} frames that are not ICMP")
        expect(got == want, f"--flow 'proto icmp' has {len(got)} frames, the full export {len(want)} ICMP frames")
        expect(len(got) == 2 * 2 * lablib.PING_COUNT * 4, f"{len(got)} ICMP frames, want 2 containers × 10 × 4 points")
        return f"{len(got)} frames, exactly the full export's ICMP frames; {rf.stdout.strip()}"
    checks("--flow 'proto icmp' exports only the ICMP journeys", flow_icmp)

    def bad_flow() -> str:
        rb = run(hoptrace, "export", "--db", db, "-o", tmp / "bad.pcapng", "--flow", "proto icmp prot udp")
        lines = rb.stderr.strip().splitlines()
        expect(rb.returncode == 2, f"exit {rb.returncode}")
        expect(len(lines) == 1 and "'prot'" in lines[0], f"stderr {rb.stderr!r}")
        expect(not (tmp / "bad.pcapng").exists(), "a file was written")
        return lines[0]
    checks("a bad --flow is a usage error naming the term", bad_flow)

    def disk_full() -> str:
        # A 16 KiB tmpfs, mounted in a mount namespace of the command's own (nothing to unmount afterwards):
        # the export (larger than that) runs out of space half way.
        full = tmp / "full"
        full.mkdir()
        target = full / "out.pcapng"
        script = (f"mount -t tmpfs -o size=16k hoptrace-full {shlex.quote(str(full))} || exit 99; "
                  f"{shlex.quote(str(hoptrace))} export --db {shlex.quote(str(db))} -o {shlex.quote(str(target))}; "
                  f"rc=$?; ls -A {shlex.quote(str(full))}; exit $rc")
        rw = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
        expect(rw.returncode != 99, f"cannot mount a tmpfs: {short(rw.stderr)}")
        lines = rw.stderr.strip().splitlines()
        expect(rw.returncode == 1, f"exit {rw.returncode}: {short(rw.stderr)}")
        expect(len(lines) == 1 and lines[0] == f"hoptrace export: {target}: write failed: No space left on device",
               f"stderr {rw.stderr!r}")
        expect(rw.stdout.strip() == "", f"left in the full file system: {rw.stdout.split()}")
        return lines[0]
    checks("a disk that fills up half way: one line naming the file, no partial file", disk_full)


if __name__ == "__main__":
    sys.exit(main())
