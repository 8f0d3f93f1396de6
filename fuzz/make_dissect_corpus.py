#!/usr/bin/env python3
"""Writes a seed corpus for dissect_fuzz: every frame of the classic pcap files in a directory, as
dissect_fuzz reads its input (byte 0: link type index; byte 1: direction in the low 2 bits, wire length minus
captured length in the upper 6 as a two's complement number from -32 to 31; then the frame). A record whose wire
length is shorter than its captured length (tcpdump's aoe-oobr-1.pcap) is a seed too: a negative difference.

usage: make_dissect_corpus.py tests/data/tracer CORPUS_DIR
"""
import hashlib
import os
import struct
import sys

# pcap LINKTYPE -> index into dissect_fuzz.cpp's k_link_types
LINK_INDEX = {1: 0, 101: 1, 113: 2, 228: 3, 229: 4, 276: 5}

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
count = 0
for name in sorted(os.listdir(src)):
    path = os.path.join(src, name)
    data = open(path, 'rb').read()
    if len(data) < 24:
        continue
    magic = struct.unpack_from('<I', data, 0)[0]
    if magic not in (0xa1b2c3d4, 0xa1b23c4d):
        continue
    linktype = struct.unpack_from('<I', data, 20)[0] & 0x0fffffff
    if linktype not in LINK_INDEX:
        continue
    off = 24
    while off + 16 <= len(data):
        caplen, wirelen = struct.unpack_from('<II', data, off + 8)
        frame = data[off + 16:off + 16 + caplen]
        if len(frame) < caplen:
            break
        extra = max(-32, min(wirelen - caplen, 31))
        seed = bytes([LINK_INDEX[linktype], (extra & 0x3f) << 2 | 3]) + frame
        with open(os.path.join(dst, hashlib.sha1(seed).hexdigest()), 'wb') as out:
            out.write(seed)
        count += 1
        off += 16 + caplen
print(f'{count} seeds in {dst}')
