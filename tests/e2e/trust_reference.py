#!/usr/bin/env python3
"""An independent reference matcher for hoptrace's trust tests (trust_journeys.py, trust_random.py).

Nothing here reads hoptrace's code or output to decide what is true. From the raw bytes of the test's
own `tcpdump -w` files at each capture point (pcap or pcapng, ns or µs), the lab's topology (which point
is which container's eth0, its veth, docker0, the uplink; the lab's addresses) and `conntrack -L`
(the masquerade mapping), it computes the true journeys:

- the same packet = the same NAT-invariant bytes: IPv4 id, fragment field, total length, and the
  transport bytes NAT leaves alone (UDP length and payload, TCP seq/ack/flags/window/options/payload,
  ICMP type/code/seq/payload, an ICMP error's quoted id/length/seq; a non-first fragment's whole
  payload); IPv6 likewise (payload length, fragment header, transport);
- its path is the topology's: a container's forward packet goes eth0 -> its veth -> docker0 (-> the
  uplink when its destination is outside), a reply the other way; L2 steps keep the TTL, the routed
  step (docker0 <-> uplink) takes one off; time never goes backwards along a journey and one hop
  takes at most `window_ns`;
- inside the host the addresses say which container a packet belongs to; at the uplink conntrack's
  mapping (translated tuple -> original tuple) does; a non-first fragment at the uplink inherits the
  owner of its datagram's first fragment (same src, dst, proto, IP id) when that is unique;
- identical packets of one owner on one path are first-in first-out.

At each hop the possible continuations form a bipartite graph (chains ending at the point before, sightings
at the point after). Every maximum FIFO-consistent matching is enumerated per connected component; a
sighting whose partner is the same in all of them is decided, otherwise the journeys involved are
"undecidable" (two byte-identical packets whose order nothing fixes). Losses are where the path says
the packet should appear next and it did not; a fragmented datagram is one packet (lost where its reassembly
stopped when the host reassembled it, else where its first fragment to stop short did).

Standard library only. `python3 trust_reference.py selftest` checks the matcher on synthetic captures.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import itertools
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Iterable, Sequence

ROLES = ("container", "veth", "bridge", "uplink", "other")
DEFAULT_WINDOW_NS = 100_000_000  # 100 ms: the longest one hop may take in the lab (a loaded 2-core CI machine has shown 14 ms)
ENUM_BUDGET = 200_000  # DFS nodes per component before it is declared undecidable as a whole


# --------------------------------------------------------------------------------------------
# Capture files


@dataclasses.dataclass
class Frame:
    ts_ns: int
    linktype: int
    data: bytes
    ifindex: int | None = None  # SLL2
    pkttype: int | None = None  # SLL / SLL2: 0 host, 1 broadcast, 2 multicast, 3 otherhost, 4 outgoing


def read_capture(path: str | Path) -> list[Frame]:
    """Every frame of a pcap (µs or ns, either byte order) or pcapng file, in file order."""
    raw = Path(path).read_bytes()
    if len(raw) < 24:
        return []
    magic = raw[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        return _read_pcapng(raw)
    for endian in ("<", ">"):
        (m,) = struct.unpack(endian + "I", magic)
        if m in (0xA1B2C3D4, 0xA1B23C4D):
            nano = m == 0xA1B23C4D
            linktype = struct.unpack(endian + "I", raw[20:24])[0] & 0x0FFFFFFF
            frames, off = [], 24
            while off + 16 <= len(raw):
                sec, frac, incl, _orig = struct.unpack(endian + "IIII", raw[off:off + 16])
                data = raw[off + 16:off + 16 + incl]
                off += 16 + incl
                frames.append(_frame(sec * 1_000_000_000 + (frac if nano else frac * 1000), linktype, data))
            return frames
    raise ValueError(f"{path}: not a pcap or pcapng file")


def _read_pcapng(raw: bytes) -> list[Frame]:
    frames: list[Frame] = []
    endian, off = "<", 0
    ifaces: list[tuple[int, int, int]] = []  # (linktype, units per second)
    while off + 12 <= len(raw):
        btype = struct.unpack(endian + "I", raw[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            bom = raw[off + 8:off + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack(endian + "I", raw[off + 4:off + 8])[0]
        body = raw[off + 8:off + blen - 4]
        if btype == 1:  # IDB
            linktype = struct.unpack(endian + "H", body[:2])[0]
            per_sec = 1_000_000
            o = 8
            while o + 4 <= len(body):
                code, olen = struct.unpack(endian + "HH", body[o:o + 4])
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    v = body[o + 4]
                    per_sec = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((linktype, per_sec))
        elif btype == 6:  # EPB
            ifid, hi, lo, incl, _orig = struct.unpack(endian + "IIIII", body[:20])
            linktype, per_sec = ifaces[ifid]
            units = (hi << 32) | lo
            ts = units * 1_000_000_000 // per_sec
            frames.append(_frame(ts, linktype, body[20:20 + incl]))
        off += blen
    return frames


def _frame(ts: int, linktype: int, data: bytes) -> Frame:
    f = Frame(ts, linktype, data)
    if linktype == 113 and len(data) >= 16:
        f.pkttype = struct.unpack(">H", data[:2])[0]
    elif linktype == 276 and len(data) >= 20:
        f.ifindex = struct.unpack(">I", data[4:8])[0]
        f.pkttype = data[10]
    return f


def write_pcap_us(frames: Sequence[Frame], path: str | Path) -> None:
    """Writes frames (one link type) as a classic microsecond pcap: the µs import of the tests (the
    nanosecond stamps truncated, as a µs tcpdump would have stored them)."""
    linktype = frames[0].linktype if frames else 1
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for f in frames:
        us = f.ts_ns // 1000
        out.append(struct.pack("<IIII", us // 1_000_000, us % 1_000_000, len(f.data), len(f.data)) + f.data)
    Path(path).write_bytes(b"".join(out))


# --------------------------------------------------------------------------------------------
# Dissection


@dataclasses.dataclass
class Packet:
    """One sighting of an IP packet at one point."""
    point: str
    index: int  # frame index in the point's file
    ts_ns: int
    ver: int
    proto: int  # final transport protocol
    src: str
    dst: str
    ttl: int
    ip_id: int  # IPv4 id, IPv6 fragment id (0 without a fragment header)
    ip_len: int  # IPv4 total length / IPv6 payload length + 40
    frag_off: int  # bytes
    mf: bool
    is_frag: bool
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    icmp_id: int | None
    icmp_seq: int | None
    inner: tuple | None  # ICMP error: (proto, src, dst, sport|id, dport|None)
    ident: bytes  # the NAT-invariant identity
    l2_multicast: bool
    payload: bytes  # transport payload (UDP/ICMP echo data), for markers
    # filled by the matcher
    owner: str | None = None
    orig: tuple | None = None  # the flow's original tuple (forward orientation)
    direction: str | None = None  # forward | reply
    broadcast: bool = False

    @property
    def key(self) -> tuple:
        """How a sighting is found in hoptrace's database: point, timestamp, IP id, length."""
        return (self.point, self.ts_ns, self.ip_id if self.ver == 4 else 0, self.ip_len)

    def short(self) -> str:
        ports = f":{self.sport}>{self.dport}" if self.sport is not None else ""
        fr = f" frag@{self.frag_off}{'+' if self.mf else ''}" if self.is_frag else ""
        return f"{self.point}@{self.ts_ns} {self.src}>{self.dst}{ports} id={self.ip_id} len={self.ip_len}{fr}"


