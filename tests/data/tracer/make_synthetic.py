#!/usr/bin/env python3
"""Writes synthetic.pcapng and synthetic_spb.pcapng from frames of eth_ipv4.pcap (see README.md).

tcpdump, dumpcap and editcap write little-endian single-section pcapng files with microsecond or
nanosecond timestamps; these files exercise what they never write: a big-endian section followed by a
little-endian one, if_tsresol as a power of two and as picoseconds, if_tsoffset, epb_flags directions,
an obsolete packet block, blocks to skip (name resolution, interface statistics, custom), and a simple
packet block (which has no timestamp).
"""
import struct


def read_pcap(path):
    data = open(path, 'rb').read()
    magic = struct.unpack_from('<I', data, 0)[0]
    assert magic in (0xa1b2c3d4, 0xa1b23c4d), 'expected a little-endian pcap'
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, caplen, wirelen = struct.unpack_from('<IIII', data, off)
        frames.append((data[off + 16:off + 16 + caplen], wirelen))
        off += 16 + caplen
    return frames


def pad4(b):
    return b + b'\0' * (-len(b) % 4)


class Writer:
    def __init__(self, order):
        self.o = order  # '>' big-endian, '<' little-endian
        self.out = b''

    def option(self, code, value):
        return struct.pack(self.o + 'HH', code, len(value)) + pad4(value)

    def options(self, *opts):
        return b''.join(opts) + struct.pack(self.o + 'HH', 0, 0) if opts else b''

    def block(self, btype, body):
        length = 12 + len(body)
        assert length % 4 == 0
        self.out += struct.pack(self.o + 'II', btype, length) + body + struct.pack(self.o + 'I', length)

    def shb(self):
        body = struct.pack(self.o + 'IHHq', 0x1a2b3c4d, 1, 0, -1)
        body += self.options(self.option(4, b'hoptrace make_synthetic.py'))
        self.block(0x0a0d0d0a, body)

    def idb(self, linktype, snaplen, *opts):
        self.block(1, struct.pack(self.o + 'HHI', linktype, 0, snaplen) + self.options(*opts))

    def epb(self, iface, ts, frame, wirelen, flags=None):
        body = struct.pack(self.o + 'IIIII', iface, ts >> 32, ts & 0xffffffff, len(frame), wirelen) + pad4(frame)
        if flags is not None:
            body += self.options(self.option(2, struct.pack(self.o + 'I', flags)))
        self.block(6, body)

    def opb(self, iface, ts, frame, wirelen, flags):
        body = struct.pack(self.o + 'HHIIII', iface, 0, ts >> 32, ts & 0xffffffff, len(frame), wirelen) + pad4(frame)
        body += self.options(self.option(2, struct.pack(self.o + 'I', flags)))
        self.block(2, body)

    def spb(self, frame, wirelen):
        self.block(3, struct.pack(self.o + 'I', wirelen) + pad4(frame))


frames = read_pcap('eth_ipv4.pcap')
ip_frames = [(f, w) for f, w in frames if f[12:14] == b'\x08\x00']

# Section 1, big-endian. Interface 0 "be0": Ethernet, units of 2^-20 s, offset 1700000000 s.
be = Writer('>')
be.shb()
be.idb(1, 0,
       be.option(2, b'be0'),
       be.option(3, b'big-endian section, 2^-20 s units, tsoffset'),
       be.option(9, bytes([0x80 | 20])),
       be.option(14, struct.pack('>q', 1700000000)))
be.block(4, struct.pack('>HH', 1, 8) + bytes([10, 99, 2, 2]) + b'srv\0' + struct.pack('>HH', 0, 0))  # NRB
f, w = ip_frames[0]
be.epb(0, 5 * 2**20 + 2**19 + 1, f, w, flags=1)          # 1700000005.5 s + 1 unit (953.67 ns)
be.block(0x00000bad, struct.pack('>I', 32473) + b'custom!\0')  # custom block, PEN 32473 (example PEN)
f, w = ip_frames[1]
be.epb(0, 6 * 2**20 + 3, f, w, flags=2)                  # 1700000006 s + 3 units
# ISB for interface 0: isb_ifdrop (option 5) = 3 packets dropped by the capturing interface.
be.block(5, struct.pack('>III', 0, 0, 0) + be.options(be.option(5, struct.pack('>Q', 3))))

# Section 2, little-endian. Interface ids start from 0 again: 0 "le0" raw IP in picoseconds,
# 1 "le1" Ethernet with the default (microsecond) resolution. Picoseconds since 1970 overflow 64 bits,
# so le0 counts from its if_tsoffset.
le = Writer('<')
le.shb()
le.idb(101, 0, le.option(2, b'le0'), le.option(9, bytes([12])), le.option(14, struct.pack('<q', 1700000000)))
le.idb(1, 65535, le.option(2, b'le1'))
f, w = ip_frames[2]
le.epb(1, 1700000007_000001, f, w)                          # no flags: direction unknown
f, w = ip_frames[3]
le.opb(0, 8_123456789_999, f[14:], w - 14, 2)   # raw IP (Ethernet header removed); 1700000008.123456789999 s
f, w = ip_frames[4]
le.epb(0, 9_000000000_001, f[14:], w - 14, flags=1)  # 1700000009.000000000001 s

open('synthetic.pcapng', 'wb').write(be.out + le.out)

# A simple packet block after an enhanced one.
s = Writer('<')
s.shb()
s.idb(1, 128, s.option(2, b'spb0'))
f, w = ip_frames[0]
s.epb(0, 1700000010_000000, f, w)
f, w = ip_frames[1]
s.spb(f[:128], w)
open('synthetic_spb.pcapng', 'wb').write(s.out)
