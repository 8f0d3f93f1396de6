#pragma once
// Words and numbers every output writes the same way: protocol names, durations, what an ICMP error means.

#include "tracer/packet.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::report {

struct FirewallRule;  // model.hpp

// "icmp", "tcp", "udp", "icmpv6", "sctp", else "ip-proto-N".
std::string proto_name(std::int64_t proto);
using hoptrace::is_icmp;             // tracer/packet.hpp: ICMP or ICMPv6, the tuple has an echo id, no ports
bool has_ports(std::int64_t proto);  // TCP, UDP, SCTP

// "850 ns", "12.4 µs", "3.20 ms", "1.500 s".
std::string format_duration(std::int64_t ns);

// Display columns of UTF-8 text (code points, not bytes).
std::size_t display_width(const std::string& s);

// A table of text: one column per cell, space-padded to the widest (display_width) and two spaces apart, the
// columns `right_aligned` says right-aligned, trailing spaces trimmed, each line after `indent`.
std::string table(const std::vector<std::vector<std::string>>& rows, const std::string& indent,
                  const std::vector<bool>& right_aligned);

// "1 flow", "3 flows": a count and the noun it takes.
std::string counted(std::int64_t n, std::string_view one, std::string_view many);

// What an ICMP error means, in words ("time exceeded", "port unreachable" …); family_proto 1 or 58.
std::string icmp_error_name(std::int64_t family_proto, std::int64_t type, std::int64_t code);

// A traced firewall rule (--trace-rules) in words: "filter FORWARD -p udp -m udp --dport 9999 -j DROP", or "the
// policy of filter FORWARD".
std::string rule_text(const FirewallRule& r);

}  // namespace hoptrace::report