ICMP_ERRORS4 = {3, 4, 5, 11, 12}
ICMP_ERRORS6 = {1, 2, 3, 4}


def dissect(point: str, index: int, f: Frame) -> Packet | None:
    """The IP packet in a frame, or None (ARP, truncated, not IP)."""
    d = f.data
    l2_mc = False
    if f.linktype == 1:
        if len(d) < 14:
            return None
        l2_mc = bool(d[0] & 1)
        et, off = struct.unpack(">H", d[12:14])[0], 14
        while et in (0x8100, 0x88A8) and len(d) >= off + 4:
            et, off = struct.unpack(">H", d[off + 2:off + 4])[0], off + 4
    elif f.linktype == 113:
        if len(d) < 16:
            return None
        et, off = struct.unpack(">H", d[14:16])[0], 16
        l2_mc = f.pkttype in (1, 2)
    elif f.linktype == 276:
        if len(d) < 20:
            return None
        et, off = struct.unpack(">H", d[0:2])[0], 20
        l2_mc = f.pkttype in (1, 2)
    elif f.linktype in (12, 101, 228, 229):
        et, off = (0x86DD if d and d[0] >> 4 == 6 else 0x0800), 0
    else:
        return None
    ip = d[off:]
    if et == 0x0800 and len(ip) >= 20 and ip[0] >> 4 == 4:
        return _ipv4(point, index, f.ts_ns, ip, l2_mc)
    if et == 0x86DD and len(ip) >= 40 and ip[0] >> 4 == 6:
        return _ipv6(point, index, f.ts_ns, ip, l2_mc)
    return None


def _ipv4(point, index, ts, ip, l2_mc) -> Packet | None:
    ihl = (ip[0] & 0xF) * 4
    tot, ip_id, frag = struct.unpack(">HHH", ip[2:8])
    ttl, proto = ip[8], ip[9]
    src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
    l4 = ip[ihl:tot]
    off_b, mf = (frag & 0x1FFF) * 8, bool(frag & 0x2000)
    p = Packet(point, index, ts, 4, proto, src, dst, ttl, ip_id, tot, off_b, mf, off_b > 0 or mf, None, None, None,
               None, None, None, None, b"", l2_mc, b"")
    head = struct.pack(">BHHH", 4, ip_id, frag, tot) + bytes([proto])
    if off_b > 0:
        p.ident = head + l4
        p.payload = l4
        return p
    p.ident = head + _l4_invariant(p, proto, l4, 4)
    return p


def _ipv6(point, index, ts, ip, l2_mc) -> Packet | None:
    plen, nh, hlim = struct.unpack(">HBB", ip[4:8])
    src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
    rest = ip[40:40 + plen]
    frag_id, off_b, mf, is_frag, fraghdr = 0, 0, False, False, b""
    while nh in (0, 43, 60, 44) and len(rest) >= 8:
        if nh == 44:
            x, frag_id = struct.unpack(">HI", rest[2:8])
            off_b, mf, is_frag, fraghdr = (x >> 3) * 8, bool(x & 1), True, rest[:8]
            nh, rest = rest[0], rest[8:]
        else:
            hl = (rest[1] + 1) * 8
            nh, rest = rest[0], rest[hl:]
    p = Packet(point, index, ts, 6, nh, src, dst, hlim, frag_id, plen + 40, off_b, mf, is_frag, None, None, None,
               None, None, None, None, b"", l2_mc, b"")
    head = struct.pack(">BH", 6, plen) + fraghdr + bytes([nh])
    if off_b > 0:
        p.ident, p.payload = head + rest, rest
        return p
    p.ident = head + _l4_invariant(p, nh, rest, 6)
    return p


def _l4_invariant(p: Packet, proto: int, l4: bytes, ver: int) -> bytes:
    """The transport bytes NAT leaves alone; also fills ports / ICMP fields of p."""
    if proto == 17 and len(l4) >= 8:
        p.sport, p.dport = struct.unpack(">HH", l4[:4])
        p.payload = l4[8:]
        return l4[4:6] + l4[8:]
    if proto == 6 and len(l4) >= 20:
        p.sport, p.dport = struct.unpack(">HH", l4[:4])
        doff = (l4[12] >> 4) * 4
        p.payload = l4[doff:]
        return l4[4:16] + l4[18:]
    if proto in (1, 58) and len(l4) >= 8:
        t, c = l4[0], l4[1]
        p.icmp_type, p.icmp_code = t, c
        echo = (t in (8, 0)) if proto == 1 else (t in (128, 129))
        errors = ICMP_ERRORS4 if proto == 1 else ICMP_ERRORS6
        if echo:
            p.icmp_id, p.icmp_seq = struct.unpack(">HH", l4[4:8])
            p.payload = l4[8:]
            return bytes([t, c]) + l4[6:]
        if t in errors:
            p.inner = _inner(l4[8:], ver)
            inner_inv = b""
            if p.inner is not None:
                inner_inv = p.inner[5]
                p.inner = p.inner[:5]
            return bytes([t, c]) + l4[4:8] + inner_inv
        return bytes([t, c]) + l4[4:]
    return l4


