// The fingerprint: equal for one packet seen on both sides of a NAT, different for different packets,
// blind to what NAT and forwarding change.

#include "tracer/fingerprint.hpp"

#include "test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace hoptrace {
namespace {

using test::OwnedFrame;
using test::read_frames;

// ---- On real captures across a masquerading router -----------------------------------------------------
// nat_inside.pcap was captured on the client's a0, nat_outside.pcap on the router's r1 (after MASQUERADE),
// at the same time (tests/data/tracer/README.md). Which inside frame is which outside frame is decided by
// tshark, not by us: the IPv4 identification, protocol and total length, which the router keeps.
using PacketKey = std::tuple<std::string, std::string, std::string>;  // ip.id, ip.proto, ip.len

std::vector<std::optional<PacketKey>> tshark_keys(const std::string& name) {
    const auto rows = test::tshark_fields(test::data_path(name), {"ip.id", "ip.proto", "ip.len"});
    std::vector<std::optional<PacketKey>> keys;
    if (!rows) {
        return keys;
    }
    for (const auto& row : *rows) {
        if (row[0].empty()) {
            keys.emplace_back();
        } else {  // an ICMP error lists the quoted header's fields second; the first are the packet's own
            keys.emplace_back(PacketKey{test::first_of(row[0]), test::first_of(row[1]), test::first_of(row[2])});
        }
    }
    return keys;
}

TEST(FingerprintAcrossNat, same_packet_same_fingerprint_on_both_sides) {
    const auto inside = read_frames("nat_inside.pcap");
    const auto outside = read_frames("nat_outside.pcap");
    const auto inside_keys = tshark_keys("nat_inside.pcap");
    const auto outside_keys = tshark_keys("nat_outside.pcap");
    if (inside_keys.empty() || outside_keys.empty()) {
        GTEST_SKIP() << "tshark is not available";
    }
    ASSERT_EQ(inside.size(), inside_keys.size());
    ASSERT_EQ(outside.size(), outside_keys.size());

    std::map<PacketKey, std::size_t> inside_by_key;
    for (std::size_t i = 0; i < inside.size(); ++i) {
        if (inside_keys[i]) {
            inside_by_key[*inside_keys[i]] = i;
        }
    }
    std::size_t pairs = 0;
    bool echo_id_rewritten = false;
    bool udp_port_rewritten = false;
    bool tcp_port_rewritten = false;
    bool icmp_error_rewritten = false;
    for (std::size_t o = 0; o < outside.size(); ++o) {
        if (!outside_keys[o]) {
            continue;
        }
        const auto it = inside_by_key.find(*outside_keys[o]);
        ASSERT_NE(it, inside_by_key.end()) << "outside frame " << o + 1 << " was not seen inside";
        const PacketRecord out = outside[o].record();
        const PacketRecord in = inside[it->second].record();
        SCOPED_TRACE("outside frame " + std::to_string(o + 1) + ", inside frame " + std::to_string(it->second + 1));
        EXPECT_EQ(in.fingerprint, out.fingerprint);
        EXPECT_NE(in.fingerprint, 0U);
        ++pairs;
        // The router changed something in each of them: addresses, and the TTL of what it forwarded.
        EXPECT_TRUE(in.src != out.src || in.dst != out.dst);
        EXPECT_NE(in.ttl, out.ttl);
        echo_id_rewritten = echo_id_rewritten || (in.proto == 1 && in.icmp_type == 8 && in.icmp_id != out.icmp_id);
        udp_port_rewritten = udp_port_rewritten || (in.proto == 17 && in.sport != out.sport);
        tcp_port_rewritten = tcp_port_rewritten || (in.proto == 6 && (in.sport != out.sport || in.dport != out.dport));
        icmp_error_rewritten =
            icmp_error_rewritten || ((in.flags & packet_flag::k_icmp_error) != 0 && in.inner_src != out.inner_src &&
                                     in.inner_sport != out.inner_sport);
    }
    EXPECT_EQ(pairs, 26U);  // every frame of nat_outside.pcap is IPv4 and crossed the router
    EXPECT_TRUE(echo_id_rewritten) << "the second ping's echo id should have been rewritten";
    EXPECT_TRUE(udp_port_rewritten);
    EXPECT_TRUE(tcp_port_rewritten);
    EXPECT_TRUE(icmp_error_rewritten);
}

TEST(FingerprintAcrossNat, both_interfaces_of_the_router_in_one_pcapng) {
    const auto frames = read_frames("router.pcapng");
    std::map<std::uint64_t, std::set<std::uint32_t>> interfaces_by_fingerprint;
    for (const OwnedFrame& f : frames) {
        const PacketRecord r = f.record();
        if (r.ip_version == 4) {
            interfaces_by_fingerprint[r.fingerprint].insert(f.interface);
        }
    }
    // Two echo requests and two replies, each seen once on r0 and once on r1.
    ASSERT_EQ(interfaces_by_fingerprint.size(), 4U);
    for (const auto& [fp, interfaces] : interfaces_by_fingerprint) {
        EXPECT_EQ(interfaces, (std::set<std::uint32_t>{0, 1})) << fp;
    }
}

// Two frames of one capture share a fingerprint only when they carry the very same IP packet (an MLD
// report sent twice), or, a known limit, when both are non-first IPv6 fragments: they have no transport
// header, IPv6 has no IP id, and the fragment header's identification has no field in PacketRecord.
TEST(FingerprintDistinct, different_packets_of_a_capture_differ) {
    for (const char* name : {"eth_ipv4.pcap", "eth_ipv6.pcap", "nat_inside.pcap", "icmp_errors.pcap"}) {
        SCOPED_TRACE(name);
        const auto frames = read_frames(name);
        std::map<std::uint64_t, std::size_t> seen;
        for (std::size_t i = 0; i < frames.size(); ++i) {
            const PacketRecord r = frames[i].record();
            if (r.ip_version == 0) {
                continue;
            }
            const auto [it, inserted] = seen.emplace(r.fingerprint, i);
            if (inserted) {
                continue;
            }
            const OwnedFrame& a = frames[it->second];
            const OwnedFrame& b = frames[i];
            const PacketRecord ra = a.record();
            const bool same_ip_packet =
                std::equal(a.bytes.begin() + 14, a.bytes.end(), b.bytes.begin() + 14, b.bytes.end());
            const bool ipv6_later_fragments =
                r.ip_version == 6 && ra.ip_version == 6 && (r.flags & packet_flag::k_fragment) != 0 &&
                (ra.flags & packet_flag::k_fragment) != 0 && r.l4_offset == 0 && ra.l4_offset == 0;
            EXPECT_TRUE(same_ip_packet || ipv6_later_fragments)
                << "frames " << it->second + 1 << " and " << i + 1 << " share a fingerprint";
        }
        EXPECT_GT(seen.size(), 5U);
    }
}

// ---- What goes in and what stays out -------------------------------------------------------------------

class FingerprintFields : public testing::Test {
protected:
    void SetUp() override {
        const auto frames = read_frames("eth_ipv4.pcap");
        ASSERT_GE(frames.size(), 19U);
        m_echo = frames[5];  // frame 6: ICMP echo request, 56 bytes of payload
        m_tcp = frames[18];  // frame 19: TCP data
    }
    static std::uint64_t fp(const PacketRecord& r, const OwnedFrame& f) { return fingerprint(r, f.bytes); }

