// dissect() on real captures (tests/data/tracer, made as its README says) and on hand-built malformed
// frames. Expected values of the real frames come from tshark; each block names the command. Frame
// numbers are tshark's (1-based). Common options: T="tshark -n -o ip.defragment:FALSE -o ipv6.defragment:FALSE"

#include "tracer/dissect.hpp"
#include "tracer/fingerprint.hpp"

#include "test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace hoptrace {
namespace {

using test::OwnedFrame;
using test::read_frames;

constexpr std::uint32_t k_bad = packet_flag::k_truncated | packet_flag::k_malformed;

const OwnedFrame& frame_no(const std::vector<OwnedFrame>& frames, std::size_t number) {
    static const OwnedFrame k_none;
    EXPECT_LE(number, frames.size());
    return number <= frames.size() ? frames[number - 1] : k_none;
}

std::string payload_text(const OwnedFrame& f, const PacketRecord& r) {
    const auto* begin = f.bytes.data() + r.payload_offset;
    return std::string(begin, begin + std::min<std::size_t>(r.payload_len, f.bytes.size() - r.payload_offset));
}

IpAddr ip(std::string_view text) {
    const auto a = IpAddr::parse(text);
    EXPECT_TRUE(a) << text;
    return a.value_or(IpAddr{});
}

// ---- Ethernet, IPv4 ------------------------------------------------------------------------------------
// $T -r eth_ipv4.pcap -Y "frame.number in {4,6,13,16,19,26,27}" -T fields -E separator='|' -e frame.number
//    -e eth.type -e ip.src -e ip.dst -e ip.id -e ip.len -e ip.ttl -e ip.flags.mf -e ip.frag_offset -e icmp.type
//    -e icmp.ident -e icmp.seq -e udp.srcport -e udp.dstport -e udp.length -e tcp.seq_raw -e tcp.ack_raw
//    -e tcp.flags -e tcp.hdr_len -e tcp.payload -e udp.payload
// 4|0x0806|||||||||||||||||||
// 6|0x0800|10.99.1.2|10.99.2.2|0xca91|84|64|0|0|8|31699|1|||||||||
// 13|0x0800|10.99.1.2|10.99.2.2|0xa2cd|38|64|0|0||||5555|5000|18||||||646174616772616d2031
// 16|0x0800|10.99.1.2|10.99.2.2|0x1949|60|64|0|0|||||||1820340413|0|0x0002|40||
// 19|0x0800|10.99.1.2|10.99.2.2|0x194b|66|64|0|0|||||||1820340414|1931930696|0x0018|32|68656c6c6f206f76657220746370|
// 26|0x0800|10.99.1.2|10.99.2.2|0xcadd|1500|64|1|0|8|31713|1|||||||||
// 27|0x0800|10.99.1.2|10.99.2.2|0xcadd|548|64|0|185||||||||||||
// The DF bit and the destination MAC's group bit of the same frames:
// $T -r eth_ipv4.pcap -Y "frame.number in {4,6,13,16,19,26,27}" -T fields -E separator='|' -e frame.number
//    -e ip.flags.df -e ip.flags.mf -e eth.dst.ig
// 4|||1   6|1|0|0   13|1|0|0   16|1|0|0   19|1|0|0   26|0|1|0   27|0|0|0

TEST(DissectEthernet, arp_is_recorded_as_not_ip) {
    const auto frames = read_frames("eth_ipv4.pcap");
    const PacketRecord r = frame_no(frames, 4).record();
    EXPECT_EQ(r.ethertype, 0x0806);
    EXPECT_EQ(r.flags, packet_flag::k_not_ip | packet_flag::k_link_fan_out);  // an ARP request goes to ff:ff:…
    EXPECT_EQ(r.ip_version, 0);
    EXPECT_TRUE(r.src.empty());
    EXPECT_EQ(r.fingerprint, 0U);
    EXPECT_EQ(r.cap_len, 42U);
}

TEST(DissectEthernet, icmp_echo_request) {
    const auto frames = read_frames("eth_ipv4.pcap");
    const PacketRecord r = frame_no(frames, 6).record();
    EXPECT_EQ(r.flags, packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(r.ethertype, 0x0800);
    EXPECT_EQ(r.ip_version, 4);
    EXPECT_EQ(r.src, ip("10.99.1.2"));
    EXPECT_EQ(r.dst, ip("10.99.2.2"));
    EXPECT_EQ(r.ip_id, 0xca91);
    EXPECT_EQ(r.ip_len, 84U);
    EXPECT_EQ(r.ttl, 64);
    EXPECT_EQ(r.proto, 1);
    EXPECT_EQ(r.icmp_type, 8);
    EXPECT_EQ(r.icmp_code, 0);
    EXPECT_EQ(r.icmp_id, 31699);
    EXPECT_EQ(r.icmp_seq, 1);
    EXPECT_EQ(r.sport, 31699);  // echo id in both ports, so the flow tuple covers echo like UDP
    EXPECT_EQ(r.dport, 31699);
    EXPECT_EQ(r.l4_offset, 34U);
    EXPECT_EQ(r.payload_offset, 42U);
    EXPECT_EQ(r.payload_len, 56U);  // ping -s default
    EXPECT_EQ(r.direction, Direction::unknown);
    EXPECT_NE(r.fingerprint, 0U);
}

TEST(DissectEthernet, udp_datagram) {
    const auto frames = read_frames("eth_ipv4.pcap");
    const OwnedFrame& f = frame_no(frames, 13);
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(r.proto, 17);
    EXPECT_EQ(r.ip_id, 0xa2cd);
    EXPECT_EQ(r.ip_len, 38U);
    EXPECT_EQ(r.sport, 5555);
    EXPECT_EQ(r.dport, 5000);
    EXPECT_EQ(r.udp_len, 18);
    EXPECT_EQ(r.l4_offset, 34U);
    EXPECT_EQ(r.payload_offset, 42U);
    EXPECT_EQ(r.payload_len, 10U);
    EXPECT_EQ(payload_text(f, r), "datagram 1");  // 646174616772616d2031
    EXPECT_EQ(r.cap_len, 52U);

    // On a real NIC the frame is padded to the 60-byte Ethernet minimum: the padding is not payload.
    OwnedFrame padded = f;
    padded.bytes.resize(60, 0);
    padded.wire_len = 60;
    const PacketRecord p = padded.record();
    EXPECT_EQ(p.flags, packet_flag::k_dont_fragment);
    EXPECT_EQ(p.payload_len, 10U);
    EXPECT_EQ(p.fingerprint, r.fingerprint);
}

TEST(DissectEthernet, tcp_syn_and_data) {
    const auto frames = read_frames("eth_ipv4.pcap");
    const PacketRecord syn = frame_no(frames, 16).record();
    EXPECT_EQ(syn.flags, packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(syn.proto, 6);
    EXPECT_EQ(syn.sport, 6666);
    EXPECT_EQ(syn.dport, 6000);
    EXPECT_EQ(syn.tcp_seq, 1820340413U);
    EXPECT_EQ(syn.tcp_ack, 0U);
    EXPECT_EQ(syn.tcp_flags, 0x02);
    EXPECT_EQ(syn.payload_offset, 34U + 40U);  // tcp.hdr_len 40
    EXPECT_EQ(syn.payload_len, 0U);

    const OwnedFrame& f = frame_no(frames, 19);
    const PacketRecord data = f.record();
    EXPECT_EQ(data.flags, packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(data.tcp_seq, 1820340414U);
    EXPECT_EQ(data.tcp_ack, 1931930696U);
    EXPECT_EQ(data.tcp_flags, 0x18);  // PSH, ACK
    EXPECT_EQ(data.ip_len, 66U);
    EXPECT_EQ(data.payload_offset, 34U + 32U);
    EXPECT_EQ(data.payload_len, 14U);
    EXPECT_EQ(payload_text(f, data), "hello over tcp");
}

TEST(DissectEthernet, ipv4_fragments) {
    const auto frames = read_frames("eth_ipv4.pcap");
    const PacketRecord first = frame_no(frames, 26).record();  // MF set, offset 0: the ICMP header is here
    EXPECT_EQ(first.flags, packet_flag::k_fragment | packet_flag::k_more_fragments);  // ip.flags.df 0, mf 1
    EXPECT_EQ(first.frag_offset, 0U);
    EXPECT_EQ(first.ip_id, 0xcadd);
    EXPECT_EQ(first.ip_len, 1500U);
    EXPECT_EQ(first.icmp_type, 8);
    EXPECT_EQ(first.icmp_id, 31713);
    EXPECT_EQ(first.payload_len, 1500U - 20 - 8);

    const PacketRecord later = frame_no(frames, 27).record();  // offset 185 * 8: no transport header
    EXPECT_EQ(later.flags, packet_flag::k_fragment);           // ip.flags.df 0, mf 0
    EXPECT_EQ(later.frag_offset, 185U * 8);
    EXPECT_EQ(later.ip_id, 0xcadd);
    EXPECT_EQ(later.ip_len, 548U);
    EXPECT_EQ(later.proto, 1);
    EXPECT_EQ(later.icmp_type, 0);
    EXPECT_EQ(later.icmp_id, 0);
    EXPECT_EQ(later.l4_offset, 0U);
    EXPECT_EQ(later.payload_offset, 0U);
    EXPECT_NE(later.fingerprint, 0U);
    EXPECT_NE(later.fingerprint, first.fingerprint);
}

// ---- IPv6 ----------------------------------------------------------------------------------------------
// $T -r eth_ipv6.pcap -Y "frame.number in {3,9,14,21,22,25}" -T fields -E separator='|' -e frame.number
//    -e ipv6.src -e ipv6.dst -e ipv6.plen -e ipv6.nxt -e ipv6.hlim -e ipv6.flow -e icmpv6.type
//    -e icmpv6.echo.identifier -e icmpv6.echo.sequence_number -e udp.srcport -e udp.dstport -e udp.length
//    -e tcp.seq_raw -e tcp.flags -e tcp.len -e ipv6.fraghdr.offset -e ipv6.fraghdr.more -e ipv6.hopopts.nxt
//    -e ipv6.hopopts.len
// 3|fd99:1::2|fd99:2::2|64|58|64|0x092d36|128|0x7bec|1||||||||||
// 9|fd99:1::2|fd99:2::2|19|17|64|0x0146f8||||5557|5001|19|||||||
// 14|fd99:1::2|fd99:2::2|47|6|64|0x0605ca|||||||2610439368|0x0018|15||||
// 21|fd99:1::2|fd99:2::2|1456|44|64|0x092d36|128|0x7c01|1|||||||0|1||
// 22|fd99:1::2|fd99:2::2|568|44|64|0x092d36||||||||||181|0||
// 25|fe80::fc4b:4dff:fe90:df7b|ff02::16|76|0|1|0x000000|143|||||||||||58|0
// $T -r eth_ipv6.pcap -Y "frame.number in {3,9,14,21,22,25}" -T fields -E separator='|' -e frame.number
//    -e ip.flags.df -e ip.flags.mf -e eth.dst.ig
// 3|||0   9|||0   14|||0   21|||0   22|||0   25|||1      (IPv6 has no DF: k_dont_fragment is never set)

TEST(DissectIpv6, icmpv6_echo) {
    const auto frames = read_frames("eth_ipv6.pcap");
    const PacketRecord r = frame_no(frames, 3).record();
    EXPECT_EQ(r.flags, 0U);
    EXPECT_EQ(r.ethertype, 0x86dd);
    EXPECT_EQ(r.ip_version, 6);
    EXPECT_EQ(r.src, ip("fd99:1::2"));
    EXPECT_EQ(r.dst, ip("fd99:2::2"));
    EXPECT_EQ(r.ip_len, 64U + 40U);
    EXPECT_EQ(r.proto, 58);
    EXPECT_EQ(r.ttl, 64);
    EXPECT_EQ(r.flow_label, 0x092d36U);
    EXPECT_EQ(r.ip_id, 0);
    EXPECT_EQ(r.icmp_type, 128);
    EXPECT_EQ(r.icmp_id, 0x7bec);
    EXPECT_EQ(r.icmp_seq, 1);
    EXPECT_EQ(r.sport, 0x7bec);
    EXPECT_EQ(r.dport, 0x7bec);
    EXPECT_EQ(r.l4_offset, 54U);
    EXPECT_EQ(r.payload_len, 56U);
}

TEST(DissectIpv6, udp_and_tcp) {
    const auto frames = read_frames("eth_ipv6.pcap");
    const OwnedFrame& uf = frame_no(frames, 9);
    const PacketRecord udp = uf.record();
    EXPECT_EQ(udp.flags, 0U);
    EXPECT_EQ(udp.proto, 17);
    EXPECT_EQ(udp.sport, 5557);
    EXPECT_EQ(udp.dport, 5001);
    EXPECT_EQ(udp.udp_len, 19);
    EXPECT_EQ(udp.flow_label, 0x0146f8U);
    EXPECT_EQ(payload_text(uf, udp), "datagram6 1");

    const PacketRecord tcp = frame_no(frames, 14).record();
    EXPECT_EQ(tcp.flags, 0U);
    EXPECT_EQ(tcp.proto, 6);
    EXPECT_EQ(tcp.tcp_seq, 2610439368U);
    EXPECT_EQ(tcp.tcp_flags, 0x18);
    EXPECT_EQ(tcp.payload_len, 15U);
}

TEST(DissectIpv6, fragment_headers_are_skipped) {
    const auto frames = read_frames("eth_ipv6.pcap");
    const PacketRecord first = frame_no(frames, 21).record();  // offset 0, M=1: ICMPv6 header follows
    EXPECT_EQ(first.flags, packet_flag::k_fragment | packet_flag::k_more_fragments);
    EXPECT_EQ(first.frag_offset, 0U);
    EXPECT_EQ(first.proto, 58);  // the upper layer, not 44
    EXPECT_EQ(first.ip_len, 1456U + 40U);
    EXPECT_EQ(first.l4_offset, 14U + 40U + 8U);
    EXPECT_EQ(first.icmp_type, 128);
    EXPECT_EQ(first.icmp_id, 0x7c01);

    const PacketRecord later = frame_no(frames, 22).record();  // offset 181 * 8
    EXPECT_EQ(later.flags, packet_flag::k_fragment);
    EXPECT_EQ(later.frag_offset, 181U * 8);
    EXPECT_EQ(later.ip_id, first.ip_id);  // the fragment header's identification, shared by the datagram
    EXPECT_EQ(later.proto, 58);
    EXPECT_EQ(later.ip_len, 568U + 40U);
    EXPECT_EQ(later.icmp_type, 0);
    EXPECT_EQ(later.l4_offset, 0U);
}

TEST(DissectIpv6, hop_by_hop_header_is_skipped) {
    const auto frames = read_frames("eth_ipv6.pcap");
    const PacketRecord mld = frame_no(frames, 25).record();  // MLDv2 report behind a hop-by-hop header
    EXPECT_EQ(mld.flags, packet_flag::k_link_fan_out);  // to the MLDv2 group 33:33:00:00:00:16
    EXPECT_EQ(mld.proto, 58);
    EXPECT_EQ(mld.ttl, 1);
    EXPECT_EQ(mld.icmp_type, 143);
    EXPECT_EQ(mld.l4_offset, 14U + 40U + 8U);
    EXPECT_EQ(mld.ip_len, 76U + 40U);
}

// ---- VLAN ----------------------------------------------------------------------------------------------
// $T -r vlan.pcap -Y "frame.number in {1,3,10}" -T fields -E separator='|' -E occurrence=a -e frame.number
//    -e vlan.id -e ieee8021ad.id -e vlan.etype -e ip.src -e icmp.ident
// 1|100||0x0806||
// 3|100||0x0800|10.99.100.2|31832
// 10|20|300|0x0800|10.99.120.2|31851
// $T -r vlan.pcap -Y "frame.number in {1,3,10}" -T fields -E separator='|' -e frame.number -e ip.flags.df
//    -e ip.flags.mf -e eth.dst.ig
// 1|||1   3|1|0|0   10|1|0|0

TEST(DissectVlan, single_802_1q_tag) {
    const auto frames = read_frames("vlan.pcap");
    const PacketRecord arp = frame_no(frames, 1).record();
    EXPECT_EQ(arp.flags, packet_flag::k_vlan | packet_flag::k_not_ip | packet_flag::k_link_fan_out);
    EXPECT_EQ(arp.vlan, 100);
    EXPECT_EQ(arp.ethertype, 0x0806);

    const PacketRecord echo = frame_no(frames, 3).record();
    EXPECT_EQ(echo.flags, packet_flag::k_vlan | packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(echo.vlan, 100);
    EXPECT_EQ(echo.ethertype, 0x0800);
    EXPECT_EQ(echo.src, ip("10.99.100.2"));
    EXPECT_EQ(echo.icmp_id, 31832);
    EXPECT_EQ(echo.l4_offset, 14U + 4U + 20U);
}

TEST(DissectVlan, double_tag_reports_the_outer_vlan) {
    const auto frames = read_frames("vlan.pcap");
    const PacketRecord r = frame_no(frames, 10).record();                    // 802.1ad 300, then 802.1Q 20
    EXPECT_EQ(r.flags, packet_flag::k_vlan | packet_flag::k_dont_fragment);  // ip.flags.df 1
    EXPECT_EQ(r.vlan, 300);
    EXPECT_EQ(r.ethertype, 0x0800);
    EXPECT_EQ(r.src, ip("10.99.120.2"));
    EXPECT_EQ(r.icmp_id, 31851);
    EXPECT_EQ(r.l4_offset, 14U + 8U + 20U);
}

TEST(DissectVlan, same_packet_fingerprints_alike_with_or_without_tags) {
    const auto frames = read_frames("vlan.pcap");
    const OwnedFrame& tagged = frame_no(frames, 10);
    OwnedFrame untagged = tagged;  // remove both tags by hand: 12 address bytes, then the inner ethertype
    untagged.bytes.erase(untagged.bytes.begin() + 12, untagged.bytes.begin() + 20);
    untagged.wire_len -= 8;
    const PacketRecord a = tagged.record();
    const PacketRecord b = untagged.record();
    EXPECT_EQ(b.flags, packet_flag::k_dont_fragment);  // frame 10's IP header, untouched: ip.flags.df 1
    EXPECT_EQ(b.ethertype, 0x0800);
    EXPECT_EQ(a.fingerprint, b.fingerprint);
    EXPECT_EQ(a.icmp_id, b.icmp_id);
}

// ---- Linux cooked v1 and v2 ----------------------------------------------------------------------------
// $T -r any_sll.pcap -T fields -E separator='|' -e frame.number -e sll.pkttype -e sll.etype -e ip.src -e ip.ttl
// 1|0|0x0800|10.99.1.2|64   2|4|0x0800|10.99.2.1|63   3|0|0x0800|10.99.2.2|64   4|4|0x0800|10.99.2.2|63
// $T -r any_sll2.pcap -T fields -E separator='|' -e frame.number -e sll.pkttype -e sll.ifindex -e sll.etype
//    -e ip.src -e ip.ttl
// 1|0|2|0x0800|10.99.1.2|64  2|4|3|0x0800|10.99.2.1|63  3|0|3|0x0800|10.99.2.2|64  4|4|2|0x0800|10.99.2.2|63
// Interface indexes in hopt-r when captured (ip -n hopt-r -o link, see ifindex.txt): 2 r0, 3 r1.

TEST(DissectCooked, v1_packet_type_gives_the_direction) {
    const auto frames = read_frames("any_sll.pcap");
    ASSERT_EQ(frames.size(), 10U);
    EXPECT_EQ(frames[0].link_type, LinkType::linux_sll);
    const PacketRecord in = frames[0].record();   // pkttype 0: to us
    const PacketRecord out = frames[1].record();  // pkttype 4: outgoing (after masquerading)
    EXPECT_EQ(in.direction, Direction::inbound);
    EXPECT_EQ(out.direction, Direction::outbound);
    EXPECT_EQ(in.ethertype, 0x0800);
    EXPECT_EQ(in.src, ip("10.99.1.2"));
    EXPECT_EQ(out.src, ip("10.99.2.1"));
    EXPECT_EQ(in.ttl, 64);
    EXPECT_EQ(out.ttl, 63);
    EXPECT_EQ(in.ifindex, 0U);  // v1 has no interface index
    EXPECT_EQ(in.l4_offset, 16U + 20U);
    // The same echo request on both sides of the router: NAT changed the source, not the fingerprint.
    EXPECT_EQ(in.fingerprint, out.fingerprint);
}

TEST(DissectCooked, v2_carries_the_interface_index) {
    const auto frames = read_frames("any_sll2.pcap");
    ASSERT_EQ(frames.size(), 10U);
    EXPECT_EQ(frames[0].link_type, LinkType::linux_sll2);
    const std::uint32_t r0 = 2;
    const std::uint32_t r1 = 3;
    const PacketRecord a = frames[0].record();
    const PacketRecord b = frames[1].record();
    const PacketRecord c = frames[2].record();
    const PacketRecord d = frames[3].record();
    EXPECT_EQ(a.ifindex, r0);
    EXPECT_EQ(a.direction, Direction::inbound);
    EXPECT_EQ(b.ifindex, r1);
    EXPECT_EQ(b.direction, Direction::outbound);
    EXPECT_EQ(c.ifindex, r1);
    EXPECT_EQ(c.direction, Direction::inbound);
    EXPECT_EQ(d.ifindex, r0);
    EXPECT_EQ(d.direction, Direction::outbound);
    EXPECT_EQ(a.l4_offset, 20U + 20U);
    EXPECT_EQ(a.fingerprint, b.fingerprint);
    EXPECT_EQ(c.fingerprint, d.fingerprint);
    EXPECT_NE(a.fingerprint, c.fingerprint);  // request and reply
}

TEST(DissectCooked, direction_from_the_source_wins_over_the_header) {
    const auto frames = read_frames("any_sll.pcap");
    Frame f = frames[0].frame();  // pkttype 0 says inbound
    f.direction = Direction::outbound;
    EXPECT_EQ(dissect(f).direction, Direction::outbound);
}

// ---- ICMP errors ---------------------------------------------------------------------------------------
// $T -r icmp_errors.pcap -Y "frame.number in {2,4,8,10}" -T fields -E separator='|' -E occurrence=a
//    -e frame.number -e ip.src -e ip.id -e ip.proto -e ip.ttl -e ipv6.src -e ipv6.nxt -e ipv6.hlim -e icmp.type
//    -e icmp.code -e icmpv6.type -e icmpv6.code -e udp.srcport -e udp.dstport -e icmp.ident
//    -e icmpv6.echo.identifier
// 2|10.99.2.2,10.99.1.2|0xe2af,0xa4df|1,17|63,63||||3|3|||5556|9||
// 4|10.99.1.1,10.99.1.2|0x3562,0xcd3c|1,1|64,1||||11,8|0,0|||||32012|
// 8|||||fd99:2::2,fd99:1::99|58,17|63,63|||1|4|5558|9||
// 10|||||fd99:1::1,fd99:1::99|58,58|64,1|||3,128|0,0||||0x7d58
// $T -r icmp_errors.pcap -Y "frame.number in {2,4,8,10}" -T fields -E separator='|' -E occurrence=a
//    -e frame.number -e ip.flags.df -e ip.flags.mf -e eth.dst.ig
// 2|0,1|0,0|0   4|0,1|0,0|0   8|||0   10|||0      (the errors have DF clear; only their quotes carry DF)

TEST(DissectIcmpError, port_unreachable_quotes_the_udp_datagram) {
    const auto frames = read_frames("icmp_errors.pcap");
    const PacketRecord r = frame_no(frames, 2).record();
    EXPECT_EQ(r.flags, packet_flag::k_icmp_error);
    EXPECT_EQ(r.src, ip("10.99.2.2"));
    EXPECT_EQ(r.icmp_type, 3);
    EXPECT_EQ(r.icmp_code, 3);
    EXPECT_EQ(r.sport, 0);  // errors have no echo id
    EXPECT_EQ(r.inner_ip_version, 4);
    EXPECT_EQ(r.inner_proto, 17);
    EXPECT_EQ(r.inner_src, ip("10.99.1.2"));
    EXPECT_EQ(r.inner_dst, ip("10.99.2.2"));
    EXPECT_EQ(r.inner_ip_id, 0xa4df);
    EXPECT_EQ(r.inner_ttl, 63);  // decremented by the router before it reached the server
    EXPECT_EQ(r.inner_sport, 5556);
    EXPECT_EQ(r.inner_dport, 9);
    // The probe itself (frame 1) is the packet quoted: same IP id.
    EXPECT_EQ(frame_no(frames, 1).record().ip_id, r.inner_ip_id);
    EXPECT_FALSE(r.has_inner_seq);  // a UDP quote has no sequence number
}

TEST(DissectIcmpError, ttl_exceeded_quotes_the_echo_request) {
    const auto frames = read_frames("icmp_errors.pcap");
    const PacketRecord r = frame_no(frames, 4).record();
    EXPECT_EQ(r.flags, packet_flag::k_icmp_error);
    EXPECT_EQ(r.src, ip("10.99.1.1"));
    EXPECT_EQ(r.icmp_type, 11);
    EXPECT_EQ(r.icmp_code, 0);
    EXPECT_EQ(r.inner_proto, 1);
    EXPECT_EQ(r.inner_ttl, 1);
    EXPECT_EQ(r.inner_ip_id, 0xcd3c);
    EXPECT_EQ(r.inner_sport, 32012);  // the quoted echo id
    EXPECT_EQ(r.inner_dport, 32012);
    EXPECT_EQ(r.icmp_id, 0);
    // The quoted sequence number (tshark: icmp.seq of frame 4's quote) ties the error to its probe, frame 3.
    EXPECT_TRUE(r.has_inner_seq);
    EXPECT_EQ(r.inner_seq, 1U);
    EXPECT_EQ(frame_no(frames, 3).record().icmp_seq, r.inner_seq);
}

TEST(DissectIcmpError, icmpv6_port_unreachable_and_time_exceeded) {
    const auto frames = read_frames("icmp_errors.pcap");
    const PacketRecord unreach = frame_no(frames, 8).record();
    EXPECT_EQ(unreach.flags, packet_flag::k_icmp_error);
    EXPECT_EQ(unreach.ip_version, 6);
    EXPECT_EQ(unreach.icmp_type, 1);
    EXPECT_EQ(unreach.icmp_code, 4);
    EXPECT_EQ(unreach.inner_ip_version, 6);
    EXPECT_EQ(unreach.inner_proto, 17);
    EXPECT_EQ(unreach.inner_src, ip("fd99:1::99"));
    EXPECT_EQ(unreach.inner_dst, ip("fd99:2::2"));
    EXPECT_EQ(unreach.inner_sport, 5558);
    EXPECT_EQ(unreach.inner_dport, 9);

    const PacketRecord exceeded = frame_no(frames, 10).record();
    EXPECT_EQ(exceeded.flags, packet_flag::k_icmp_error);
    EXPECT_EQ(exceeded.src, ip("fd99:1::1"));
    EXPECT_EQ(exceeded.icmp_type, 3);
    EXPECT_EQ(exceeded.inner_proto, 58);
    EXPECT_EQ(exceeded.inner_ttl, 1);
    EXPECT_EQ(exceeded.inner_sport, 0x7d58);
    EXPECT_EQ(exceeded.inner_dport, 0x7d58);
}

// ---- Next-hop MTU, hand-built frames -------------------------------------------------------------------
// No capture in tests/data holds a frag-needed or packet-too-big (tshark -Y 'icmp.type==3 && icmp.code==4
// || icmpv6.type==2' finds none in any of them), so the two frames below are built by hand, checksums
// included. Checked with tshark: each hex string written as a text2pcap dump ("0000 02 00 00 …"), then
// text2pcap -q v4.txt v4.pcap; tshark -n -r v4.pcap -T fields -E separator='|' -E occurrence=a -e ip.src
//    -e ip.flags.df -e ip.id -e ip.ttl -e icmp.type -e icmp.code -e icmp.mtu -e icmp.checksum.status
//    -e ip.checksum.status -e udp.srcport -e udp.dstport -o ip.check_checksum:TRUE
// 10.99.2.1,10.99.1.2|0,1|0x1234,0xbeef|64,63|3|4|1280|1|1,1|5555|5000
// text2pcap -q v6.txt v6.pcap; tshark -n -r v6.pcap -T fields -E separator='|' -E occurrence=a -e ipv6.src
//    -e ipv6.hlim -e icmpv6.type -e icmpv6.code -e icmpv6.mtu -e icmpv6.checksum.status -e udp.srcport
//    -e udp.dstport
// fd99:2::1,fd99:1::2|64,63|2|0|1280|1|5557|5001

OwnedFrame frame_of(const std::vector<std::uint8_t>& bytes) {
    OwnedFrame f;
    f.bytes = bytes;
    f.wire_len = static_cast<std::uint32_t>(bytes.size());
    return f;
}

// Ethernet, IPv4 10.99.2.1 -> 10.99.1.2, ICMP destination unreachable / fragmentation needed with next-hop
// MTU 1280, quoting a 1500-byte UDP datagram (DF set) 10.99.1.2:5555 -> 10.99.2.2:5000.
// clang-format off
const std::vector<std::uint8_t> k_frag_needed = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00,  // Ethernet
    0x45, 0x00, 0x00, 0x38, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0x50, 0xc9,              // IPv4: len 56, id 0x1234
    0x0a, 0x63, 0x02, 0x01, 0x0a, 0x63, 0x01, 0x02,                                      //   ttl 64, ICMP
    0x03, 0x04, 0xc8, 0xf8, 0x00, 0x00, 0x05, 0x00,                                      // ICMP 3/4, MTU 1280
    0x45, 0x00, 0x05, 0xdc, 0xbe, 0xef, 0x40, 0x00, 0x3f, 0x11, 0x5f, 0x58,              // quoted IPv4: len 1500,
    0x0a, 0x63, 0x01, 0x02, 0x0a, 0x63, 0x02, 0x02,                                      //   id 0xbeef, DF, ttl 63
    0x15, 0xb3, 0x13, 0x88, 0x05, 0xc8, 0x00, 0x00,                                      // quoted UDP 5555 -> 5000
};
// clang-format on

// Ethernet, IPv6 fd99:2::1 -> fd99:1::2, ICMPv6 packet too big with MTU 1280, quoting a UDP datagram
// fd99:1::2:5557 -> fd99:2::2:5001 (payload length 1452, hop limit 63).
// clang-format off
const std::vector<std::uint8_t> k_packet_too_big = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd,  // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x38, 0x3a, 0x40,                                      // IPv6: plen 56, ICMPv6
    0xfd, 0x99, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0xfd, 0x99, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x02, 0x00, 0x5c, 0x43, 0x00, 0x00, 0x05, 0x00,                                      // ICMPv6 2/0, MTU 1280
    0x60, 0x00, 0x00, 0x00, 0x05, 0xac, 0x11, 0x3f,                                      // quoted IPv6: UDP
    0xfd, 0x99, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0xfd, 0x99, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x15, 0xb5, 0x13, 0x89, 0x05, 0xac, 0x00, 0x00,                                      // quoted UDP 5557 -> 5001
};
// clang-format on

TEST(DissectIcmpMtu, frag_needed_gives_the_next_hop_mtu) {
    const PacketRecord r = frame_of(k_frag_needed).record();
    EXPECT_EQ(r.flags, packet_flag::k_icmp_error);  // ip.flags.df 0 (outer), eth.dst 02:… is unicast
    EXPECT_EQ(r.ip_version, 4);
    EXPECT_EQ(r.src, ip("10.99.2.1"));
    EXPECT_EQ(r.dst, ip("10.99.1.2"));
    EXPECT_EQ(r.ip_len, 56U);
    EXPECT_EQ(r.icmp_type, 3);
    EXPECT_EQ(r.icmp_code, 4);
    EXPECT_EQ(r.icmp_mtu, 1280U);
    EXPECT_EQ(r.icmp_id, 0);  // bytes 4-7 of an error are not an echo id and sequence
    EXPECT_EQ(r.icmp_seq, 0);
    EXPECT_EQ(r.inner_ip_version, 4);
    EXPECT_EQ(r.inner_proto, 17);
    EXPECT_EQ(r.inner_src, ip("10.99.1.2"));
    EXPECT_EQ(r.inner_dst, ip("10.99.2.2"));
    EXPECT_EQ(r.inner_ip_id, 0xbeef);
    EXPECT_EQ(r.inner_ttl, 63);
    EXPECT_EQ(r.inner_sport, 5555);
    EXPECT_EQ(r.inner_dport, 5000);
    EXPECT_FALSE(r.has_inner_seq);
    EXPECT_NE(r.fingerprint, 0U);

    // Another destination-unreachable code has no MTU, whatever bytes 6-7 hold.
    OwnedFrame port_unreachable = frame_of(k_frag_needed);
    port_unreachable.bytes[14 + 20 + 1] = 3;
    const PacketRecord p = port_unreachable.record();
    EXPECT_EQ(p.icmp_code, 3);
    EXPECT_EQ(p.icmp_mtu, 0U);
    EXPECT_EQ(p.inner_sport, 5555);
}

TEST(DissectIcmpMtu, packet_too_big_gives_the_mtu) {
    const PacketRecord r = frame_of(k_packet_too_big).record();
    EXPECT_EQ(r.flags, packet_flag::k_icmp_error);
    EXPECT_EQ(r.ip_version, 6);
    EXPECT_EQ(r.src, ip("fd99:2::1"));
    EXPECT_EQ(r.dst, ip("fd99:1::2"));
    EXPECT_EQ(r.ip_len, 56U + 40U);
    EXPECT_EQ(r.icmp_type, 2);
    EXPECT_EQ(r.icmp_code, 0);
    EXPECT_EQ(r.icmp_mtu, 1280U);
    EXPECT_EQ(r.inner_ip_version, 6);
    EXPECT_EQ(r.inner_proto, 17);
    EXPECT_EQ(r.inner_src, ip("fd99:1::2"));
    EXPECT_EQ(r.inner_dst, ip("fd99:2::2"));
    EXPECT_EQ(r.inner_ttl, 63);
    EXPECT_EQ(r.inner_sport, 5557);
    EXPECT_EQ(r.inner_dport, 5001);

    // The ICMPv6 MTU field is 32 bits wide (RFC 4443): 0x00010500 is 66816, not 1280.
    OwnedFrame big = frame_of(k_packet_too_big);
    big.bytes[14 + 40 + 5] = 0x01;
    EXPECT_EQ(big.record().icmp_mtu, 0x00010500U);

    // ICMPv6 destination unreachable (type 1) has no MTU.
    OwnedFrame unreachable = frame_of(k_packet_too_big);
    unreachable.bytes[14 + 40] = 1;
    unreachable.bytes[14 + 40 + 1] = 4;
    const PacketRecord u = unreachable.record();
    EXPECT_EQ(u.icmp_type, 1);
    EXPECT_EQ(u.icmp_mtu, 0U);
    EXPECT_EQ(u.inner_sport, 5557);
}

// ---- Fingerprints of fragments -------------------------------------------------------------------------

// The fingerprint as tracer/fingerprint.cpp defines it for a packet that is not a fragment and not an ICMP
// error: 64-bit FNV-1a over ip_version, proto, ip_id, ip_len, icmp_type, icmp_code, icmp_seq, udp_len,
// tcp_seq, tcp_ack, tcp_flags (each least significant byte first), then the first payload bytes.
std::uint64_t reference_fingerprint(const PacketRecord& r, std::span<const std::uint8_t> payload) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    const auto add = [&h](std::uint64_t value, std::size_t size) {
        for (std::size_t i = 0; i < size; ++i) {
            h ^= static_cast<std::uint8_t>(value >> (8 * i));
            h *= 0x100000001b3ULL;
        }
    };
    add(r.ip_version, 1);
    add(r.proto, 1);
    add(r.ip_id, 2);
    add(r.ip_len, 4);
    add(r.icmp_type, 1);
    add(r.icmp_code, 1);
    add(r.icmp_seq, 2);
    add(r.udp_len, 2);
    add(r.tcp_seq, 4);
    add(r.tcp_ack, 4);
    add(r.tcp_flags, 1);
    for (const std::uint8_t b : payload.first(std::min<std::size_t>(payload.size(), k_fingerprint_payload_bytes))) {
        add(b, 1);
    }
    return h == 0 ? 1 : h;
}

TEST(DissectFingerprint, later_fragments_of_one_datagram_differ_by_offset) {
    // eth_ipv4.pcap frame 27: the last fragment (offset 185, MF 0, 548 bytes) of datagram 0xcadd. A copy
    // with another offset is another fragment of the same datagram with the same length: same id, same
    // length, no transport header, so only the offset tells the two apart.
    const auto frames = read_frames("eth_ipv4.pcap");
    const OwnedFrame& last = frame_no(frames, 27);
    OwnedFrame middle = last;  // offset 100 (0x0064), MF 0; the checksum is not checked
    middle.bytes[14 + 6] = 0x00;
    middle.bytes[14 + 7] = 0x64;
    const PacketRecord a = last.record();
    const PacketRecord b = middle.record();
    EXPECT_EQ(a.flags, packet_flag::k_fragment);
    EXPECT_EQ(b.flags, packet_flag::k_fragment);
    EXPECT_EQ(a.frag_offset, 185U * 8);
    EXPECT_EQ(b.frag_offset, 100U * 8);
    EXPECT_EQ(a.ip_id, b.ip_id);
    EXPECT_EQ(a.ip_len, b.ip_len);
    EXPECT_EQ(b.payload_offset, 0U);
    EXPECT_NE(a.fingerprint, 0U);
    EXPECT_NE(b.fingerprint, 0U);
    EXPECT_NE(a.fingerprint, b.fingerprint);

    // Same offset, MF set: a middle fragment differs from the last one at that offset too.
    OwnedFrame more = last;
    more.bytes[14 + 6] |= 0x20;
    const PacketRecord m = more.record();
    EXPECT_EQ(m.flags, packet_flag::k_fragment | packet_flag::k_more_fragments);
    EXPECT_EQ(m.frag_offset, a.frag_offset);
    EXPECT_NE(m.fingerprint, a.fingerprint);
}

TEST(DissectFingerprint, whole_packets_keep_the_fingerprint_of_the_definition) {
    // A whole packet: the fragment offset is not hashed (nor the DF bit), so its fingerprint is the one
    // computed before fragments were told apart.
    const auto frames = read_frames("eth_ipv4.pcap");
    const OwnedFrame& f = frame_no(frames, 13);  // UDP "datagram 1", DF set
    const PacketRecord r = f.record();
    ASSERT_EQ(r.flags & packet_flag::k_fragment, 0U);
    const std::span<const std::uint8_t> payload(f.bytes.data() + r.payload_offset, r.payload_len);
    EXPECT_EQ(r.fingerprint, reference_fingerprint(r, payload));

    OwnedFrame no_df = f;
    no_df.bytes[14 + 6] = 0x00;
    const PacketRecord n = no_df.record();
    EXPECT_EQ(n.flags & packet_flag::k_dont_fragment, 0U);
    EXPECT_EQ(n.fingerprint, r.fingerprint);

    // Two records that differ only in frag_offset, k_fragment unset: equal fingerprints.
    PacketRecord x = r;
    PacketRecord y = r;
    y.frag_offset = 1480;
    EXPECT_EQ(fingerprint(x, f.bytes), fingerprint(y, f.bytes));
    EXPECT_EQ(fingerprint(y, f.bytes), r.fingerprint);
    // With k_fragment set, the same difference counts.
    x.flags |= packet_flag::k_fragment;
    y.flags |= packet_flag::k_fragment;
    EXPECT_NE(fingerprint(x, f.bytes), fingerprint(y, f.bytes));
}

// ---- Snap length ---------------------------------------------------------------------------------------
// $T -r snapped.pcap -Y "frame.number in {1,5}" -T fields -E separator='|' -e frame.number -e frame.cap_len
//    -e frame.len -e udp.length -e tcp.len -e tcp.hdr_len
// 1|96|1042|1008||
// 5|96|1466||1400|32
// $T -r snapped.pcap -Y "frame.number in {1,5}" -T fields -E separator='|' -e frame.number -e ip.flags.df
//    -e ip.flags.mf -e eth.dst.ig
// 1|1|0|0   5|1|0|0

TEST(DissectSnapped, payload_length_comes_from_the_headers_not_the_capture) {
    const auto frames = read_frames("snapped.pcap");
    const PacketRecord udp = frame_no(frames, 1).record();
    EXPECT_EQ(udp.flags, packet_flag::k_snapped | packet_flag::k_dont_fragment);
    EXPECT_EQ(udp.cap_len, 96U);
    EXPECT_EQ(udp.wire_len, 1042U);
    EXPECT_EQ(udp.udp_len, 1008);
    EXPECT_EQ(udp.payload_len, 1000U);

    const PacketRecord tcp = frame_no(frames, 5).record();
    EXPECT_EQ(tcp.flags, packet_flag::k_snapped | packet_flag::k_dont_fragment);
    EXPECT_EQ(tcp.payload_offset, 14U + 20U + 32U);
    EXPECT_EQ(tcp.payload_len, 1400U);
    EXPECT_EQ(tcp.ip_len, 1452U);
}

// wire_shorter.pcap (make_edge_cases.py): frame 6 of eth_ipv4.pcap whose record says 88 bytes on the wire but
// holds 98 (as tcpdump's aoe-oobr-1.pcap does). tshark -r wire_shorter.pcap -T fields -e frame.len -e frame.cap_len
//   88 98    98 98
// The record keeps every captured byte and is taken at its captured length: never shorter on the wire than
// captured, not snapped, and dissected like frame 6 itself.
TEST(DissectSnapped, wire_length_shorter_than_captured_is_the_captured_length) {
    const auto frames = read_frames("wire_shorter.pcap");
    ASSERT_EQ(frames.size(), 2U);
    ASSERT_EQ(frames[0].wire_len, 88U);  // what the file says
    ASSERT_EQ(frames[0].bytes.size(), 98U);
    const PacketRecord r = frames[0].record();
    EXPECT_EQ(r.cap_len, 98U);
    EXPECT_EQ(r.wire_len, 98U);
    EXPECT_EQ(r.flags, packet_flag::k_dont_fragment);  // frame 6 has DF (see eth_ipv4.pcap above)
    EXPECT_EQ(r.icmp_id, 31699);
    EXPECT_EQ(r.payload_len, 56U);
    const auto original = read_frames("eth_ipv4.pcap");
    const PacketRecord same = frame_no(original, 6).record();
    EXPECT_EQ(r.fingerprint, same.fingerprint);

    // Down to a wire length of 0, however short it claims to be.
    OwnedFrame zero = frames[0];
    zero.wire_len = 0;
    EXPECT_EQ(zero.record().wire_len, 98U);
}

// ---- Other link types, built from real frames ----------------------------------------------------------

OwnedFrame without_ethernet(const OwnedFrame& f, LinkType link_type) {
    OwnedFrame g = f;
    g.bytes.erase(g.bytes.begin(), g.bytes.begin() + 14);
    g.wire_len -= 14;
    g.link_type = link_type;
    return g;
}

TEST(DissectLinkTypes, raw_ipv4_and_ipv6) {
    const auto v4 = read_frames("eth_ipv4.pcap");
    const auto v6 = read_frames("eth_ipv6.pcap");
    const OwnedFrame& echo4 = frame_no(v4, 6);
    const OwnedFrame& echo6 = frame_no(v6, 3);
    const PacketRecord eth4 = echo4.record();
    const PacketRecord eth6 = echo6.record();
    for (const LinkType lt : {LinkType::raw, LinkType::ipv4}) {
        const PacketRecord r = without_ethernet(echo4, lt).record();
        EXPECT_EQ(r.flags, packet_flag::k_dont_fragment);  // eth_ipv4.pcap frame 6: ip.flags.df 1
        EXPECT_EQ(r.ethertype, 0x0800);
        EXPECT_EQ(r.src, eth4.src);
        EXPECT_EQ(r.icmp_id, eth4.icmp_id);
        EXPECT_EQ(r.l4_offset, eth4.l4_offset - 14);
        EXPECT_EQ(r.fingerprint, eth4.fingerprint);
    }
    for (const LinkType lt : {LinkType::raw, LinkType::ipv6}) {
        const PacketRecord r = without_ethernet(echo6, lt).record();
        EXPECT_EQ(r.flags, 0U);
        EXPECT_EQ(r.ethertype, 0x86dd);
        EXPECT_EQ(r.dst, eth6.dst);
        EXPECT_EQ(r.fingerprint, eth6.fingerprint);
    }
    // The wrong one of LINKTYPE_IPV4/IPV6 is a malformed header, not a guess.
    EXPECT_EQ(without_ethernet(echo4, LinkType::ipv6).record().flags, packet_flag::k_malformed);
    EXPECT_EQ(without_ethernet(echo6, LinkType::ipv4).record().flags, packet_flag::k_malformed);
}

TEST(DissectLinkTypes, unknown_link_type_is_not_ip) {
    const auto frames = read_frames("eth_ipv4.pcap");
    OwnedFrame f = frame_no(frames, 6);
    f.link_type = static_cast<LinkType>(147);
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_not_ip);
    EXPECT_EQ(r.fingerprint, 0U);
}

// ---- Malformed and truncated, hand-edited from real frames ---------------------------------------------

class DissectDamaged : public testing::Test {
protected:
    void SetUp() override {
        m_v4 = read_frames("eth_ipv4.pcap");
        m_v6 = read_frames("eth_ipv6.pcap");
        ASSERT_GE(m_v4.size(), 19U);
        ASSERT_GE(m_v6.size(), 25U);
    }
    // All three carry DF (ip.flags.df 1, see the eth_ipv4.pcap block above); the edits below leave it alone.
    OwnedFrame udp4() const { return m_v4[12]; }  // frame 13
    OwnedFrame tcp4() const { return m_v4[18]; }  // frame 19
    OwnedFrame echo4() const { return m_v4[5]; }  // frame 6
    OwnedFrame udp6() const { return m_v6[8]; }   // frame 9