def _inner(q: bytes, ver: int) -> tuple | None:
    """An ICMP error's quoted packet: (proto, src, dst, sport|id, dport|None, invariant bytes)."""
    if ver == 4 and len(q) >= 20:
        ihl = (q[0] & 0xF) * 4
        tot, iid = struct.unpack(">HH", q[2:6])
        proto = q[9]
        src, dst = str(ipaddress.IPv4Address(q[12:16])), str(ipaddress.IPv4Address(q[16:20]))
        l4 = q[ihl:ihl + 8]
        inv = struct.pack(">HH", tot, iid) + bytes([proto])
    elif ver == 6 and len(q) >= 40:
        plen, proto = struct.unpack(">HB", q[4:7])
        src, dst = str(ipaddress.IPv6Address(q[8:24])), str(ipaddress.IPv6Address(q[24:40]))
        l4 = q[40:48]
        inv = struct.pack(">H", plen) + bytes([proto])
    else:
        return None
    if proto in (6, 17) and len(l4) >= 4:
        sp, dp = struct.unpack(">HH", l4[:4])
        return (proto, src, dst, sp, dp, inv + (l4[4:6] if proto == 17 else l4[4:8]))
    if proto in (1, 58) and len(l4) >= 8:
        iid, seq = struct.unpack(">HH", l4[4:8])
        return (proto, src, dst, iid, None, inv + l4[:2] + l4[6:8])
    return (proto, src, dst, None, None, inv)


# --------------------------------------------------------------------------------------------
# Topology and conntrack


def norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


@dataclasses.dataclass
class Topology:
    """The lab as the reference sees it. points: name -> (role, container or None)."""
    points: dict[str, tuple[str, str | None]]
    containers: dict[str, set[str]]  # container -> its addresses
    local: set[str]  # addresses of the host itself (bridge, uplink): a packet to them ends in the host
    nat: set[str]  # the masquerade's source addresses (the uplink's)
    broadcast: set[str]  # subnet broadcast addresses

    @classmethod
    def of_lab(cls, lab, names: dict[str, str] | None = None) -> "Topology":
        """The topology of a lablib.Lab; point names c1-eth0, c1-veth, c2-eth0, c2-veth, docker0, uplink
        (or names[canonical] when given)."""
        n = names or {}
        pts = {}
        for c in ("c1", "c2"):
            pts[n.get(f"{c}-eth0", f"{c}-eth0")] = ("container", c)
            pts[n.get(f"{c}-veth", f"{c}-veth")] = ("veth", c)
        pts[n.get("docker0", "docker0")] = ("bridge", None)
        pts[n.get("uplink", "uplink")] = ("uplink", None)
        cont = {c: {norm(lab.ip[c])} | ({norm(lab.ip6[c])} if lab.ip6 else set()) for c in ("c1", "c2")}
        local = {norm(lab.ip["bridge"]), norm(lab.ip["host"])}
        nat = {norm(lab.ip["host"])}
        if lab.ip6:
            local |= {norm(lab.ip6["bridge"]), norm(lab.ip6["host"])}
            nat |= {norm(lab.ip6["host"])}
        bcast = {"172.17.255.255", "192.168.43.255"}
        return cls(pts, cont, local, nat, bcast)

    def point(self, role: str, container: str | None = None) -> str | None:
        for name, (r, c) in self.points.items():
            if r == role and (container is None or c == container):
                return name
        return None

    def owner_of(self, addr: str) -> str | None:
        for c, addrs in self.containers.items():
            if addr in addrs:
                return c
        return None

    def is_broadcast(self, p: Packet) -> bool:
        if p.l2_multicast or p.dst in self.broadcast or p.dst == "255.255.255.255":
            return True
        a = ipaddress.ip_address(p.dst)
        return a.is_multicast

    def path(self, owner: str, direction: str, orig: tuple | None) -> list[str]:
        """The points a packet of this flow passes, in order."""
        eth0, veth = self.point("container", owner), self.point("veth", owner)
        bridge, uplink = self.point("bridge"), self.point("uplink")
        peer = orig[2] if orig else None
        peer_c = self.owner_of(peer) if peer else None
        if peer_c and peer_c != owner:  # container to container on the bridge
            fwd = [eth0, veth, self.point("veth", peer_c), self.point("container", peer_c)]
        elif peer in self.local or (peer and ipaddress.ip_address(peer).is_link_local):
            fwd = [eth0, veth, bridge]
        else:
            fwd = [eth0, veth, bridge, uplink]
        return fwd if direction == "forward" else fwd[::-1]


def conntrack_map(entries: Iterable) -> dict[tuple, set[tuple]]:
    """lablib.ConntrackEntry list -> {translated-side tuple: {original tuple}}, both directions: the
    forward tuple as it leaves the NAT, and the reply tuple as it arrives."""
    out: dict[tuple, set[tuple]] = collections.defaultdict(set)
    for e in entries:
        proto = {"udp": 17, "tcp": 6, "icmp": 1, "icmpv6": 58}.get(e.proto)
        if proto is None:
            continue
        o, r = e.original, e.reply
        if proto in (1, 58):
            orig = (proto, norm(o.src), norm(o.dst), o.id, None)
            fwd = (proto, norm(r.dst), norm(r.src), r.id, None)
            rep = (proto, norm(r.src), norm(r.dst), r.id, None)
        else:
            orig = (proto, norm(o.src), norm(o.dst), o.sport, o.dport)
            fwd = (proto, norm(r.dst), norm(r.src), r.dport, r.sport)
            rep = (proto, norm(r.src), norm(r.dst), r.sport, r.dport)
        out[("forward",) + fwd].add(orig)
        out[("reply",) + rep].add(orig)
    return out


