#!/usr/bin/env python3
"""Writes the edge-case captures of issue #13 from frames of eth_ipv4.pcap (see README.md), with struct only:

- time_2038.pcap: classic pcap (microseconds, little-endian) whose records' seconds need the 32nd bit, which is
  how the format stores 2038-01-19 03:14:08 UTC and later (the field is unsigned; tcpdump's time_2039.pcap):
  ICMP echo request and reply of eth_ipv4.pcap (frames 6 and 7) at 2^31 s + 1 µs and 2^31 + 1 s + 2 µs, and
  request 2 (frame 8) at 2^32 - 1 s + 999999 µs (2106-02-07 06:28:15.999999).
- wire_shorter.pcap: frames 6 and 7, the first with a wire length 10 bytes shorter than its captured length (as
  in tcpdump's aoe-oobr-1.pcap), at 1700000000.000001 and .000002.
- pcapng_1_1.pcapng: one little-endian pcapng section of version 1.1 (an interface and frame 6), which libpcap and
  tshark refuse.

usage (from this directory): python3 make_edge_cases.py
"""
import struct


def read_pcap(path):
    data = open(path, 'rb').read()
    assert struct.unpack_from('<I', data, 0)[0] == 0xa1b2c3d4, 'expected a little-endian microsecond pcap'
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, caplen, wirelen = struct.unpack_from('<IIII', data, off)
        frames.append((data[off + 16:off + 16 + caplen], wirelen))
        off += 16 + caplen
    return frames


def pcap(records):
    """records: (seconds, microseconds, frame, wire length)."""
    out = struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 262144, 1)  # Ethernet
    for sec, usec, frame, wirelen in records:
        out += struct.pack('<IIII', sec, usec, len(frame), wirelen) + frame
    return out


def pad4(b):
    return b + b'\0' * (-len(b) % 4)


def block(btype, body):
    length = 12 + len(body)
    return struct.pack('<II', btype, length) + body + struct.pack('<I', length)


frames = read_pcap('eth_ipv4.pcap')
request, reply, request2 = frames[5][0], frames[6][0], frames[7][0]  # tshark frames 6, 7, 8

with open('time_2038.pcap', 'wb') as f:
    f.write(pcap([(2**31, 1, request, len(request)),
                  (2**31 + 1, 2, reply, len(reply)),
                  (2**32 - 1, 999999, request2, len(request2))]))

with open('wire_shorter.pcap', 'wb') as f:
    f.write(pcap([(1700000000, 1, request, len(request) - 10),
                  (1700000000, 2, reply, len(reply))]))

with open('pcapng_1_1.pcapng', 'wb') as f:
    f.write(block(0x0a0d0d0a, struct.pack('<IHHq', 0x1a2b3c4d, 1, 1, -1)))  # version 1.1, length unknown
    f.write(block(1, struct.pack('<HHI', 1, 0, 262144)))  # Ethernet, default microseconds
    ts = 1700000000 * 10**6
    f.write(block(6, struct.pack('<IIIII', 0, ts >> 32, ts & 0xffffffff, len(request), len(request)) + pad4(request)))
