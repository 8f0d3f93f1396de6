// FlowFilter: the `--flow EXPR` selector of report and export. Flows below are the lab's (tests/data/lab
// README, "What NAT did"): c1 and c2 masqueraded to 192.168.43.116, c2's ICMP id 7777 -> 57410 and UDP
// source port 40000 -> 64389.

#include "report/flow_filter.hpp"

#include <gtest/gtest.h>

namespace hoptrace::report {
namespace {

FlowRow flow(std::int64_t id, std::uint8_t proto, std::string src, std::uint16_t sport, std::uint16_t dport,
             std::uint16_t nat_sport) {
    FlowRow f;
    f.id = id;
    f.proto = proto;
    f.orig_src = std::move(src);
    f.orig_dst = "198.51.100.10";
    f.orig_sport = sport;
    f.orig_dport = dport;
    f.trans_src = "192.168.43.116";
    f.trans_dst = "198.51.100.10";
    f.trans_sport = nat_sport;
    f.trans_dport = dport;
    return f;
}

const FlowRow k_c1_icmp = flow(1, 1, "172.17.0.2", 7777, 0, 7777);
const FlowRow k_c2_icmp = flow(2, 1, "172.17.0.3", 7777, 0, 57410);
const FlowRow k_c1_udp = flow(3, 17, "172.17.0.2", 40000, 5353, 40000);
const FlowRow k_c2_udp = flow(4, 17, "172.17.0.3", 40000, 5353, 64389);

FlowFilter parsed(std::string_view expr) {
    auto f = FlowFilter::parse(expr);
    EXPECT_TRUE(f) << expr << ": " << (f ? "" : f.error());
    return f ? *f : *FlowFilter::parse("flow 999999");
}

std::string selected(std::string_view expr) {
    const FlowFilter f = parsed(expr);
    std::string ids;
    for (const FlowRow* r : {&k_c1_icmp, &k_c2_icmp, &k_c1_udp, &k_c2_udp})
        if (f.matches(*r)) ids += std::to_string(r->id);
    return ids;
}

std::string error_of(std::string_view expr) {
    auto f = FlowFilter::parse(expr);
    EXPECT_FALSE(f) << expr << " parsed as " << (f ? f->to_string() : "");
    return f ? "" : f.error();
}

TEST(FlowFilter, proto_selects_by_protocol_name_number_or_bare_name) {
    EXPECT_EQ(selected("proto icmp"), "12");
    EXPECT_EQ(selected("proto udp"), "34");
    EXPECT_EQ(selected("proto 17"), "34");
    EXPECT_EQ(selected("udp"), "34");
    EXPECT_EQ(selected("PROTO UDP"), "34");
    EXPECT_EQ(selected("proto tcp"), "");
    EXPECT_EQ(selected("icmpv6"), "");
}

TEST(FlowFilter, host_matches_original_or_translated_source_or_destination) {
    EXPECT_EQ(selected("host 172.17.0.3"), "24");        // original source
    EXPECT_EQ(selected("host 192.168.43.116"), "1234");  // translated source (masquerade)
    EXPECT_EQ(selected("host 198.51.100.10"), "1234");   // destination
    EXPECT_EQ(selected("host 10.0.0.1"), "");
}

TEST(FlowFilter, host_compares_addresses_not_spellings) {
    FlowRow v6;
    v6.id = 9;
    v6.proto = 58;
    v6.orig_src = "2001:db8::2";  // the store writes inet_ntop's canonical text
    v6.orig_dst = "2001:db8:1::10";
    v6.trans_src = v6.orig_src;
    v6.trans_dst = v6.orig_dst;
    EXPECT_TRUE(parsed("host 2001:0db8:0000::0002").matches(v6));
    EXPECT_TRUE(parsed("host 2001:DB8:1:0:0:0:0:10").matches(v6));
    EXPECT_FALSE(parsed("host 2001:db8::3").matches(v6));
}

TEST(FlowFilter, port_matches_ports_before_and_after_nat_and_the_icmp_echo_id) {
    EXPECT_EQ(selected("port 5353"), "34");
    EXPECT_EQ(selected("port 40000"), "34");  // both original source ports
    EXPECT_EQ(selected("port 64389"), "4");   // c2's port after masquerade
    EXPECT_EQ(selected("port 57410"), "2");   // c2's echo id after masquerade
    EXPECT_EQ(selected("port 7777"), "12");
    EXPECT_EQ(selected("port 0"), "");  // an ICMP flow's dport is 0 but that is not a port
}

TEST(FlowFilter, every_term_must_match) {
    EXPECT_EQ(selected("proto udp host 172.17.0.3"), "4");
    EXPECT_EQ(selected("udp,host,172.17.0.3"), "4");
    EXPECT_EQ(selected("  proto icmp ,  port 7777  "), "12");
    EXPECT_EQ(selected("proto icmp port 5353"), "");
    EXPECT_EQ(selected("flow 3"), "3");
    EXPECT_EQ(selected("flow 3 proto icmp"), "");
    EXPECT_EQ(selected("port 40000 port 5353"), "34");
}

TEST(FlowFilter, to_string_is_the_normalised_expression) {
    EXPECT_EQ(parsed("UDP,host 2001:0db8::1 port 53").to_string(), "proto udp, host 2001:db8::1, port 53");
    EXPECT_EQ(parsed("proto 58 flow 7").to_string(), "proto icmpv6, flow 7");
    EXPECT_EQ(parsed("proto 47").to_string(), "proto 47");
}

TEST(FlowFilter, errors_name_the_bad_term) {
    EXPECT_EQ(error_of("prot icmp"), "unknown term 'prot' (terms: proto NAME, host ADDR, port N, flow ID)");
    EXPECT_EQ(error_of("proto icmp 53"), "unknown term '53' (terms: proto NAME, host ADDR, port N, flow ID)");
    EXPECT_EQ(error_of(""), "empty expression (terms: proto NAME, host ADDR, port N, flow ID)");
    EXPECT_EQ(error_of(" , "), "empty expression (terms: proto NAME, host ADDR, port N, flow ID)");
    EXPECT_EQ(error_of("proto gre"), "proto 'gre': unknown protocol (icmp, icmpv6, udp, tcp, sctp or a number 0-255)");
    EXPECT_EQ(error_of("proto 256"), "proto '256': unknown protocol (icmp, icmpv6, udp, tcp, sctp or a number 0-255)");
    EXPECT_EQ(error_of("host 172.17.0"), "host '172.17.0': not an IPv4 or IPv6 address");
    EXPECT_EQ(error_of("host example.com"), "host 'example.com': not an IPv4 or IPv6 address");
    EXPECT_EQ(error_of("port 65536"), "port '65536': not a port number (0-65535)");
    EXPECT_EQ(error_of("port -1"), "port '-1': not a port number (0-65535)");
    EXPECT_EQ(error_of("port 53x"), "port '53x': not a port number (0-65535)");
    EXPECT_EQ(error_of("flow 0"), "flow '0': not a flow id (a positive number, flows.id)");
    EXPECT_EQ(error_of("udp port"), "'port' needs a port number");
    EXPECT_EQ(error_of("host"), "'host' needs an address");
    EXPECT_EQ(error_of("flow"), "'flow' needs a flow id");
    EXPECT_EQ(error_of("proto"), "'proto' needs a protocol (icmp, icmpv6, udp, tcp, sctp or a number)");
}

}  // namespace
}  // namespace hoptrace::report