def parse_conntrack_events(text: str):
    """`conntrack -E` lines ("[NEW] udp 17 30 src=…") as lablib.ConntrackEntry objects."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lablib  # noqa: E402
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            line = line.split("]", 1)[1].strip()
        lines.append(line)
    return lablib.parse_conntrack("\n".join(lines))


# --------------------------------------------------------------------------------------------
# The matcher


@dataclasses.dataclass
class Journey:
    id: int
    sightings: list[Packet]
    direction: str
    owner: str | None = None
    orig: tuple | None = None
    undecidable: bool = False
    relation: str | None = None  # fragment-of | reassembly-of
    related: int | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)  # points skipped (reassembled there)
    lost_after: str | None = None
    lost_expected: str | None = None

    @property
    def last(self) -> Packet:
        return self.sightings[-1]

    def keys(self) -> list[tuple]:
        return [s.key for s in self.sightings]

    def describe(self) -> str:
        return " -> ".join(f"{s.point}@{s.ts_ns}" for s in self.sightings)


@dataclasses.dataclass
class Reference:
    topo: Topology
    packets: dict[str, list[Packet]]  # point -> IP packets in file order
    journeys: list[Journey]
    broadcasts: list[Packet]
    unplaced: list[Packet]  # packets on a point not on their path (or with no owner at a container point)
    of_key: dict[tuple, list[Packet]]
    journey_of: dict[int, Journey]  # id(packet) -> journey

    def undecidable(self) -> list[Journey]:
        return [j for j in self.journeys if j.undecidable]

    def losses(self) -> dict[tuple, int]:
        """{(orig tuple, direction, after point, expected point): count}."""
        out: collections.Counter = collections.Counter()
        for j in self.journeys:
            if j.lost_after and j.orig:
                out[(j.orig, j.direction, j.lost_after, j.lost_expected)] += 1
        return dict(out)


def _tuple(p: Packet) -> tuple:
    if p.proto in (1, 58) and p.icmp_id is not None:
        return (p.proto, p.src, p.dst, p.icmp_id, None)
    return (p.proto, p.src, p.dst, p.sport, p.dport)


def _rev(t: tuple) -> tuple:
    if t[0] in (1, 58):
        return (t[0], t[2], t[1], t[3], None)
    return (t[0], t[2], t[1], t[4], t[3])


def _label(p: Packet, topo: Topology, ct: dict | None) -> None:
    """Owner, original tuple and direction of a sighting, from its point, addresses and conntrack."""
    role, cont = topo.points.get(p.point, ("other", None))
    if p.inner is not None:  # an ICMP error: it belongs to the flow it quotes, travelling back
        q = p.inner
        qt = (q[0], q[1], q[2], q[3], q[4])
        p.direction = "reply"
        o = topo.owner_of(q[1])
        if o is not None:
            p.owner, p.orig = o, qt
        elif role == "uplink" and ct is not None and q[1] in topo.nat:
            origs = ct.get(("forward",) + qt, set())
            if len(origs) == 1:
                p.orig = next(iter(origs))
                p.owner = topo.owner_of(p.orig[1])
        return
    so, do = topo.owner_of(p.src), topo.owner_of(p.dst)
    if role in ("container", "veth"):
        p.owner = cont
        if p.src in topo.containers.get(cont, ()):
            p.direction, p.orig = "forward", _tuple(p)
        elif p.dst in topo.containers.get(cont, ()):
            p.direction, p.orig = "reply", _rev(_tuple(p))
        else:  # e.g. link-local NDP
            p.direction = "forward" if not ipaddress.ip_address(p.src).is_link_local or p.ttl == 255 else "reply"
            p.owner = None
        return
    if role == "bridge":
        if so is not None:
            p.owner, p.direction, p.orig = so, "forward", _tuple(p)
        elif do is not None:
            p.owner, p.direction, p.orig = do, "reply", _rev(_tuple(p))
        return
    if role == "uplink":
        if p.src in topo.nat:
            p.direction = "forward"
            key = ("forward",) + _tuple(p)
        elif p.dst in topo.nat:
            p.direction = "reply"
            key = ("reply",) + _tuple(p)
        else:
            return
        if ct is not None and not (p.is_frag and p.frag_off > 0):
            origs = ct.get(key, set())
            if len(origs) == 1:
                p.orig = next(iter(origs))
                p.owner = topo.owner_of(p.orig[1])


def _inherit_fragment_labels(pkts: list[Packet], window: int) -> None:
    """A non-first fragment takes the owner of its datagram's first fragment at the same point (same src,
    dst, proto, id, within the window) when exactly one owner is possible."""
    firsts: dict[tuple, list[Packet]] = collections.defaultdict(list)
    for p in pkts:
        if p.is_frag and p.frag_off == 0:
            firsts[(p.src, p.dst, p.proto, p.ip_id)].append(p)
    for p in pkts:
        if p.is_frag and p.frag_off > 0:
            cands = [f for f in firsts.get((p.src, p.dst, p.proto, p.ip_id), []) if abs(f.ts_ns - p.ts_ns) <= window]
            labels = {(f.owner, f.orig) for f in cands}
            if len(labels) == 1:
                owner, orig = next(iter(labels))
                if p.owner is None or p.owner == owner:
                    p.owner, p.orig = owner, orig
                    if p.direction is None:
                        p.direction = cands[0].direction
            elif p.owner is not None:
                p.orig = None  # which flow of this container: undecided here


def _compatible(a: tuple | None, b: tuple | None) -> bool:
    return a is None or b is None or a == b


def _match_component(As: list, Bs: list, edges: dict[int, list[int]], fifo_label) -> tuple[dict, set, set]:
    """All maximum FIFO-consistent matchings of one component. Returns (the first one found: {a: b}),
    undecidable a indexes, undecidable b indexes."""
    order = sorted(range(len(As)), key=lambda i: (As[i].last.ts_ns, As[i].last.index))
    best = [-1]
    found: list[dict] = []
    budget = [ENUM_BUDGET]
    used: set[int] = set()
    assign: dict[int, int] = {}
    last_b_of_label: dict = {}

    def dfs(k: int, size: int) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if size + (len(order) - k) < best[0]:
            return True
        if k == len(order):
            if size > best[0]:
                best[0] = size
                found.clear()
            if size == best[0]:
                found.append(dict(assign))
            return True
        i = order[k]
        lab = fifo_label(As[i])
        for j in edges.get(i, []):
            if j in used:
                continue
            if lab is not None and lab in last_b_of_label:
                pj = last_b_of_label[lab]
                if (Bs[j].ts_ns, Bs[j].index) < (Bs[pj].ts_ns, Bs[pj].index):
                    continue
            used.add(j)
            assign[i] = j
            prev = last_b_of_label.get(lab, None) if lab is not None else None
            if lab is not None:
                last_b_of_label[lab] = j
            ok = dfs(k + 1, size + 1)
            used.discard(j)
            del assign[i]
            if lab is not None:
                if prev is None:
                    del last_b_of_label[lab]
                else:
                    last_b_of_label[lab] = prev
            if not ok:
                return False
        return dfs(k + 1, size)

    complete = dfs(0, 0)
    if not complete or not found:
        # Too many possibilities to enumerate: take FIFO by time, call everything with a choice undecidable.
        first, used2 = {}, set()
        for i in order:
            for j in edges.get(i, []):
                if j not in used2:
                    first[i] = j
                    used2.add(j)
                    break
        und_a = {i for i in edges if len(edges[i]) > 1}
        und_b = {j for i in und_a for j in edges[i]}
        return first, und_a, und_b
    und_a, und_b = set(), set()
    for i in range(len(As)):
        partners = {m.get(i) for m in found}
        if len(partners) > 1:
            und_a.add(i)
    for j in range(len(Bs)):
        partners = {next((i for i, jj in m.items() if jj == j), None) for m in found}
        if len(partners) > 1:
            und_b.add(j)
    return found[0], und_a, und_b


class _Builder:
    def __init__(self, topo: Topology, window: int):
        self.topo, self.window = topo, window
        self.journeys: list[Journey] = []
        self.journey_of: dict[int, Journey] = {}
        self.at: dict[str, list[Journey]] = collections.defaultdict(list)  # chains whose last (or virtual) point

    def start(self, p: Packet, undecidable: bool = False) -> Journey:
        j = Journey(len(self.journeys) + 1, [p], p.direction, p.owner, p.orig, undecidable)
        self.journeys.append(j)
        self.journey_of[id(p)] = j
        self.at[p.point].append(j)
        return j

    def hop(self, P: str, Q: str, Bs: list[Packet], routed: bool, chain_filter=None) -> list[Packet]:
        """Continues chains at P with sightings Bs at Q; returns the sightings of Bs left unmatched."""
        As = [j for j in self.at.get(P, []) if (chain_filter is None or chain_filter(j)) and self._next(j, P) == Q]
        by_ident: dict[bytes, list[int]] = collections.defaultdict(list)
        for k, b in enumerate(Bs):
            by_ident[b.ident].append(k)
        edges: dict[int, list[int]] = {}
        for i, a in enumerate(As):
            la = a.last
            cands = []
            for k in by_ident.get(la.ident, []):
                b = Bs[k]
                if b.direction != a.direction:
                    continue
                if not _compatible((a.owner, a.orig) if a.owner else None, (b.owner, b.orig) if b.owner else None):
                    continue
                if b.owner and a.owner and b.owner != a.owner:
                    continue
                if not (0 <= b.ts_ns - la.ts_ns <= self.window):
                    continue
                if b.ttl != (la.ttl - 1 if routed else la.ttl):
                    continue
                cands.append(k)
            cands.sort(key=lambda k: (Bs[k].ts_ns, Bs[k].index))
            if cands:
                edges[i] = cands
        # connected components (union-find over ("a", i) / ("b", k))
        parent: dict = {}

        def find(x):
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for i, ks in edges.items():
            for k in ks:
                ra, rb = find(("a", i)), find(("b", k))
                if ra != rb:
                    parent[ra] = rb
        comps: dict = collections.defaultdict(lambda: ([], []))
        for i in edges:
            comps[find(("a", i))][0].append(i)
        for i, ks in edges.items():
            for k in ks:
                r = find(("b", k))
                if k not in comps[r][1]:
                    comps[r][1].append(k)
        matched_b: dict[int, Journey] = {}
        undecided_b: set[int] = set()
        for ai, bk in comps.values():
            sub_a = [As[i] for i in ai]
            sub_b = [Bs[k] for k in bk]
            pos_b = {k: n for n, k in enumerate(bk)}
            sub_edges = {n: [pos_b[k] for k in edges[i]] for n, i in enumerate(ai)}

            def fifo(j: Journey):
                return (j.owner, j.orig, j.last.ident) if j.owner and j.orig else None
            m, und_a, und_b = _match_component(sub_a, sub_b, sub_edges, fifo)
            for n, pos in m.items():
                j, b = sub_a[n], sub_b[pos]
                self._extend(j, P, b)
                matched_b[bk[pos]] = j
                if n in und_a or pos in und_b:
                    j.undecidable = True
            for n in und_a:
                sub_a[n].undecidable = True
            for pos in und_b:
                undecided_b.add(bk[pos])
                if bk[pos] in matched_b:
                    matched_b[bk[pos]].undecidable = True
        left = []
        for k, b in enumerate(Bs):
            if k not in matched_b:
                left.append(b)
                if k in undecided_b:
                    b._undecided = True  # type: ignore[attr-defined]
        return left

    def _next(self, j: Journey, P: str) -> str | None:
        if not j.owner:
            # owner not known yet (e.g. at the uplink without conntrack): the path is uplink -> docker0
            if self.topo.points.get(P, ("",))[0] == "uplink" and j.direction == "reply":
                return self.topo.point("bridge")
            return None
        path = self.topo.path(j.owner, j.direction, j.orig)
        return path[path.index(P) + 1] if P in path and path.index(P) + 1 < len(path) else None

    def _extend(self, j: Journey, P: str, b: Packet) -> None:
        self.at[P].remove(j)
        j.sightings.append(b)
        if j.owner is None and b.owner is not None:
            j.owner, j.orig = b.owner, b.orig
        self.journey_of[id(b)] = j
        self.at[b.point].append(j)


def build(topo: Topology, captures: dict[str, list[Frame]], conntrack: Iterable | None,
          window_ns: int = DEFAULT_WINDOW_NS) -> Reference:
    """The reference journeys. captures: point name -> frames of that point's file (points not in topo
    are ignored). conntrack: lablib.ConntrackEntry objects, or None to decide without it."""
    ct = conntrack_map(conntrack) if conntrack is not None else None
    packets: dict[str, list[Packet]] = {}
    of_key: dict[tuple, list[Packet]] = collections.defaultdict(list)
    broadcasts = []
    for point, frames in captures.items():
        if point not in topo.points:
            continue
        pk = []
        for i, f in enumerate(frames):
            p = dissect(point, i, f)
            if p is None:
                continue
            p.broadcast = topo.is_broadcast(p)
            _label(p, topo, ct)
            pk.append(p)
            of_key[p.key].append(p)
        _inherit_fragment_labels(pk, window_ns)
        packets[point] = pk
    B = _Builder(topo, window_ns)
    unplaced = []

    def sightings(point: str, direction: str, owner: str | None = "*") -> list[Packet]:
        out = []
        for p in packets.get(point, []):
            if p.broadcast:
                continue
            if p.direction != direction:
                continue
            if owner != "*" and p.owner != owner:
                continue
            out.append(p)
        return out

    bridge, uplink = topo.point("bridge"), topo.point("uplink")
    conts = sorted(topo.containers)
    for p in (q for pk in packets.values() for q in pk):
        if p.broadcast:
            broadcasts.append(p)

    def start_all(ps: list[Packet]) -> None:
        for p in ps:
            B.start(p, getattr(p, "_undecided", False))

    # forward: eth0 -> veth -> docker0 -> uplink
    for c in conts:
        start_all(sightings(topo.point("container", c), "forward", c))
        start_all(B.hop(topo.point("container", c), topo.point("veth", c),
                        sightings(topo.point("veth", c), "forward", c), routed=False))
    for c in conts:
        veth = topo.point("veth", c)
        left = B.hop(veth, bridge, sightings(bridge, "forward", c), routed=False)
        start_all([p for p in left if p.owner == c])
    # fragments reassembled on docker0: their chains skip it
    reasm = [p for p in sightings(bridge, "forward") if not p.is_frag]
    for c in conts:
        veth = topo.point("veth", c)
        for j in list(B.at.get(veth, [])):
            s = j.last
            if not s.is_frag or j.direction != "forward" or B._next(j, veth) != bridge:
                continue
            if any(r.src == s.src and r.dst == s.dst and r.proto == s.proto and r.ip_id == s.ip_id
                   and 0 <= r.ts_ns - s.ts_ns <= window_ns for r in reasm):
                B.at[veth].remove(j)
                B.at[bridge].append(j)
                j.skipped.append(bridge)
    start_all(B.hop(bridge, uplink, sightings(uplink, "forward"), routed=True))
    # reply: uplink -> docker0 -> veth -> eth0
    start_all(sightings(uplink, "reply"))
    left = B.hop(uplink, bridge, sightings(bridge, "reply"), routed=True)
    start_all(left)
    for c in conts:
        veth, eth0 = topo.point("veth", c), topo.point("container", c)
        start_all(B.hop(bridge, veth, sightings(veth, "reply", c), routed=False))
        start_all(B.hop(veth, eth0, sightings(eth0, "reply", c), routed=False))
    # whatever has no journey yet (no direction/owner: link-local, the host's own, ...)
    for pk in packets.values():
        for p in pk:
            if not p.broadcast and id(p) not in B.journey_of:
                unplaced.append(p)
    # the reassembled datagrams on docker0 have their own journey (started above); tie them and the
    # non-first fragments to the first fragment's journey
    _relations(B.journeys, window_ns)
    _losses(B.journeys, topo)
    return Reference(topo, packets, B.journeys, broadcasts, unplaced, of_key, B.journey_of)


def _datagram_key(j: Journey) -> tuple:
    s = j.sightings[0]
    return (j.owner, j.direction, s.proto, s.ip_id, j.orig[1:3] if j.orig else (s.src, s.dst))


def _relations(journeys: list[Journey], window: int) -> None:
    firsts: dict[tuple, list[Journey]] = collections.defaultdict(list)
    for j in journeys:
        s = j.sightings[0]
        if s.is_frag and s.frag_off == 0:
            firsts[_datagram_key(j)].append(j)
    for j in journeys:
        s = j.sightings[0]
        wants = None
        if s.is_frag and s.frag_off > 0:
            wants = "fragment-of"
        elif not s.is_frag and s.ver == 4 and j.owner is not None and s.ip_len > 1500:
            # a whole datagram larger than the links' MTU whose fragments were seen: the host reassembled it
            if firsts.get(_datagram_key(j)):
                wants = "reassembly-of"
        if not wants:
            continue
        cands = [f for f in firsts.get(_datagram_key(j), []) if abs(f.sightings[0].ts_ns - s.ts_ns) <= window]
        if cands:
            best = min(cands, key=lambda f: abs(f.sightings[0].ts_ns - s.ts_ns))
            j.relation, j.related = wants, best.id
            if len({c.id for c in cands}) > 1:
                j.undecidable = True


def _stop(j: Journey, path: list[str], last: Packet | None = None) -> tuple[str, str] | None:
    """Where j stopped short of path: (its last point, the next point the path expects), or None."""
    seen = [s.point for s in j.sightings] + j.skipped
    last = (last or j.last).point
    if last not in path:
        return None
    rest = [p for p in path[path.index(last) + 1:] if p not in seen]
    return (last, rest[0]) if rest else None


def _losses(journeys: list[Journey], topo: Topology) -> None:
    """Per packet; a fragmented datagram is one packet, its loss put on its first fragment's journey: when the host
    reassembled it, where the reassembled datagram stopped (unless pieces of it turn up further along the path);
    otherwise where the first of its fragments to stop short did."""
    later: dict[int, list[Journey]] = collections.defaultdict(list)
    reassembly: dict[int, Journey] = {}
    for j in journeys:
        if j.relation == "fragment-of":
            later[j.related].append(j)
        elif j.relation == "reassembly-of":
            reassembly.setdefault(j.related, j)
    for j in journeys:
        if j.owner is None or j.relation in ("reassembly-of", "fragment-of"):
            continue
        path = topo.path(j.owner, j.direction, j.orig)
        s = j.sightings[0]
        if not (s.is_frag and s.frag_off == 0):
            stop = _stop(j, path)
        elif j.id in reassembly:
            r = reassembly[j.id]
            stop = _stop(r, path)
            if stop:
                beyond = path[path.index(stop[0]) + 1:]
                if any(x.point in beyond for piece in [j] + later[j.id] for x in piece.sightings):
                    stop = None
        else:
            stops = [x for x in (_stop(piece, path) for piece in [j] + later[j.id]) if x]
            stop = min(stops, key=lambda x: path.index(x[0])) if stops else None
        if stop:
            j.lost_after, j.lost_expected = stop


# --------------------------------------------------------------------------------------------
# hoptrace's side: its database, read only for comparison


@dataclasses.dataclass
class HtJourney:
    id: int
    flow_id: int
    direction: str
    relation: str | None
    related: int | None
    ambiguous: int
    keys: list[tuple]


@dataclasses.dataclass
class HtDb:
    journeys: dict[int, HtJourney]
    journey_of_key: dict[tuple, list[int | None]]  # sighting key -> journey ids (one per stored copy)
    has_ambiguous: bool
    columns: dict[str, set[str]]


def load_hoptrace(db: str | Path, alias: dict[str, str] | None = None) -> HtDb:
    """hoptrace's journeys and which sighting (point, ts_ns, ip id, length) is in which. alias renames
    its point names to the reference's."""
    alias = alias or {}
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
    try:
        cols = {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in ("journeys", "packets", "points")}
        amb = "ambiguous" in cols["journeys"]
        rel = "relation" in cols["journeys"]
        q = ("SELECT id, flow_id, direction, " + ("relation, related_id" if rel else "NULL, NULL") + ", "
             + ("ambiguous" if amb else "0") + " FROM journeys")
        journeys = {r[0]: HtJourney(r[0], r[1], r[2], r[3], r[4], r[5] or 0, []) for r in con.execute(q)}
        names = {pid: alias.get(n, n) for pid, n in con.execute("SELECT id, name FROM points")}
        jof: dict[tuple, list] = collections.defaultdict(list)
        for pid, ts, ipid, iplen, ver, jid in con.execute(
                "SELECT point_id, ts_ns, ip_id, ip_len, ip_version, journey_id FROM packets ORDER BY id"):
            key = (names[pid], ts, ipid if ver == 4 else 0, iplen)
            jof[key].append(jid)
            if jid is not None and jid in journeys:
                journeys[jid].keys.append(key)
    finally:
        con.close()
    return HtDb(journeys, jof, amb, cols)