    std::vector<OwnedFrame> m_v4;
    std::vector<OwnedFrame> m_v6;
};

TEST_F(DissectDamaged, ipv4_bad_version) {
    OwnedFrame f = udp4();
    f.bytes[14] = 0x55;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed);
    EXPECT_EQ(r.ip_version, 0);
    EXPECT_EQ(r.fingerprint, 0U);
}

TEST_F(DissectDamaged, ipv4_header_length_below_five_words) {
    OwnedFrame f = udp4();
    f.bytes[14] = 0x44;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed);
    EXPECT_EQ(r.ip_version, 4);
    EXPECT_EQ(r.src, ip("10.99.1.2"));  // what was readable before the problem
    EXPECT_EQ(r.sport, 0);
    EXPECT_NE(r.fingerprint, 0U);  // still an IP packet
}

TEST_F(DissectDamaged, ipv4_total_length_below_header_length) {
    OwnedFrame f = udp4();
    f.bytes[16] = 0;
    f.bytes[17] = 19;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed);
    EXPECT_EQ(r.ip_len, 19U);
    EXPECT_EQ(r.sport, 0);
}

TEST_F(DissectDamaged, ipv4_total_length_beyond_the_frame) {
    OwnedFrame f = udp4();
    f.bytes[16] = 0x05;  // 1318 bytes claimed, 46 on the wire
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags & packet_flag::k_malformed, packet_flag::k_malformed);
    EXPECT_EQ(r.flags & packet_flag::k_snapped, 0U);  // not the snap length's doing
    EXPECT_EQ(r.sport, 5555);                         // the headers are all there
    EXPECT_EQ(r.ip_len, 0x0526U);
}

