#pragma once
// The two values that flow from tracer/ to store/: a Frame (captured bytes, a non-owning view) and the
// PacketRecord that dissect() makes of it (fixed-size, owns nothing, cheap to copy and queue).

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace hoptrace {

// Direction of a frame relative to the interface it was captured on, when the source says so
// (Linux cooked header packet type, pcapng epb_flags, PCAP_D_IN/OUT of a live handle).
enum class Direction : std::uint8_t { unknown = 0, inbound = 1, outbound = 2 };

std::string_view to_string(Direction d) noexcept;

// An IPv4 or IPv6 address; family 0 means "none" (a non-IP frame).
struct IpAddr {
    std::uint8_t family = 0;               // 0, 4 or 6
    std::array<std::uint8_t, 16> bytes{};  // IPv4 uses the first 4 bytes, the rest stay zero

    static IpAddr v4(std::span<const std::uint8_t, 4> b) noexcept;
    static IpAddr v6(std::span<const std::uint8_t, 16> b) noexcept;
    // Parses "172.17.0.2" or "2001:db8::1"; nullopt when it is neither.
    static std::optional<IpAddr> parse(std::string_view text);

    [[nodiscard]] bool empty() const noexcept { return family == 0; }
    [[nodiscard]] std::string to_string() const;  // "" for an empty address

    auto operator<=>(const IpAddr&) const = default;  // NOLINT(modernize-use-nullptr): clang-tidy 14 on <=>
};

// Link types we dispatch on (values are the pcap LINKTYPE_* numbers).
enum class LinkType : std::uint32_t {
    ethernet = 1,
    raw = 101,         // LINKTYPE_RAW: starts with an IPv4 or IPv6 header
    linux_sll = 113,   // Linux cooked v1 (tcpdump -i any)
    ipv4 = 228,        // LINKTYPE_IPV4
    ipv6 = 229,        // LINKTYPE_IPV6
    linux_sll2 = 276,  // Linux cooked v2 (tcpdump -i any -y LINUX_SLL2): carries the interface index
};

// Bits of PacketRecord::flags. Malformed traffic is data: we record what we could read and flag it.
// IP protocol numbers of ICMP and ICMPv6: a flow of either has an echo id where others have ports.
inline constexpr std::uint8_t k_proto_icmp = 1;
inline constexpr std::uint8_t k_proto_icmpv6 = 58;
constexpr bool is_icmp(std::int64_t proto) noexcept { return proto == k_proto_icmp || proto == k_proto_icmpv6; }

namespace packet_flag {
inline constexpr std::uint32_t k_truncated = 1U << 0;       // a header we wanted ran past the captured bytes
inline constexpr std::uint32_t k_malformed = 1U << 1;       // a header is invalid (bad version, bad length …)
inline constexpr std::uint32_t k_not_ip = 1U << 2;          // the frame carries no IPv4/IPv6 packet (ARP, LLDP …)
inline constexpr std::uint32_t k_fragment = 1U << 3;        // an IP fragment (offset != 0 or MF set)
inline constexpr std::uint32_t k_icmp_error = 1U << 4;      // ICMP(v6) error; inner_* describe the quoted packet
inline constexpr std::uint32_t k_vlan = 1U << 5;            // at least one 802.1Q/802.1ad tag was removed
inline constexpr std::uint32_t k_snapped = 1U << 6;         // caplen < wirelen (payload cut by the snap length)
inline constexpr std::uint32_t k_more_fragments = 1U << 7;  // an IP fragment with MF set (more follow)
inline constexpr std::uint32_t k_link_fan_out = 1U << 8;    // link-layer broadcast or multicast destination
inline constexpr std::uint32_t k_dont_fragment = 1U << 9;   // IPv4 DF set (IPv6 routers never fragment: not set)
}  // namespace packet_flag

// One captured frame. `bytes` is a view into the source's buffer: valid only until the source reads the
// next frame. Every time is in nanoseconds since the Unix epoch on the kernel's realtime clock.
struct Frame {
    std::int64_t ts_ns = 0;
    std::uint32_t wire_len = 0;  // length on the wire; bytes.size() is the captured length
    LinkType link_type = LinkType::ethernet;
    Direction direction = Direction::unknown;
    std::span<const std::uint8_t> bytes;
};

// What dissect() reads from one frame. Fields that the frame does not carry stay zero; `flags` tells
// why. Ports: TCP/UDP ports; for ICMP/ICMPv6 echo both sport and dport hold the echo identifier, so that
// a flow tuple (src, dst, sport, dport, proto) covers echo the same way as UDP and TCP.
struct PacketRecord {
    std::int64_t ts_ns = 0;
    std::uint32_t point_id = 0;  // filled by the source/importer, not by dissect()
    std::uint32_t cap_len = 0;
    std::uint32_t wire_len = 0;
    std::uint32_t ifindex = 0;  // Linux cooked v2 interface index, else 0
    Direction direction = Direction::unknown;
    std::uint16_t ethertype = 0;  // innermost ethertype (after VLAN tags); 0x0800 for raw IPv4 …
    std::uint16_t vlan = 0;       // outermost VLAN id when k_vlan is set

    std::uint8_t ip_version = 0;  // 0 (not IP), 4 or 6
    std::uint8_t proto = 0;       // IP protocol / IPv6 upper-layer next header (1, 6, 17, 58 …)
    std::uint8_t ttl = 0;         // IPv4 TTL or IPv6 hop limit
    std::uint8_t tcp_flags = 0;
    IpAddr src;
    IpAddr dst;
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;
    std::uint16_t ip_id = 0;        // IPv4 identification; IPv6: the fragment header's (low 16 bits), else 0
    std::uint16_t frag_offset = 0;  // fragment offset in bytes (0 for the first fragment and for whole packets)
    std::uint32_t ip_len = 0;       // IPv4 total length, or IPv6 payload length + 40 (as on the wire, not caplen)
    std::uint32_t flow_label = 0;   // IPv6 only

    std::uint8_t icmp_type = 0;
    std::uint8_t icmp_code = 0;
    std::uint16_t icmp_id = 0;   // echo request/reply only
    std::uint16_t icmp_seq = 0;  // echo request/reply only
    std::uint32_t tcp_seq = 0;
    std::uint32_t tcp_ack = 0;
    std::uint16_t udp_len = 0;
    std::uint32_t icmp_mtu = 0;  // next-hop MTU of ICMP frag-needed / ICMPv6 packet-too-big, else 0

    std::uint32_t l4_offset = 0;       // offset of the transport header in the frame bytes (0 = none)
    std::uint32_t payload_offset = 0;  // offset of the transport payload in the frame bytes (0 = none)
    std::uint32_t payload_len = 0;     // transport payload length per the headers (may exceed what was captured)

    // ICMP errors: the packet quoted inside (valid when flags has k_icmp_error and inner_ip_version != 0).
    std::uint8_t inner_ip_version = 0;
    std::uint8_t inner_proto = 0;
    std::uint8_t inner_ttl = 0;
    IpAddr inner_src;
    IpAddr inner_dst;
    std::uint16_t inner_sport = 0;
    std::uint16_t inner_dport = 0;
    std::uint16_t inner_ip_id = 0;  // IPv4 identification of the quoted packet (NAT leaves it alone)
    std::uint32_t inner_seq = 0;    // quoted ICMP echo sequence or TCP sequence, when has_inner_seq
    bool has_inner_seq = false;

    std::uint32_t flags = 0;        // packet_flag bits
    std::uint64_t fingerprint = 0;  // see tracer/fingerprint.hpp; 0 for frames that are not IP
};

}  // namespace hoptrace