def compare(ref: Reference, ht: HtDb, relevant=lambda j: True, limit: int = 4) -> dict:
    """Compares the reference's journeys (those `relevant`) with hoptrace's. Returns a dict:
    wrong (decided reference journeys hoptrace does not have exactly), merged (hoptrace journeys
    holding sightings of two containers), unflagged_undecidable, flagged (hoptrace journeys flagged
    ambiguous that hold relevant sightings), flagged_wrong (flagged ones with no undecidable reference
    journey in them), missing (reference sightings hoptrace did not store), examples (text)."""
    res = {"decided": 0, "undecidable": 0, "wrong": 0, "merged": 0, "flagged": 0, "flagged_wrong": 0,
           "missing": 0, "examples": []}
    # Each reference sighting -> the hoptrace journey of the same sighting. Equal keys (the same
    # sighting stored twice, e.g. copies) are taken in order.
    taken: dict[tuple, int] = collections.Counter()
    ht_of: dict[int, int | None] = {}
    for pk in ref.packets.values():
        for p in pk:
            lst = ht.journey_of_key.get(p.key, [])
            n = taken[p.key]
            taken[p.key] += 1
            ht_of[id(p)] = lst[n] if n < len(lst) else "missing"
    rel_journeys = [j for j in ref.journeys if relevant(j)]
    owner_of_ht: dict[int, set] = collections.defaultdict(set)
    ref_of_ht: dict[int, set] = collections.defaultdict(set)
    for j in ref.journeys:
        for s in j.sightings:
            h = ht_of.get(id(s))
            if isinstance(h, int):
                ref_of_ht[h].add(j.id)
                if s.owner:
                    owner_of_ht[h].add(s.owner)
    und_ids = {j.id for j in ref.journeys if j.undecidable}
    for j in rel_journeys:
        hs = [ht_of.get(id(s)) for s in j.sightings]
        if "missing" in hs:
            res["missing"] += 1
            res["examples"].append(f"not in hoptrace's db: {j.sightings[hs.index('missing')].short()}")
            continue
        if j.undecidable:
            res["undecidable"] += 1
            continue
        res["decided"] += 1
        ok = len(set(hs)) == 1 and hs[0] is not None
        if ok:
            ht_keys = sorted(ht.journeys[hs[0]].keys)
            ok = ht_keys == sorted(j.keys())
        if not ok:
            res["wrong"] += 1
            if len(res["examples"]) < limit:
                got = []
                for h in dict.fromkeys(hs):
                    if h is None:
                        got.append("no journey")
                    else:
                        got.append(f"#{h}[{' '.join(f'{k[0]}@{k[1]}' for k in ht.journeys[h].keys)}]")
                res["examples"].append(f"ref {j.describe()} ({j.owner} {j.direction}) vs hoptrace {', '.join(got)}")
    rel_ht = {h for j in rel_journeys for s in j.sightings for h in [ht_of.get(id(s))] if isinstance(h, int)}
    for h in rel_ht:
        if len(owner_of_ht[h]) > 1:
            res["merged"] += 1
            if len(res["examples"]) < limit + 2:
                res["examples"].append(f"hoptrace journey #{h} holds sightings of {sorted(owner_of_ht[h])}: "
                                       + " ".join(f"{k[0]}@{k[1]}" for k in ht.journeys[h].keys))
        if ht.journeys[h].ambiguous:
            res["flagged"] += 1
            if not (ref_of_ht[h] & und_ids):
                res["flagged_wrong"] += 1
    return res


