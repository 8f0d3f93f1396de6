#include "tracer/fingerprint.hpp"

#include <algorithm>

namespace hoptrace {
namespace {

// 64-bit FNV-1a. Not a cryptographic hash: fingerprints only need to spread well and be stable across
// runs and machines (they are stored), which fixing the byte order of every field below guarantees.
class Fnv1a {
public:
    void add(std::span<const std::uint8_t> bytes) noexcept {
        for (const std::uint8_t b : bytes) {
            m_hash ^= b;
            m_hash *= k_prime;
        }
    }

    template <typename UInt>
    void add_int(UInt value) noexcept {
        for (std::size_t i = 0; i < sizeof(UInt); ++i) {  // least significant byte first, on every host
            m_hash ^= static_cast<std::uint8_t>(value >> (8 * i));
            m_hash *= k_prime;
        }
    }

    [[nodiscard]] std::uint64_t value() const noexcept { return m_hash; }

private:
    static constexpr std::uint64_t k_offset_basis = 0xcbf29ce484222325ULL;
    static constexpr std::uint64_t k_prime = 0x100000001b3ULL;
    std::uint64_t m_hash = k_offset_basis;
};

}  // namespace

std::uint64_t fingerprint(const PacketRecord& record, std::span<const std::uint8_t> frame) noexcept {
    if (record.ip_version == 0) {
        return 0;
    }
    Fnv1a h;
    h.add_int(record.ip_version);
    h.add_int(record.proto);
    h.add_int(record.ip_id);
    h.add_int(record.ip_len);
    if ((record.flags & packet_flag::k_fragment) != 0) {
        // The fragments of one datagram share its id (and, after the first, their length); the offset tells them
        // apart. Hashed for fragments only, so whole packets keep the fingerprints older databases stored.
        h.add_int(record.frag_offset);
        h.add_int(static_cast<std::uint8_t>((record.flags & packet_flag::k_more_fragments) != 0));
    }
    h.add_int(record.icmp_type);
    h.add_int(record.icmp_code);
    h.add_int(record.icmp_seq);
    h.add_int(record.udp_len);
    h.add_int(record.tcp_seq);
    h.add_int(record.tcp_ack);
    h.add_int(record.tcp_flags);
    if ((record.flags & packet_flag::k_icmp_error) != 0) {
        // The quoted packet's addresses and ports are rewritten by NAT on the way back; its id and
        // protocol are not. The rest of the quote is not hashed.
        h.add_int(record.inner_proto);
        h.add_int(record.inner_ip_id);
    } else if (record.payload_offset != 0 && record.payload_offset <= frame.size()) {
        const std::size_t captured = frame.size() - record.payload_offset;
        const std::size_t n = std::min({k_fingerprint_payload_bytes, captured, std::size_t{record.payload_len}});
        h.add(frame.subspan(record.payload_offset, n));
    }
    const std::uint64_t value = h.value();
    return value == 0 ? 1 : value;  // 0 means "not IP"
}

}  // namespace hoptrace
