// libFuzzer target for dissect(). Input: byte 0 picks the link type, byte 1 the direction (low 2 bits) and, in
// its upper 6 bits as a two's complement number from -32 to 31, how many bytes longer than captured the frame was
// on the wire (negative: shorter, which a corrupt file says; tcpdump's aoe-oobr-1.pcap), then the frame.
// Beyond ASan/UBSan, it checks the invariants every PacketRecord must keep.

#include "tracer/dissect.hpp"
#include "tracer/fingerprint.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace {

using hoptrace::LinkType;

constexpr LinkType k_link_types[] = {
    LinkType::ethernet, LinkType::raw,        LinkType::linux_sll,        LinkType::ipv4,
    LinkType::ipv6,     LinkType::linux_sll2, static_cast<LinkType>(147), LinkType::ethernet,
};

void check(bool ok)
{
    if (!ok) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size < 2) {
        return 0;
    }
    // A copy of exactly the frame's bytes, so that ASan catches a read one past the end.
    const std::span<const std::uint8_t> input(data + 2, size - 2);
    hoptrace::Frame frame;
    frame.link_type = k_link_types[data[0] % 8];
    frame.direction = static_cast<hoptrace::Direction>((data[1] & 3) == 3 ? 0 : data[1] & 3);
    const int wire_delta = static_cast<int>(data[1] >> 2) - ((data[1] & 0x80) != 0 ? 64 : 0);
    const auto wire_len = static_cast<std::int64_t>(input.size()) + wire_delta;
    frame.wire_len = static_cast<std::uint32_t>(wire_len < 0 ? 0 : wire_len);
    frame.ts_ns = 42;
    frame.bytes = input;

    const hoptrace::PacketRecord r = hoptrace::dissect(frame);
    check(r.cap_len == input.size());
    check(r.wire_len == std::max<std::uint32_t>(frame.wire_len, r.cap_len));  // never shorter than captured
    check(r.ts_ns == 42);
    check((r.fingerprint == 0) == (r.ip_version == 0));
    check(r.fingerprint == hoptrace::fingerprint(r, input));
    check(r.l4_offset <= r.cap_len);
    check(r.payload_offset <= r.cap_len);
    check(r.payload_offset == 0 || r.payload_offset >= r.l4_offset);
    check(r.ip_version == 0 || r.ip_version == 4 || r.ip_version == 6);
    check(r.src.family == r.ip_version || r.src.empty());
    check(r.dst.family == r.src.family);
    check(r.inner_src.family == r.inner_dst.family);
    check((r.flags & hoptrace::packet_flag::k_snapped) != 0 || r.cap_len >= r.wire_len);
    check(frame.direction == hoptrace::Direction::unknown || r.direction == frame.direction);
    if (r.inner_ip_version != 0) {
        check((r.flags & hoptrace::packet_flag::k_icmp_error) != 0);
    }
    return 0;
}