def summary(ref: Reference) -> str:
    d = collections.Counter((j.owner, j.direction) for j in ref.journeys)
    return (f"{len(ref.journeys)} journeys ({', '.join(f'{o} {dr} {n}' for (o, dr), n in sorted(d.items(), key=str))}), "
            f"{len(ref.undecidable())} undecidable, {len(ref.broadcasts)} broadcast sightings, "
            f"{len(ref.unplaced)} unplaced")


# --------------------------------------------------------------------------------------------
# Self-test on synthetic captures (no lab needed)


def _eth(dst: bytes, payload: bytes, et: int = 0x0800) -> bytes:
    return dst + b"\x02\x42\x00\x00\x00\x01" + struct.pack(">H", et) + payload


def _ip4(src, dst, ident, ttl, l4, proto=17, frag=0) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + l4


def _udp(sp, dp, data) -> bytes:
    return struct.pack(">HHHH", sp, dp, 8 + len(data), 0) + data


def selftest() -> int:
    class L:  # a lab-like object
        ip = {"c1": "172.17.0.2", "c2": "172.17.0.3", "bridge": "172.17.0.1", "host": "192.168.43.116"}
        ip6: dict = {}
    topo = Topology.of_lab(L)
    uc = b"\x02\x42\xac\x11\x00\x02"

    class CT:
        def __init__(self, proto, o, r):
            self.proto = proto
            self.original = type("T", (), o)
            self.reply = type("T", (), r)
    srv = "198.51.100.10"
    ct = [CT("udp", dict(src="172.17.0.2", dst=srv, sport=41000, dport=7000, id=None),
             dict(src=srv, dst="192.168.43.116", sport=7000, dport=41000, id=None)),
          CT("udp", dict(src="172.17.0.3", dst=srv, sport=41000, dport=7000, id=None),
             dict(src=srv, dst="192.168.43.116", sport=7000, dport=1024, id=None))]
    fails = 0

    def frames(specs):
        return [Frame(t, 1, _eth(uc, b)) for t, b in specs]
    # 1: identical datagrams from c1 and c2, 20 ms apart: decided (conntrack and time)
    d = b"same payload"
    T = 1_000_000_000
    caps = {
        "c1-eth0": frames([(T, _ip4("172.17.0.2", srv, 0x1234, 64, _udp(41000, 7000, d)))]),
        "c1-veth": frames([(T + 1000, _ip4("172.17.0.2", srv, 0x1234, 64, _udp(41000, 7000, d)))]),
        "c2-eth0": frames([(T + 20_000_000, _ip4("172.17.0.3", srv, 0x1234, 64, _udp(41000, 7000, d)))]),
        "c2-veth": frames([(T + 20_001_000, _ip4("172.17.0.3", srv, 0x1234, 64, _udp(41000, 7000, d)))]),
        "docker0": frames([(T + 1000, _ip4("172.17.0.2", srv, 0x1234, 64, _udp(41000, 7000, d))),
                           (T + 20_001_000, _ip4("172.17.0.3", srv, 0x1234, 64, _udp(41000, 7000, d)))]),
        "uplink": frames([(T + 50_000, _ip4("192.168.43.116", srv, 0x1234, 63, _udp(41000, 7000, d))),
                          (T + 20_050_000, _ip4("192.168.43.116", srv, 0x1234, 63, _udp(1024, 7000, d)))]),
    }
    for with_ct in (ct, None):
        r = build(topo, caps, with_ct)
        got = sorted((j.owner, tuple(s.point for s in j.sightings), j.undecidable) for j in r.journeys)
        want = [("c1", ("c1-eth0", "c1-veth", "docker0", "uplink"), False),
                ("c2", ("c2-eth0", "c2-veth", "docker0", "uplink"), False)]
        if got != want:
            print(f"selftest 1 ({'conntrack' if with_ct else 'no conntrack'}): {got}")
            fails += 1
    # 2: the same, 2 µs apart, without conntrack: undecidable at the uplink; with conntrack: decided
    caps2 = {k: [Frame(f.ts_ns - (20_000_000 - 2_000 if f.ts_ns >= T + 20_000_000 else 0), f.linktype, f.data)
                 for f in v] for k, v in caps.items()}
    caps2["uplink"] = frames([(T + 50_000, _ip4("192.168.43.116", srv, 0x1234, 63, _udp(1024, 7000, d))),
                              (T + 50_500, _ip4("192.168.43.116", srv, 0x1234, 63, _udp(41000, 7000, d)))])
    r = build(topo, caps2, None)
    if sum(j.undecidable for j in r.journeys) != 2:
        print(f"selftest 2: {[(j.describe(), j.undecidable) for j in r.journeys]}")
        fails += 1
    r = build(topo, caps2, ct)
    c1j = [j for j in r.journeys if j.owner == "c1"]
    if any(j.undecidable for j in r.journeys) or len(c1j) != 1 or c1j[0].last.sport != 41000:
        print(f"selftest 2 conntrack: {[(j.describe(), j.undecidable) for j in r.journeys]}")
        fails += 1
    # 3: FIFO: c1 sends the same datagram twice, 1 ms apart, one lost after docker0: the first seen at the
    # uplink 60 µs after the second was on docker0 -> only the second can be lost? No: both are possible
    # (each hop <= window), so the loss is undecidable; 300 ms apart (beyond the 100 ms window) it is decided.
    for gap, und in ((1_000_000, True), (300_000_000, False)):
        pkt = _ip4("172.17.0.2", srv, 7, 64, _udp(41000, 7000, d))
        out = _ip4("192.168.43.116", srv, 7, 63, _udp(41000, 7000, d))
        caps3 = {"c1-eth0": frames([(T, pkt), (T + gap, pkt)]), "c1-veth": frames([(T + 1, pkt), (T + gap + 1, pkt)]),
                 "docker0": frames([(T + 1, pkt), (T + gap + 1, pkt)]), "uplink": frames([(T + gap + 60_000, out)])}
        r = build(topo, caps3, ct)
        flags = sorted(j.undecidable for j in r.journeys)
        lost = r.losses()
        if (any(flags) != und) or sum(lost.values()) != 1:
            print(f"selftest 3 gap {gap}: {[(j.describe(), j.undecidable) for j in r.journeys]} lost {lost}")
            fails += 1
    # 4: a fragmented datagram is one packet: reassembled on docker0 and cut again to the uplink (no loss),
    # reassembled and dropped after docker0 (one loss there), never reassembled (one loss before docker0)
    udp = _udp(41000, 7000, bytes(range(256)) * 11 + bytes(192))  # 3008 bytes: three fragments at MTU 1500

    def pieces(src, ttl):
        return [_ip4(src, srv, 99, ttl, udp[a:b], frag=f) for a, b, f in
                ((0, 1480, 0x2000), (1480, 2960, 0x2000 | 185), (2960, len(udp), 370))]
    inner, outer, whole = pieces("172.17.0.2", 64), pieces("192.168.43.116", 63), _ip4("172.17.0.2", srv, 99, 64, udp)
    for case, want in (("cut again", {}), ("dropped", {("docker0", "uplink"): 1}), ("not reassembled",
                                                                                   {("c1-veth", "docker0"): 1})):
        caps4 = {"c1-eth0": frames([(T + i, f) for i, f in enumerate(inner)]),
                 "c1-veth": frames([(T + 10 + i, f) for i, f in enumerate(inner)]),
                 "docker0": frames([] if case == "not reassembled" else [(T + 20, whole)]),
                 "uplink": frames([(T + 30 + i, f) for i, f in enumerate(outer)] if case == "cut again" else [])}
        r = build(topo, caps4, ct)
        lost = {(a, e): n for (o, d, a, e), n in r.losses().items()}
        if lost != want:
            print(f"selftest 4 {case}: lost {lost}, want {want}: {[(j.describe(), j.relation) for j in r.journeys]}")
            fails += 1
    print(f"selftest: {'ok' if not fails else f'{fails} failed'}")
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["selftest"]:
        sys.exit(selftest())
    print(__doc__)
    sys.exit(2)