TEST_F(DissectDamaged, ipv4_total_length_zero_is_a_tso_super_packet) {
    OwnedFrame f = tcp4();
    f.bytes[16] = 0;
    f.bytes[17] = 0;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_dont_fragment);
    EXPECT_EQ(r.ip_len, f.wire_len - 14U);
    EXPECT_EQ(r.payload_len, 14U);
}

TEST_F(DissectDamaged, ipv4_options_running_past_the_capture) {
    OwnedFrame f = tcp4();
    f.bytes[14] = 0x4f;  // 60-byte header
    f.bytes.resize(14 + 40);
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags & k_bad, packet_flag::k_truncated);
    EXPECT_EQ(r.ip_id, 0x194b);
    EXPECT_EQ(r.sport, 0);
}

TEST_F(DissectDamaged, tcp_data_offset_below_five_words) {
    OwnedFrame f = tcp4();
    f.bytes[14 + 20 + 12] = 0x40;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed | packet_flag::k_dont_fragment);
    EXPECT_EQ(r.sport, 6666);  // ports, seq, ack and flags come before the data offset
    EXPECT_EQ(r.tcp_seq, 1820340414U);
    EXPECT_EQ(r.tcp_flags, 0x18);
    EXPECT_EQ(r.payload_offset, 0U);
}

