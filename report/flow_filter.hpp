#pragma once
// The `--flow EXPR` selector shared by `hoptrace report` and `hoptrace export`.
//
// EXPR is a list of terms separated by spaces and/or commas; a flow is selected when every term matches:
//   proto NAME   icmp | icmpv6 | udp | tcp | sctp, or a protocol number 0-255; the bare NAME works too ("udp")
//   host ADDR    the original or translated source or destination is ADDR (IPv4 or IPv6)
//   port N       the original or translated source or destination port is N; for ICMP echo: the echo id
//   flow ID      the flow with flows.id = ID
// "proto udp, port 5353" and "udp port 5353" are the same filter. Matching reads only a flow's tuples
// (the flows table, read by report::select_flows in model.hpp), never packets.

#include <tl/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::report {

// One flow as the filter sees it: the columns of the `flows` table. Addresses are text as the store writes
// them; ports are TCP/UDP ports, and for ICMP/ICMPv6 `*_sport` is the echo id and `*_dport` 0.
struct FlowRow {
    std::int64_t id = 0;
    std::uint8_t proto = 0;
    std::string orig_src;
    std::string orig_dst;
    std::uint16_t orig_sport = 0;
    std::uint16_t orig_dport = 0;
    std::string trans_src;
    std::string trans_dst;
    std::uint16_t trans_sport = 0;
    std::uint16_t trans_dport = 0;
};

class FlowFilter {
public:
    // The error is one line naming the bad term and what was expected, e.g.
    // "unknown term 'prot' (terms: proto NAME, host ADDR, port N, flow ID)", "port '70000': not a port (0-65535)".
    static tl::expected<FlowFilter, std::string> parse(std::string_view expr);

    [[nodiscard]] bool matches(const FlowRow& flow) const;

    // The expression as parsed, normalised: "proto udp, host 172.17.0.2, port 5353".
    [[nodiscard]] std::string to_string() const;

private:
    enum class Kind : std::uint8_t { proto, host, port, flow };
    struct Term {
        Kind kind = Kind::proto;
        std::string address;      // host: canonical text (IpAddr::to_string), compared with the store's text
        std::int64_t number = 0;  // proto number, port, or flow id
    };

    std::vector<Term> m_terms;
};

}  // namespace hoptrace::report
