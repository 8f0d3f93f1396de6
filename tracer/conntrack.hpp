#pragma once
// The kernel's connection tracking table of a namespace, read with libnl-nf (NETLINK_NETFILTER): what NAT
// the kernel applied to each connection, to check against the rewrites hoptrace saw in the packets.

#include "tracer/netns.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct nl_sock;

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

// A netfilter netlink socket opened inside a namespace: it stays there, so a thread that can no longer enter the
// namespace (a capture that dropped CAP_SYS_ADMIN) still dumps that namespace's table. Dumping needs CAP_NET_ADMIN.
class ConntrackSocket {
public:
    // Opens it inside `ns` (entering the namespace on a thread of its own). An error names the namespace.
    static tl::expected<ConntrackSocket, std::string> open(const Netns& ns);
    ConntrackSocket(ConntrackSocket&&) noexcept;
    ConntrackSocket& operator=(ConntrackSocket&&) noexcept;
    ~ConntrackSocket();

    // The whole table, now. An error names the namespace (nf_conntrack not loaded, not root …).
    [[nodiscard]] tl::expected<std::vector<ConntrackEntry>, std::string> dump() const;

private:
    ConntrackSocket(nl_sock* sock, std::string label) : m_sock(sock), m_label(std::move(label)) {}
    nl_sock* m_sock = nullptr;
    std::string m_label;  // "NS: " or ""
};

// Dumps the table inside `ns`: ConntrackSocket::open(ns), then dump().
tl::expected<std::vector<ConntrackEntry>, std::string> conntrack_dump(const Netns& ns);

}  // namespace hoptrace
