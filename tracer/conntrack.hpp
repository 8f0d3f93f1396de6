#pragma once
// The kernel's connection tracking table of a namespace, read with libnl-nf (NETLINK_NETFILTER): what NAT
// the kernel applied to each connection, to check against the rewrites hoptrace saw in the packets.

#include "tracer/netns.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace hoptrace {

// Ports as conntrack keeps them; for ICMP/ICMPv6 the echo id is in sport and dport is 0, as in our tuples.
struct ConntrackEntry {
    std::uint8_t proto = 0;
    std::string orig_src;
    std::string orig_dst;
    std::uint16_t orig_sport = 0;
    std::uint16_t orig_dport = 0;
    std::string reply_src;
    std::string reply_dst;
    std::uint16_t reply_sport = 0;
    std::uint16_t reply_dport = 0;
};

// Dumps the table inside `ns`. An error names the namespace (nf_conntrack not loaded, not root …).
tl::expected<std::vector<ConntrackEntry>, std::string> conntrack_dump(const Netns& ns);

}  // namespace hoptrace
