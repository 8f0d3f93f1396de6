#pragma once
// The flow tuple of one sighting and how two tuples of the same packet differ (what NAT rewrote).

#include "tracer/packet.hpp"

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace hoptrace::correlate {

// (proto, src, dst, sport, dport). For ICMP/ICMPv6 echo `sport` holds the echo identifier and `dport` is 0,
// so that NAT's id rewrite looks like a source-port rewrite and reversed() keeps the id where it is.
struct Tuple {
    std::uint8_t proto = 0;
    IpAddr src;
    IpAddr dst;
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;

    [[nodiscard]] bool is_icmp() const noexcept { return hoptrace::is_icmp(proto); }
    // The tuple of a packet going the other way: addresses (and ports) swapped; an ICMP id stays put.
    [[nodiscard]] Tuple reversed() const noexcept;
    [[nodiscard]] std::string to_string() const;  // "172.17.0.2:40000 → 198.51.100.10:5353", "… id 7777"

    auto operator<=>(const Tuple&) const = default;
};

struct TupleHash {
    std::size_t operator()(const Tuple& t) const noexcept;
};

// Bits naming the tuple fields NAT can rewrite.
namespace field {
inline constexpr unsigned k_src = 1U << 0;
inline constexpr unsigned k_dst = 1U << 1;
inline constexpr unsigned k_sport = 1U << 2;  // the echo id for ICMP
inline constexpr unsigned k_dport = 1U << 3;
inline constexpr unsigned k_source_side = k_src | k_sport;
inline constexpr unsigned k_destination_side = k_dst | k_dport;
}  // namespace field

// Which fields differ between `a` and `b` (0 = identical). Different protocols differ in every field.
unsigned changed_fields(const Tuple& a, const Tuple& b) noexcept;

// True when one NAT step can turn `a` into `b`: same protocol and only one side (source or destination)
// rewritten — masquerade/SNAT rewrites the source, DNAT the destination.
bool one_nat_step(const Tuple& a, const Tuple& b) noexcept;

// The report's name of a changed field: "src", "dst", "sport", "dport", or "id" for an ICMP echo id.
const char* field_name(unsigned field_bit, bool icmp) noexcept;

}  // namespace hoptrace::correlate