TEST_F(DissectDamaged, tcp_header_longer_than_the_ip_packet) {
    OwnedFrame f = tcp4();
    f.bytes[14 + 20 + 12] = 0xf0;  // 60 bytes of header in a 46-byte IP payload
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed | packet_flag::k_dont_fragment);
}

TEST_F(DissectDamaged, udp_length_below_eight) {
    OwnedFrame f = udp4();
    f.bytes[14 + 20 + 4] = 0;
    f.bytes[14 + 20 + 5] = 7;
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_malformed | packet_flag::k_dont_fragment);
    EXPECT_EQ(r.udp_len, 7);
    EXPECT_EQ(r.sport, 5555);
}

TEST_F(DissectDamaged, ethernet_header_cut) {
    OwnedFrame f = udp4();
    f.bytes.resize(13);
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_truncated | packet_flag::k_snapped);
    EXPECT_EQ(r.ethertype, 0);
    EXPECT_EQ(r.fingerprint, 0U);
}

TEST_F(DissectDamaged, vlan_tag_cut) {
    const auto frames = read_frames("vlan.pcap");
    OwnedFrame f = frames[9];    // frame 10, double tagged
    f.bytes.resize(14 + 4 + 3);  // the outer tag whole, the inner one cut
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_vlan | packet_flag::k_truncated | packet_flag::k_snapped);
    EXPECT_EQ(r.vlan, 300);
    f.bytes.resize(14 + 3);  // the outer tag cut: no VLAN id to report
    EXPECT_EQ(f.record().flags, packet_flag::k_truncated | packet_flag::k_snapped);
    EXPECT_EQ(f.record().ethertype, 0x88a8);
}

