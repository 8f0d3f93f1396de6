#pragma once
// dissect(): bytes of one frame -> PacketRecord. Non-owning views over the frame; the length is checked
// before every header; nothing reads past frame.bytes. Malformed or truncated frames come back with what
// could be read and packet_flag bits set; dissect never throws and never crashes on any input.

#include "tracer/packet.hpp"

namespace hoptrace {

// Dispatches once on frame.link_type (Ethernet with 802.1Q/802.1ad tags, Linux cooked v1/v2, raw IP),
// then IPv4/IPv6 (IPv6 extension headers skipped), ICMP/ICMPv6 (echo; errors with their quoted packet),
// UDP, TCP. Sets every field of PacketRecord except point_id, including fingerprint.
PacketRecord dissect(const Frame& frame) noexcept;

}  // namespace hoptrace
