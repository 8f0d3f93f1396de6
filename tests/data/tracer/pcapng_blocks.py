#!/usr/bin/env python3
"""Prints "offset type length" for each block of a little-endian pcapng file (used by make_captures.sh)."""
import struct
import sys

data = open(sys.argv[1], 'rb').read()
off = 0
while off + 8 <= len(data):
    btype, length = struct.unpack_from('<II', data, off)
    print(off, btype, length)
    off += length