TEST_F(DissectDamaged, ipv6_extension_header_chain) {
    // Insert hop-by-hop (8 bytes), routing (type 0 header with no addresses, 8 bytes) and destination
    // options (16 bytes) between the IPv6 header and the UDP header of a real datagram.
    OwnedFrame f = udp6();
    const std::vector<std::uint8_t> ext = {
        43, 0, 1, 4,  0, 0, 0, 0,  // hop-by-hop: next routing, PadN
        60, 0, 0, 0,  0, 0, 0, 0,  // routing: next destination options, segments left 0
        17, 1, 1, 12, 0, 0, 0, 0,  // destination options: next UDP, 16 bytes, PadN(12)
        0,  0, 0, 0,  0, 0, 0, 0,
    };
    f.bytes.insert(f.bytes.begin() + 14 + 40, ext.begin(), ext.end());
    f.wire_len += static_cast<std::uint32_t>(ext.size());
    const std::uint16_t plen = static_cast<std::uint16_t>((f.bytes[18] << 8 | f.bytes[19]) + ext.size());
    f.bytes[18] = static_cast<std::uint8_t>(plen >> 8);
    f.bytes[19] = static_cast<std::uint8_t>(plen & 0xff);
    f.bytes[14 + 6] = 0;  // next header: hop-by-hop
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, 0U);
    EXPECT_EQ(r.proto, 17);
    EXPECT_EQ(r.l4_offset, 14U + 40U + 32U);
    EXPECT_EQ(r.sport, 5557);
    EXPECT_EQ(r.udp_len, 19);
    EXPECT_EQ(r.payload_len, 11U);
    EXPECT_EQ(r.ip_len, plen + 40U);

    // An extension header that claims more than the payload length leaves room for: malformed.
    OwnedFrame g = f;
    g.bytes[14 + 40 + 16 + 1] = 200;
    EXPECT_EQ(g.record().flags, packet_flag::k_malformed);
    EXPECT_EQ(g.record().proto, 60);  // the header we could not get past

    // The chain cut by the capture: truncated.
    OwnedFrame h = f;
    h.bytes.resize(14 + 40 + 12);
    EXPECT_EQ(h.record().flags, packet_flag::k_truncated | packet_flag::k_snapped);
}

