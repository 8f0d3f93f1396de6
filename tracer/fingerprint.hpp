#pragma once
// The fingerprint: how one packet is recognised at every capture point. NAT rewrites addresses, ports,
// the ICMP echo id and checksums; forwarding decrements the TTL. The fingerprint hashes only what stays:
// IP version, protocol, IPv4 identification, IP length, a fragment's offset and MF bit, ICMP type/code/seq, UDP length,
// TCP seq/ack/flags, and the first k_fingerprint_payload_bytes bytes of the transport payload that were captured. For
// ICMP errors the quoted packet's IP id and protocol are hashed as well (its addresses are NATed).

#include "tracer/packet.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

namespace hoptrace {

inline constexpr std::size_t k_fingerprint_payload_bytes = 64;

// `frame` is the frame the record was dissected from (for the payload bytes). Returns 0 only for frames
// that carry no IP packet; an IP packet never gets 0.
std::uint64_t fingerprint(const PacketRecord& record, std::span<const std::uint8_t> frame) noexcept;

}  // namespace hoptrace
