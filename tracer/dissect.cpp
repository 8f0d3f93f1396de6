#include "tracer/dissect.hpp"

#include "tracer/fingerprint.hpp"
#include "tracer/wire.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace hoptrace {
namespace {

using wire::be16;
using wire::be32;
using wire::Bytes;
using wire::u8;

constexpr std::size_t k_no_limit = std::numeric_limits<std::size_t>::max();

constexpr std::uint16_t k_ethertype_ipv4 = 0x0800;
constexpr std::uint16_t k_ethertype_ipv6 = 0x86dd;
constexpr std::uint16_t k_ethertype_vlan = 0x8100;      // 802.1Q
constexpr std::uint16_t k_ethertype_qinq = 0x88a8;      // 802.1ad service tag
constexpr std::uint16_t k_ethertype_qinq_old = 0x9100;  // pre-standard QinQ, still seen in the wild

constexpr std::size_t k_ethernet_header = 14;
constexpr std::size_t k_vlan_tag = 4;
constexpr std::size_t k_sll_header = 16;
constexpr std::size_t k_sll2_header = 20;
constexpr std::size_t k_ipv4_header = 20;
constexpr std::size_t k_ipv6_header = 40;
constexpr std::size_t k_icmp_header = 8;
constexpr std::size_t k_udp_header = 8;
constexpr std::size_t k_tcp_header = 20;
constexpr std::size_t k_ports = 4;

constexpr std::uint8_t k_proto_hopopts = 0;
constexpr std::uint8_t k_proto_tcp = 6;
constexpr std::uint8_t k_proto_udp = 17;
constexpr std::uint8_t k_proto_routing = 43;
constexpr std::uint8_t k_proto_fragment = 44;
constexpr std::uint8_t k_proto_no_next = 59;
constexpr std::uint8_t k_proto_dstopts = 60;

// Linux packet types as they appear in the cooked headers: PACKET_HOST 0, PACKET_BROADCAST 1,
// PACKET_MULTICAST 2, PACKET_OTHERHOST 3 (all received), PACKET_OUTGOING 4.
constexpr std::uint16_t k_packet_broadcast = 1;
constexpr std::uint16_t k_packet_multicast = 2;
constexpr std::uint16_t k_packet_otherhost = 3;
constexpr std::uint16_t k_packet_outgoing = 4;

bool is_vlan_tpid(std::uint16_t ethertype) noexcept {
    return ethertype == k_ethertype_vlan || ethertype == k_ethertype_qinq || ethertype == k_ethertype_qinq_old;
}

bool is_icmpv4_error(std::uint8_t type) noexcept {
    // 3 destination unreachable, 4 source quench, 5 redirect, 11 time exceeded, 12 parameter problem.
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

bool is_icmpv6_error(std::uint8_t type) noexcept {
    // 1 destination unreachable, 2 packet too big, 3 time exceeded, 4 parameter problem.
    return type >= 1 && type <= 4;
}

bool is_echo(std::uint8_t proto, std::uint8_t type) noexcept {
    return proto == k_proto_icmp ? (type == 8 || type == 0) : (type == 128 || type == 129);
}

Direction direction_of_packet_type(std::uint16_t packet_type) noexcept {
    if (packet_type <= k_packet_otherhost) {
        return Direction::inbound;  // to us, broadcast, multicast, to another host
    }
    if (packet_type == k_packet_outgoing) {
        return Direction::outbound;
    }
    return Direction::unknown;  // loopback, fastroute …: neither in nor out in a meaningful way
}

// Where the IPv6 extension-header chain ended.
struct Ipv6Chain {
    bool complete = false;          // false: a header ran past the data (the flag is already set)
    std::size_t offset = 0;         // of the upper-layer header
    std::uint8_t next_header = 0;   // the upper-layer protocol (or the header we could not get past)
    bool fragment = false;          // a fragment header with offset != 0 or M set
    bool later_fragment = false;    // fragment offset != 0: no upper-layer header in this packet
    bool more_fragments = false;    // M set in the (last) fragment header
    std::uint16_t frag_offset = 0;  // its fragment offset, in bytes
    std::uint32_t frag_id = 0;      // its identification
};

// One dissection. Offsets are into the frame bytes. Each header is checked with need() before it is
// read: `end` is where the enclosing header says the data ends (IP total length; k_no_limit at the link
// layer), which may lie beyond what was captured.
class Dissector {
public:
    Dissector(const Frame& frame, PacketRecord& record) noexcept
        : m_bytes(
              frame.bytes.first(std::min<std::size_t>(frame.bytes.size(), std::numeric_limits<std::uint32_t>::max()))),
          m_wire(std::max<std::size_t>(frame.wire_len, m_bytes.size())),
          m_rec(record) {}

    void run(LinkType link_type) noexcept {
        switch (link_type) {
            case LinkType::ethernet:
                ethernet();
                return;
            case LinkType::linux_sll:
                linux_sll();
                return;
            case LinkType::linux_sll2:
                linux_sll2();
                return;
            case LinkType::raw:
                raw_ip();
                return;
            case LinkType::ipv4:
                m_rec.ethertype = k_ethertype_ipv4;
                ipv4(0);
                return;
            case LinkType::ipv6:
                m_rec.ethertype = k_ethertype_ipv6;
                ipv6(0);
                return;
        }
        m_rec.flags |= packet_flag::k_not_ip;  // a link type we do not know: we cannot find an IP header
    }

private:
    // true when [offset, offset + size) may be read. Otherwise flags why not: past `end` means the
    // enclosing header leaves no room for this one (malformed); past the capture means it was cut (truncated).
    bool need(std::size_t offset, std::size_t size, std::size_t end) noexcept {
        if (offset > end || size > end - offset) {
            m_rec.flags |= packet_flag::k_malformed;
            return false;
        }
        if (!wire::fits(m_bytes, offset, size)) {
            m_rec.flags |= packet_flag::k_truncated;
            return false;
        }
        return true;
    }

    void ethernet() noexcept {
        if (!need(0, k_ethernet_header, k_no_limit)) {
            return;
        }
        if ((u8(m_bytes, 0) & 1U) != 0) {
            m_rec.flags |= packet_flag::k_link_fan_out;  // group bit of the destination MAC: broadcast or multicast
        }
        network(be16(m_bytes, 12), k_ethernet_header);
    }

    void linux_sll() noexcept {
        // packet type(2) ARPHRD(2) address length(2) address(8) protocol(2)
        if (!need(0, k_sll_header, k_no_limit)) {
            return;
        }
        set_direction(direction_of_packet_type(be16(m_bytes, 0)));
        link_fan_out(be16(m_bytes, 0));
        network(be16(m_bytes, 14), k_sll_header);
    }

    void linux_sll2() noexcept {
        // protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) address length(1) address(8)
        if (!need(0, k_sll2_header, k_no_limit)) {
            return;
        }
        m_rec.ifindex = be32(m_bytes, 4);
        set_direction(direction_of_packet_type(u8(m_bytes, 10)));
        link_fan_out(u8(m_bytes, 10));
        network(be16(m_bytes, 0), k_sll2_header);
    }

    void raw_ip() noexcept {
        if (!need(0, 1, k_no_limit)) {
            return;
        }
        switch (u8(m_bytes, 0) >> 4) {
            case 4:
                m_rec.ethertype = k_ethertype_ipv4;
                ipv4(0);
                return;
            case 6:
                m_rec.ethertype = k_ethertype_ipv6;
                ipv6(0);
                return;
            default:
                m_rec.flags |= packet_flag::k_malformed;
        }
    }

    // A cooked header keeps no destination address, only the packet type: broadcast (1) or multicast (2) for
    // frames received; frames sent say "outgoing" whatever their destination.
    void link_fan_out(std::uint16_t packet_type) noexcept {
        if (packet_type == k_packet_broadcast || packet_type == k_packet_multicast) {
            m_rec.flags |= packet_flag::k_link_fan_out;
        }
    }

    void set_direction(Direction d) noexcept {
        if (m_rec.direction == Direction::unknown) {
            m_rec.direction = d;
        }
    }

    // `ethertype` is the type field just read; VLAN tags (any number) follow it at `offset`.
    void network(std::uint16_t ethertype, std::size_t offset) noexcept {
        while (is_vlan_tpid(ethertype)) {
            if (!need(offset, k_vlan_tag, k_no_limit)) {
                m_rec.ethertype = ethertype;
                return;
            }
            if ((m_rec.flags & packet_flag::k_vlan) == 0) {
                m_rec.flags |= packet_flag::k_vlan;
                m_rec.vlan = be16(m_bytes, offset) & 0x0fff;
            }
            ethertype = be16(m_bytes, offset + 2);
            offset += k_vlan_tag;
        }
        m_rec.ethertype = ethertype;
        if (ethertype == k_ethertype_ipv4) {
            ipv4(offset);
        } else if (ethertype == k_ethertype_ipv6) {
            ipv6(offset);
        } else {
            m_rec.flags |= packet_flag::k_not_ip;
        }
    }

    // Bytes the frame had on the wire from `offset` on (at least what was captured).
    [[nodiscard]] std::size_t wire_from(std::size_t offset) const noexcept {
        return offset <= m_wire ? m_wire - offset : 0;
    }

    void ipv4(std::size_t offset) noexcept {
        if (!need(offset, 1, k_no_limit)) {
            return;
        }
        if ((u8(m_bytes, offset) >> 4) != 4) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        m_rec.ip_version = 4;
        if (!need(offset, k_ipv4_header, k_no_limit)) {
            return;
        }
        const std::size_t header_len = static_cast<std::size_t>(u8(m_bytes, offset) & 0x0f) * 4;
        std::size_t total_len = be16(m_bytes, offset + 2);
        const std::uint16_t fragment = be16(m_bytes, offset + 6);
        m_rec.ip_id = be16(m_bytes, offset + 4);
        m_rec.ttl = u8(m_bytes, offset + 8);
        m_rec.proto = u8(m_bytes, offset + 9);
        m_rec.src = IpAddr::v4(m_bytes.subspan(offset + 12).first<4>());
        m_rec.dst = IpAddr::v4(m_bytes.subspan(offset + 16).first<4>());
        if (total_len == 0 && wire_from(offset) > k_ipv4_header) {
            // A TSO/BIG TCP super-packet seen before segmentation: the kernel leaves the total length 0
            // and the length is that of the frame (Wireshark reads it the same way).
            total_len = wire_from(offset);
        }
        m_rec.ip_len = static_cast<std::uint32_t>(total_len);
        if (header_len < k_ipv4_header || total_len < header_len) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        if (total_len > wire_from(offset)) {
            m_rec.flags |= packet_flag::k_malformed;  // claims more than the frame carried; parse what is there
        }
        const std::size_t end = offset + total_len;
        if (!need(offset, header_len, end)) {
            return;
        }
        const bool more_fragments = (fragment & 0x2000) != 0;
        const std::uint16_t fragment_offset = fragment & 0x1fff;
        if (more_fragments || fragment_offset != 0) {
            m_rec.flags |= packet_flag::k_fragment;
        }
        if (more_fragments) {
            m_rec.flags |= packet_flag::k_more_fragments;
        }
        if ((fragment & 0x4000) != 0) {
            m_rec.flags |= packet_flag::k_dont_fragment;
        }
        m_rec.frag_offset = static_cast<std::uint16_t>(fragment_offset * 8U);
        if (fragment_offset != 0) {
            return;  // no transport header in a later fragment
        }
        transport(m_rec.proto, offset + header_len, end);
    }

    // Walks hop-by-hop, routing, fragment and destination options headers from `offset` (just after the
    // fixed IPv6 header) to the upper-layer header.
    Ipv6Chain ipv6_chain(std::uint8_t next_header, std::size_t offset, std::size_t end) noexcept {
        Ipv6Chain chain;
        for (;;) {
            chain.next_header = next_header;
            chain.offset = offset;
            if (next_header == k_proto_hopopts || next_header == k_proto_routing || next_header == k_proto_dstopts) {
                if (!need(offset, 2, end)) {
                    return chain;
                }
                const std::size_t len = (static_cast<std::size_t>(u8(m_bytes, offset + 1)) + 1) * 8;
                if (!need(offset, len, end)) {
                    return chain;
                }
                next_header = u8(m_bytes, offset);
                offset += len;
            } else if (next_header == k_proto_fragment) {
                if (!need(offset, 8, end)) {
                    return chain;
                }
                // fragment offset (13 bits) | reserved (2) | M (1)
                const std::uint16_t offset_and_m = be16(m_bytes, offset + 2);
                chain.fragment = chain.fragment || (offset_and_m & 0xfff9) != 0;
                chain.more_fragments = (offset_and_m & 1U) != 0;
                chain.frag_offset = static_cast<std::uint16_t>(offset_and_m & 0xfff8);
                chain.frag_id = be32(m_bytes, offset + 4);
                next_header = u8(m_bytes, offset);
                offset += 8;
                if ((offset_and_m & 0xfff8) != 0) {
                    chain.later_fragment = true;
                    chain.next_header = next_header;
                    chain.offset = offset;
                    return chain;
                }
            } else {
                chain.complete = true;
                return chain;
            }
        }
    }

    void ipv6(std::size_t offset) noexcept {
        if (!need(offset, 1, k_no_limit)) {
            return;
        }
        if ((u8(m_bytes, offset) >> 4) != 6) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        m_rec.ip_version = 6;
        if (!need(offset, k_ipv6_header, k_no_limit)) {
            return;
        }
        m_rec.flow_label = be32(m_bytes, offset) & 0x000fffff;
        std::size_t total_len = static_cast<std::size_t>(be16(m_bytes, offset + 4)) + k_ipv6_header;
        const std::uint8_t next_header = u8(m_bytes, offset + 6);
        m_rec.ttl = u8(m_bytes, offset + 7);
        m_rec.src = IpAddr::v6(m_bytes.subspan(offset + 8).first<16>());
        m_rec.dst = IpAddr::v6(m_bytes.subspan(offset + 24).first<16>());
        m_rec.proto = next_header;
        if (total_len == k_ipv6_header && next_header != k_proto_no_next && wire_from(offset) > k_ipv6_header) {
            // Payload length 0 with something after the header: a jumbogram or a BIG TCP super-packet,
            // whose length is that of the frame.
            total_len = wire_from(offset);
        }
        m_rec.ip_len = static_cast<std::uint32_t>(total_len);
        if (total_len > wire_from(offset)) {
            m_rec.flags |= packet_flag::k_malformed;  // claims more than the frame carried; parse what is there
        }
        const std::size_t end = offset + total_len;
        const Ipv6Chain chain = ipv6_chain(next_header, offset + k_ipv6_header, end);
        m_rec.proto = chain.next_header;
        if (chain.fragment) {
            m_rec.flags |= packet_flag::k_fragment;
            m_rec.ip_id = static_cast<std::uint16_t>(chain.frag_id);
            m_rec.frag_offset = chain.frag_offset;
            if (chain.more_fragments) {
                m_rec.flags |= packet_flag::k_more_fragments;
            }
        }
        if (!chain.complete || chain.later_fragment) {
            return;
        }
        transport(chain.next_header, chain.offset, end);
    }

    void transport(std::uint8_t proto, std::size_t offset, std::size_t end) noexcept {
        switch (proto) {
            case k_proto_icmp:
            case k_proto_icmpv6:
                icmp(proto, offset, end);
                return;
            case k_proto_udp:
                udp(offset, end);
                return;
            case k_proto_tcp:
                tcp(offset, end);
                return;
            default:
                // Other protocols (SCTP, GRE, ESP …): we do not know where their payload starts, and NAT may
                // rewrite their first bytes, so they have no payload here and fingerprint by IP fields only.
                m_rec.l4_offset = static_cast<std::uint32_t>(offset);
                return;
        }
    }

    void set_payload(std::size_t offset, std::size_t end) noexcept {
        m_rec.payload_offset = static_cast<std::uint32_t>(offset);
        m_rec.payload_len = static_cast<std::uint32_t>(end - offset);
    }

    void icmp(std::uint8_t proto, std::size_t offset, std::size_t end) noexcept {
        m_rec.l4_offset = static_cast<std::uint32_t>(offset);
        if (!need(offset, 2, end)) {
            return;
        }
        const std::uint8_t type = u8(m_bytes, offset);
        m_rec.icmp_type = type;
        m_rec.icmp_code = u8(m_bytes, offset + 1);
        const bool error = proto == k_proto_icmp ? is_icmpv4_error(type) : is_icmpv6_error(type);
        if (error) {
            m_rec.flags |= packet_flag::k_icmp_error;
        }
        if (!need(offset, k_icmp_header, end)) {
            return;
        }
        set_payload(offset + k_icmp_header, end);
        if (is_echo(proto, type)) {
            m_rec.icmp_id = be16(m_bytes, offset + 4);
            m_rec.icmp_seq = be16(m_bytes, offset + 6);
            m_rec.sport = m_rec.icmp_id;
            m_rec.dport = m_rec.icmp_id;
        } else if (error) {
            // The next-hop MTU: ICMP destination unreachable, fragmentation needed (RFC 1191: bytes 6-7) and
            // ICMPv6 packet too big (RFC 4443: bytes 4-7).
            if (proto == k_proto_icmp && type == 3 && m_rec.icmp_code == 4) {
                m_rec.icmp_mtu = be16(m_bytes, offset + 6);
            } else if (proto != k_proto_icmp && type == 2) {
                m_rec.icmp_mtu = be32(m_bytes, offset + 4);
            }
            if (proto == k_proto_icmp) {
                quoted_ipv4(offset + k_icmp_header, end);
            } else {
                quoted_ipv6(offset + k_icmp_header, end);
            }
        }
    }

    // The packet an ICMP error quotes: its IP header and the first bytes of its transport header. Its own
    // length fields describe the original packet, not the quote, so only `end` (the error's) bounds it.
    void quoted_ipv4(std::size_t offset, std::size_t end) noexcept {
        if (!need(offset, 1, end)) {
            return;
        }
        if ((u8(m_bytes, offset) >> 4) != 4) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        m_rec.inner_ip_version = 4;
        if (!need(offset, k_ipv4_header, end)) {
            return;
        }
        const std::size_t header_len = static_cast<std::size_t>(u8(m_bytes, offset) & 0x0f) * 4;
        m_rec.inner_ip_id = be16(m_bytes, offset + 4);
        m_rec.inner_ttl = u8(m_bytes, offset + 8);
        m_rec.inner_proto = u8(m_bytes, offset + 9);
        m_rec.inner_src = IpAddr::v4(m_bytes.subspan(offset + 12).first<4>());
        m_rec.inner_dst = IpAddr::v4(m_bytes.subspan(offset + 16).first<4>());
        if (header_len < k_ipv4_header) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        if (!need(offset, header_len, end)) {
            return;
        }
        if ((be16(m_bytes, offset + 6) & 0x1fff) != 0) {
            return;  // the quoted packet was a later fragment: no transport header to read
        }
        quoted_transport(m_rec.inner_proto, offset + header_len, end);
    }

    void quoted_ipv6(std::size_t offset, std::size_t end) noexcept {
        if (!need(offset, 1, end)) {
            return;
        }
        if ((u8(m_bytes, offset) >> 4) != 6) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        m_rec.inner_ip_version = 6;
        if (!need(offset, k_ipv6_header, end)) {
            return;
        }
        const std::uint8_t next_header = u8(m_bytes, offset + 6);
        m_rec.inner_proto = next_header;
        m_rec.inner_ttl = u8(m_bytes, offset + 7);
        m_rec.inner_src = IpAddr::v6(m_bytes.subspan(offset + 8).first<16>());
        m_rec.inner_dst = IpAddr::v6(m_bytes.subspan(offset + 24).first<16>());
        const Ipv6Chain chain = ipv6_chain(next_header, offset + k_ipv6_header, end);
        m_rec.inner_proto = chain.next_header;
        if (!chain.complete || chain.later_fragment) {
            return;
        }
        quoted_transport(chain.next_header, chain.offset, end);
    }

    void quoted_transport(std::uint8_t proto, std::size_t offset, std::size_t end) noexcept {
        if (proto == k_proto_udp || proto == k_proto_tcp) {
            if (need(offset, k_ports, end)) {
                m_rec.inner_sport = be16(m_bytes, offset);
                m_rec.inner_dport = be16(m_bytes, offset + 2);
            }
            if (proto == k_proto_tcp && need(offset, 8, end)) {
                m_rec.inner_seq = be32(m_bytes, offset + 4);
                m_rec.has_inner_seq = true;
            }
        } else if (proto == k_proto_icmp || proto == k_proto_icmpv6) {
            if (need(offset, 6, end) && is_echo(proto, u8(m_bytes, offset))) {
                m_rec.inner_sport = be16(m_bytes, offset + 4);
                m_rec.inner_dport = m_rec.inner_sport;
                if (need(offset, 8, end)) {
                    m_rec.inner_seq = be16(m_bytes, offset + 6);
                    m_rec.has_inner_seq = true;
                }
            }
        }
    }

    void udp(std::size_t offset, std::size_t end) noexcept {
        m_rec.l4_offset = static_cast<std::uint32_t>(offset);
        if (!need(offset, k_ports, end)) {
            return;
        }
        m_rec.sport = be16(m_bytes, offset);
        m_rec.dport = be16(m_bytes, offset + 2);
        if (!need(offset, k_udp_header, end)) {
            return;
        }
        m_rec.udp_len = be16(m_bytes, offset + 4);
        // 0 is what a jumbogram or a UDP GSO super-packet carries; otherwise the length covers the header
        // and fits in the IP packet — unless this is the first fragment, which holds only part of the datagram.
        const bool first_fragment = (m_rec.flags & packet_flag::k_fragment) != 0;
        if (m_rec.udp_len != 0 && (m_rec.udp_len < k_udp_header || (!first_fragment && m_rec.udp_len > end - offset))) {
            m_rec.flags |= packet_flag::k_malformed;
        }
        set_payload(offset + k_udp_header, end);
    }

    void tcp(std::size_t offset, std::size_t end) noexcept {
        m_rec.l4_offset = static_cast<std::uint32_t>(offset);
        if (!need(offset, k_ports, end)) {
            return;
        }
        m_rec.sport = be16(m_bytes, offset);
        m_rec.dport = be16(m_bytes, offset + 2);
        if (!need(offset, k_tcp_header, end)) {
            return;
        }
        m_rec.tcp_seq = be32(m_bytes, offset + 4);
        m_rec.tcp_ack = be32(m_bytes, offset + 8);
        m_rec.tcp_flags = u8(m_bytes, offset + 13);
        const std::size_t header_len = static_cast<std::size_t>(u8(m_bytes, offset + 12) >> 4) * 4;
        if (header_len < k_tcp_header) {
            m_rec.flags |= packet_flag::k_malformed;
            return;
        }
        if (!need(offset, header_len, end)) {
            return;
        }
        set_payload(offset + header_len, end);
    }

    Bytes m_bytes;
    std::size_t m_wire;  // length on the wire, at least the captured length
    PacketRecord& m_rec;
};

}  // namespace

PacketRecord dissect(const Frame& frame) noexcept {
    PacketRecord record;
    record.ts_ns = frame.ts_ns;
    record.cap_len = static_cast<std::uint32_t>(
        std::min<std::size_t>(frame.bytes.size(), std::numeric_limits<std::uint32_t>::max()));
    // A frame is never shorter on the wire than captured; a file that says so (tcpdump's aoe-oobr-1.pcap) is
    // taken at its captured length, like m_wire below.
    record.wire_len = std::max(frame.wire_len, record.cap_len);
    record.direction = frame.direction;

    Dissector(frame, record).run(frame.link_type);

    // Snapped: the capture kept fewer bytes than the wire had. A payload that runs past the capture of a
    // packet whose lengths are sound was cut too, even when the source did not report the wire length.
    const bool payload_cut = record.payload_offset != 0 && (record.flags & packet_flag::k_malformed) == 0 &&
                             static_cast<std::uint64_t>(record.payload_offset) + record.payload_len > record.cap_len;
    if (record.cap_len < record.wire_len || payload_cut) {
        record.flags |= packet_flag::k_snapped;
    }
    record.fingerprint = fingerprint(record, frame.bytes);
    return record;
}

}  // namespace hoptrace