    OwnedFrame m_echo;
    OwnedFrame m_tcp;
};

TEST_F(FingerprintFields, ignores_what_nat_and_forwarding_change) {
    const PacketRecord base = m_tcp.record();
    const std::uint64_t expected = fp(base, m_tcp);
    PacketRecord r = base;
    r.src = *IpAddr::parse("192.0.2.1");
    r.dst = *IpAddr::parse("198.51.100.7");
    r.sport = 1;
    r.dport = 2;
    r.ttl = 1;
    r.flow_label = 0xabcde;
    r.ts_ns += 12345;
    r.direction = Direction::outbound;
    r.ifindex = 7;
    r.point_id = 9;
    EXPECT_EQ(fp(r, m_tcp), expected);

    OwnedFrame checksum_changed = m_tcp;  // IP and TCP checksums are headers, not payload
    checksum_changed.bytes[14 + 10] ^= 0xff;
    checksum_changed.bytes[14 + 20 + 16] ^= 0xff;
    EXPECT_EQ(fp(base, checksum_changed), expected);

    PacketRecord echo = m_echo.record();
    const std::uint64_t echo_fp = fp(echo, m_echo);
    echo.icmp_id ^= 0x5555;  // masquerading rewrites the echo id
    EXPECT_EQ(fp(echo, m_echo), echo_fp);
}

TEST_F(FingerprintFields, depends_on_what_stays) {
    const PacketRecord base = m_tcp.record();
    const std::uint64_t expected = fp(base, m_tcp);
    auto changed = [&](auto mutate) {
        PacketRecord r = base;
        mutate(r);
        return fp(r, m_tcp) != expected;
    };
    EXPECT_TRUE(changed([](PacketRecord& r) { r.ip_version = 6; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.proto = 17; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.ip_id ^= 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.ip_len += 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.icmp_type = 8; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.icmp_code = 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.icmp_seq = 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.udp_len = 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.tcp_seq += 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.tcp_ack += 1; }));
    EXPECT_TRUE(changed([](PacketRecord& r) { r.tcp_flags ^= 0x01; }));

    OwnedFrame payload_changed = m_tcp;
    payload_changed.bytes[base.payload_offset] ^= 0x20;  // "hello" -> "Hello"
    EXPECT_NE(fp(base, payload_changed), expected);
}

TEST_F(FingerprintFields, hashes_at_most_the_first_payload_bytes) {
    const PacketRecord echo = m_echo.record();
    ASSERT_EQ(echo.payload_len, 56U);  // shorter than the bound: all of it counts
    OwnedFrame last_byte = m_echo;
    last_byte.bytes.back() ^= 1;
    EXPECT_NE(fp(echo, last_byte), fp(echo, m_echo));

    // A longer payload: bytes past k_fingerprint_payload_bytes do not count.
    OwnedFrame big = m_echo;
    big.bytes.resize(echo.payload_offset + 200, 0xaa);
    PacketRecord r = echo;
    r.payload_len = 200;
    const std::uint64_t base = fp(r, big);
    OwnedFrame after_bound = big;
    after_bound.bytes[echo.payload_offset + k_fingerprint_payload_bytes] ^= 1;
    EXPECT_EQ(fp(r, after_bound), base);
    OwnedFrame inside_bound = big;
    inside_bound.bytes[echo.payload_offset + k_fingerprint_payload_bytes - 1] ^= 1;
    EXPECT_NE(fp(r, inside_bound), base);
}

TEST_F(FingerprintFields, icmp_error_hashes_the_quoted_id_and_protocol_only) {
    const auto frames = read_frames("icmp_errors.pcap");
    const OwnedFrame& f = frames[1];  // port unreachable quoting a UDP datagram
    const PacketRecord base = f.record();
    ASSERT_NE(base.flags & packet_flag::k_icmp_error, 0U);
    const std::uint64_t expected = fp(base, f);

    OwnedFrame quote_rewritten = f;  // NAT rewrites the quoted addresses and ports on the way back
    for (std::size_t i = base.payload_offset + 12; i < f.bytes.size(); ++i) {
        quote_rewritten.bytes[i] ^= 0x5a;
    }
    PacketRecord r = base;
    r.inner_src = *IpAddr::parse("192.0.2.9");
    r.inner_sport = 4;
    r.inner_dport = 5;
    r.inner_ttl = 9;
    EXPECT_EQ(fp(r, quote_rewritten), expected);

    r = base;
    r.inner_ip_id ^= 1;
    EXPECT_NE(fp(r, f), expected);
    r = base;
    r.inner_proto = 6;
    EXPECT_NE(fp(r, f), expected);
}

TEST(Fingerprint, zero_only_for_frames_without_ip) {
    PacketRecord not_ip;
    not_ip.flags = packet_flag::k_not_ip;
    EXPECT_EQ(fingerprint(not_ip, {}), 0U);
    PacketRecord bare_ip;  // everything zero but the version: still an IP packet
    bare_ip.ip_version = 4;
    EXPECT_NE(fingerprint(bare_ip, {}), 0U);
    for (const char* name : {"eth_ipv4.pcap", "eth_ipv6.pcap", "vlan.pcap", "any_sll2.pcap", "merged.pcapng"}) {
        for (const OwnedFrame& f : read_frames(name)) {
            const PacketRecord r = f.record();
            EXPECT_EQ(r.fingerprint == 0, r.ip_version == 0) << name;
        }
    }
}

TEST(Fingerprint, payload_view_out_of_range_is_ignored) {
    PacketRecord r;
    r.ip_version = 4;
    r.payload_offset = 100;
    r.payload_len = 50;
    const std::vector<std::uint8_t> short_frame(20, 1);
    EXPECT_EQ(fingerprint(r, short_frame), fingerprint(r, {}));
}

// The value is stored in databases, so it must not change between versions or machines. Expected values
// computed independently with Python from the documented field order (little-endian, FNV-1a 64):
//   def fnv(b):
//       h = 0xcbf29ce484222325
//       for x in b: h ^= x; h = (h * 0x100000001b3) & 0xffffffffffffffff
//       return h
//   fnv(struct.pack('<BBHIBBHHIIB', 4, 17, 0x1234, 38, 0, 0, 0, 18, 0, 0, 0) + b'datagram 1')
//       == 0x2dfe56e183c95728
//   fnv(struct.pack('<BBHIBBHHIIB', 4, 1, 0x5678, 56, 3, 3, 0, 0, 0, 0, 0) + struct.pack('<BH', 17, 0x9abc))
//       == 0x5512f798b5e7755b
TEST(Fingerprint, stable_values) {
    const std::string payload = "datagram 1";
    std::vector<std::uint8_t> frame(42, 0);
    frame.insert(frame.end(), payload.begin(), payload.end());
    PacketRecord udp;
    udp.ip_version = 4;
    udp.proto = 17;
    udp.ip_id = 0x1234;
    udp.ip_len = 38;
    udp.udp_len = 18;
    udp.sport = 5555;
    udp.payload_offset = 42;
    udp.payload_len = 10;
    EXPECT_EQ(fingerprint(udp, frame), 0x2dfe56e183c95728ULL);

    PacketRecord error;
    error.ip_version = 4;
    error.proto = 1;
    error.ip_id = 0x5678;
    error.ip_len = 56;
    error.icmp_type = 3;
    error.icmp_code = 3;
    error.flags = packet_flag::k_icmp_error;
    error.inner_proto = 17;
    error.inner_ip_id = 0x9abc;
    error.payload_offset = 42;  // the quote: not hashed
    error.payload_len = 10;
    EXPECT_EQ(fingerprint(error, frame), 0x5512f798b5e7755bULL);
}

}  // namespace
}  // namespace hoptrace
