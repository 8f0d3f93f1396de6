#!/usr/bin/env python3
"""Makes the captures of tests/data/gso (see README.md there): a TCP upload from the lab's c1 whose GSO
super-packets are cut into MTU-sized segments on the host's uplink, with one segment dropped beyond the
uplink so that c1 retransmits its bytes.

    sudo tests/data/gso/make_capture.py OUTDIR

Builds its own lab (tests/e2e/lablib.py, a fresh prefix) and removes it afterwards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))
import lablib  # noqa: E402

UPLOAD_BYTES = 256 * 1024
SNAPLEN = 96
DROP_NTH = 60  # the router drops the 61st packet of the upload it forwards (0-based nth counter)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with lablib.Lab() as lab:
        host = lab.ns["host"]
        uplink = lab.ifname["uplink"]
        lab.run("host", "ethtool", "-K", uplink, "gso", "off", "tso", "off")
        lab.run("router", "iptables", "-A", "FORWARD", "-p", "tcp", "--dport", lablib.TCP_PORT, "-m", "statistic",
                "--mode", "nth", "--every", 1000000, "--packet", DROP_NTH, "-j", "DROP")
        points = [("c1-eth0", lab.ns["c1"], "eth0"), ("c1-veth", host, lab.veth["c1"]),
                  ("docker0", host, lab.ifname["bridge"]), ("uplink", host, uplink)]
        caps = [lablib.Tcpdump(ns, ifname, out / f"{name}.pcap", snaplen=SNAPLEN) for name, ns, ifname in points]
        try:
            got = lablib.tcp_upload(lab, UPLOAD_BYTES / (1024 * 1024))
            time.sleep(0.3)
            lab.run("c1", "ping", "-n", "-c", "1", "-W", "2", lab.ip["server"])  # every point sees traffic after it
        finally:
            lablib.stop_all(caps)
        dropped = lab.run("router", "iptables", "-L", "FORWARD", "-v", "-x", "-n").stdout
        print(f"prefix {lab.prefix}, veth {lab.veth['c1']}; server received {got} of {UPLOAD_BYTES} bytes")
        print(dropped)
        for c in caps:
            print(f"{c.path.name}: {c.captured} captured, {c.dropped} dropped by the kernel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
