// The headers of a netfilter trace event (tracer/rule_trace.hpp): the kernel sends the packet's network header (at
// most 40 bytes) and its transport header (at most 20) as the hook saw them. Here real frames of tcpdump captures
// are cut the same way and parsed; tshark, reading the same files, says what the fields are.

#include "tracer/rule_trace.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace hoptrace {
namespace {

class TracedHeaders : public ::testing::TestWithParam<const char*> {};

TEST_P(TracedHeaders, match_what_tshark_reads_in_the_same_frames) {
    const std::string path = test::data_path(GetParam());
    const auto rows = test::tshark_fields(
        path, {"ip.src", "ip.dst", "ip.proto", "ip.id", "ip.len", "ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.plen",
               "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport", "icmp.ident", "icmpv6.echo.identifier",
               "ip.frag_offset", "icmp.type", "icmpv6.type"});
    if (!rows) GTEST_SKIP() << "tshark is not available";
    const auto frames = test::read_frames(GetParam());
    ASSERT_EQ(frames.size(), rows->size());
    std::size_t checked = 0;
    for (std::size_t i = 0; i < frames.size(); ++i) {
        SCOPED_TRACE("frame " + std::to_string(i + 1));
        const auto& t = (*rows)[i];
        const auto& bytes = frames[i].bytes;
        // Behind the Ethernet header and its VLAN tags (802.1Q, 802.1ad), as the kernel hands the hooks the packet.
        std::size_t l3 = 14;
        while (bytes.size() >= l3 + 4 &&
               ((bytes[l3 - 2] == 0x81 && bytes[l3 - 1] == 0x00) || (bytes[l3 - 2] == 0x88 && bytes[l3 - 1] == 0xa8)))
            l3 += 4;
        if (bytes.size() < l3 + 20 || (t[0].empty() && t[5].empty())) continue;
        const std::span<const std::uint8_t> ip(bytes.data() + l3, bytes.size() - l3);
        const std::size_t header = (ip[0] >> 4) == 4 ? static_cast<std::size_t>(ip[0] & 0x0f) * 4 : 40;
        if (ip.size() < header) continue;
        // As the kernel sends them (NFT_TRACETYPE_NETWORK_HSIZE 40, NFT_TRACETYPE_TRANSPORT_HSIZE 20).
        const auto network = ip.first(std::min<std::size_t>(40, ip.size()));
        const auto transport = ip.subspan(header, std::min<std::size_t>(20, ip.size() - header));
        const TracedPacket p = parse_traced_headers(network, transport);
        const bool v4 = !t[0].empty();
        // A quoted packet inside an ICMP error shows up as a second occurrence: the outer header is the first.
        EXPECT_EQ(p.ip_version, v4 ? 4 : 6);
        EXPECT_EQ(p.src.to_string(), test::first_of(v4 ? t[0] : t[5]));
        EXPECT_EQ(p.dst.to_string(), test::first_of(v4 ? t[1] : t[6]));
        const std::uint64_t next = test::number(test::first_of(v4 ? t[2] : t[7]));
        const bool extension = !v4 && (next == 0 || next == 43 || next == 44 || next == 51 || next == 60);
        EXPECT_EQ(p.proto, extension ? 0 : next);  // behind an IPv6 extension header: not known from 40 bytes
        if (v4) {
            EXPECT_EQ(p.ip_id, test::number(test::first_of(t[3])));
            EXPECT_EQ(p.ip_len, test::number(test::first_of(t[4])));
        } else {
            EXPECT_EQ(p.ip_len, test::number(test::first_of(t[8])) + 40);
        }
        const bool later_fragment = v4 && test::number(test::first_of(t[15])) != 0;
        std::string sport = test::first_of(t[9]).empty() ? test::first_of(t[11]) : test::first_of(t[9]);
        std::string dport = test::first_of(t[10]).empty() ? test::first_of(t[12]) : test::first_of(t[10]);
        if (later_fragment || (p.proto != 6 && p.proto != 17)) sport = dport = "";
        const std::string type = test::first_of(v4 ? t[16] : t[17]);
        const bool is_echo = p.proto != 0 && (type == "0" || type == "8" || type == "128" || type == "129");
        const std::string echo = is_echo ? test::first_of(v4 ? t[13] : t[14]) : "";
        if (!sport.empty()) {
            EXPECT_EQ(p.sport, test::number(sport));
            EXPECT_EQ(p.dport, test::number(dport));
        } else if (!echo.empty() && !later_fragment) {
            EXPECT_EQ(p.sport, test::number(echo));  // an echo's id, as in our tuples
            EXPECT_EQ(p.dport, 0);
        } else {
            EXPECT_EQ(p.sport, 0);  // an ICMP error, a later fragment, no known transport
        }
        ++checked;
    }
    EXPECT_GT(checked, 5U);
}

INSTANTIATE_TEST_SUITE_P(Captures, TracedHeaders,
                         ::testing::Values("eth_ipv4.pcap", "eth_ipv6.pcap", "icmp_errors.pcap", "vlan.pcap"));

TEST(TracedHeaders, an_empty_or_short_header_is_no_packet) {
    const std::uint8_t short_v4[10] = {0x45};
    EXPECT_EQ(parse_traced_headers({}, {}).ip_version, 0);
    EXPECT_EQ(parse_traced_headers(short_v4, {}).ip_version, 0);
}

}  // namespace
}  // namespace hoptrace