TEST_F(DissectDamaged, icmp_error_with_a_short_quote) {
    const auto frames = read_frames("icmp_errors.pcap");
    OwnedFrame f = frames[1];  // frame 2: port unreachable, 89 bytes
    // Cut the quoted UDP header out of the capture: the inner IP header is still whole.
    f.bytes.resize(14 + 20 + 8 + 20 + 2);
    const PacketRecord r = f.record();
    EXPECT_EQ(r.flags, packet_flag::k_icmp_error | packet_flag::k_truncated | packet_flag::k_snapped);
    EXPECT_EQ(r.inner_ip_id, 0xa4df);
    EXPECT_EQ(r.inner_proto, 17);
    EXPECT_EQ(r.inner_sport, 0);
}

TEST_F(DissectDamaged, empty_frame) {
    const Frame empty{};
    const PacketRecord r = dissect(empty);
    EXPECT_EQ(r.flags, packet_flag::k_truncated);
    EXPECT_EQ(r.cap_len, 0U);
    EXPECT_EQ(r.fingerprint, 0U);
}

// ---- Every prefix of every frame -----------------------------------------------------------------------

// Dissecting every prefix (0 … caplen bytes) of every frame of every capture must never read past the
// prefix (ASan builds check that), must say the frame was snapped, must say truncated when the cut falls
// inside the headers, and must give the full frame's header fields once the headers are all there.
TEST(DissectPrefixes, every_prefix_of_every_frame) {
    std::size_t dissections = 0;
    for (const char* name :
         {"eth_ipv4.pcap", "eth_ipv6.pcap", "vlan.pcap", "any_sll.pcap", "any_sll2.pcap", "icmp_errors.pcap",
          "nat_inside.pcap", "router.pcapng", "snapped.pcap", "synthetic.pcapng"}) {
        SCOPED_TRACE(name);
        for (const OwnedFrame& f : read_frames(name)) {
            const PacketRecord full = f.record();
            ASSERT_EQ(full.flags & k_bad, 0U) << "the captures hold only well-formed frames";
            const bool icmp_error = (full.flags & packet_flag::k_icmp_error) != 0;
            for (std::size_t len = 0; len < f.bytes.size(); ++len) {
                // A copy of exactly `len` bytes, so that ASan sees any read past the end.
                const std::vector<std::uint8_t> prefix(f.bytes.begin(),
                                                       f.bytes.begin() + static_cast<std::ptrdiff_t>(len));
                Frame frame = f.frame();
                frame.bytes = prefix;
                const PacketRecord r = dissect(frame);
                ++dissections;
                SCOPED_TRACE("cut at " + std::to_string(len));
                ASSERT_NE(r.flags & packet_flag::k_snapped, 0U);
                ASSERT_EQ(r.flags & packet_flag::k_malformed, 0U);
                ASSERT_EQ(r.cap_len, len);
                if (full.payload_offset != 0 && len < full.payload_offset) {
                    ASSERT_NE(r.flags & packet_flag::k_truncated, 0U);
                }
                if (full.payload_offset != 0 && len >= full.payload_offset && !icmp_error) {
                    ASSERT_EQ(r.flags & packet_flag::k_truncated, 0U);
                    ASSERT_EQ(r.src, full.src);
                    ASSERT_EQ(r.dst, full.dst);
                    ASSERT_EQ(r.sport, full.sport);
                    ASSERT_EQ(r.dport, full.dport);
                    ASSERT_EQ(r.tcp_seq, full.tcp_seq);
                    ASSERT_EQ(r.icmp_seq, full.icmp_seq);
                    ASSERT_EQ(r.payload_len, full.payload_len);
                    // The fingerprint only needs the first k_fingerprint_payload_bytes of the payload.
                    if (len >=
                        full.payload_offset + std::min<std::size_t>(k_fingerprint_payload_bytes, full.payload_len)) {
                        ASSERT_EQ(r.fingerprint, full.fingerprint);
                    }
                }
                ASSERT_EQ(r.fingerprint == 0, r.ip_version == 0);
            }
        }
    }
    EXPECT_GT(dissections, 10000U);
}

}  // namespace
}  // namespace hoptrace
