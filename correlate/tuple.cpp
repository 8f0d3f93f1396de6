#include "correlate/tuple.hpp"

#include <utility>

namespace hoptrace::correlate {

Tuple Tuple::reversed() const noexcept {
    Tuple r = *this;
    std::swap(r.src, r.dst);
    if (!is_icmp()) std::swap(r.sport, r.dport);
    return r;
}

std::string Tuple::to_string() const {
    auto endpoint = [](const IpAddr& a, std::uint16_t port) {
        std::string s;
        if (a.family == 6) s.append("[").append(a.to_string()).append("]");
        else s = a.to_string();
        return s.append(":").append(std::to_string(port));
    };
    if (is_icmp()) return src.to_string() + " → " + dst.to_string() + " id " + std::to_string(sport);
    if (proto == 6 || proto == 17 || proto == 132) return endpoint(src, sport) + " → " + endpoint(dst, dport);
    return src.to_string() + " → " + dst.to_string();
}

std::size_t TupleHash::operator()(const Tuple& t) const noexcept {
    // FNV-1a over the fields; tuples are hashed millions of times, keep it simple and branch-free.
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](std::uint64_t v) {
        h ^= v;
        h *= 1099511628211ULL;
    };
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        a = (a << 8) | (t.src.bytes[i] ^ t.src.bytes[i + 8]);
        b = (b << 8) | (t.dst.bytes[i] ^ t.dst.bytes[i + 8]);
    }
    mix(a);
    mix(b);
    mix((std::uint64_t{t.proto} << 32) | (std::uint64_t{t.sport} << 16) | t.dport);
    return static_cast<std::size_t>(h);
}

unsigned changed_fields(const Tuple& a, const Tuple& b) noexcept {
    if (a.proto != b.proto) return field::k_source_side | field::k_destination_side;
    unsigned m = 0;
    if (a.src != b.src) m |= field::k_src;
    if (a.dst != b.dst) m |= field::k_dst;
    if (a.sport != b.sport) m |= field::k_sport;
    if (a.dport != b.dport) m |= field::k_dport;
    return m;
}

bool one_nat_step(const Tuple& a, const Tuple& b) noexcept {
    if (a.proto != b.proto) return false;
    const unsigned m = changed_fields(a, b);
    return (m & field::k_destination_side) == 0 || (m & field::k_source_side) == 0;
}

const char* field_name(unsigned field_bit, bool icmp) noexcept {
    switch (field_bit) {
        case field::k_src:
            return "src";
        case field::k_dst:
            return "dst";
        case field::k_sport:
            return icmp ? "id" : "sport";
        case field::k_dport:
            return "dport";
        default:
            return "?";
    }
}

}  // namespace hoptrace::correlate
