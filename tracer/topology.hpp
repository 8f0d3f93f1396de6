#pragma once
// Topology discovery with libnl-route (no parsing of `ip` output): the capture points of a container's
// path — its interface toward the default route (or --dest), the host-side veth peer, the bridge that
// veth is a port of, and the host's uplink toward the destination — plus the NAT rules that apply.

#include "tracer/netns.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace {

enum class Role { container, veth, bridge, uplink, other };
const char* to_string(Role role) noexcept;

struct LinkInfo {
    std::uint32_t ifindex = 0;
    std::string ifname;
    std::string kind;                    // rtnl link type: "veth", "bridge", "" for physical
    std::string mac;                     // "02:42:ac:11:00:02"
    std::vector<std::string> addresses;  // "172.17.0.2/16", IPv6 too
    std::uint32_t peer_ifindex = 0;      // IFLA_LINK (a veth's peer, in the peer's namespace)
    std::uint32_t master = 0;            // IFLA_MASTER (the bridge of a port)
    bool up = false;
    std::optional<std::int32_t> link_netnsid;  // IFLA_LINK_NETNSID: the peer's namespace, as this one numbers it
};

struct TopologyPoint {
    std::string name;  // unique point name: "c1:eth0" in a target namespace, the ifname in the host's
    Role role = Role::other;
    std::size_t netns = 0;  // index into the namespaces given to discover(): 0 = host, 1… = targets
    LinkInfo link;
};

struct NatRule {
    std::string kind;    // MASQUERADE | SNAT | DNAT
    std::string chain;   // POSTROUTING, PREROUTING, …
    std::string rule;    // the rule as iptables-save (ip6tables-save) prints it
    std::string family;  // ipv4 | ipv6
};

// Where the host sends what the containers send to the destination.
enum class Destination {
    routed,    // out of an uplink (or another bridge) the host routes it to
    host,      // an address of the host itself: delivered to the host (INPUT), no uplink
    isolated,  // on another Docker network: Docker's isolation rules drop what crosses between the two bridges
};
[[nodiscard]] const char* to_string(Destination d) noexcept;

struct Topology {
    std::vector<TopologyPoint> points;  // path order: container, veth, bridge, uplink (per target, shared last)
    std::vector<NatRule> nat;           // nat-table rules in the host namespace that apply to the path
    bool masquerade = false;            // a MASQUERADE/SNAT rule covers a container address leaving the uplink
    std::string dest;                   // --dest, or "" for the default route
    Destination destination = Destination::routed;
    std::string destination_note;  // one sentence for host and isolated: what happens and why
};

struct NamespaceRef {
    const Netns* ns = nullptr;
    std::string label;  // how points in it are named ("c1"), "" for the host
};

// namespaces[0] is the host; namespaces[1…] are targets (containers). `dest` picks the route whose output
// interface is the uplink; without it, the default route's. Errors are one line naming what was missing.
tl::expected<Topology, std::string> discover(const std::vector<NamespaceRef>& namespaces,
                                             const std::optional<std::string>& dest);

// Where the host side of `target` is when it is not `self`: the namespace holding the veth peer of the target's
// interface toward `dest` (IFLA_LINK_NETNSID, matched with RTM_GETNSID against the `ip netns` namespaces and
// those of processes). nullopt when the peer is in `self`, the interface is no veth, or no namespace matches.
tl::expected<std::optional<Netns>, std::string> peer_namespace(const Netns& target, const Netns& self,
                                                               const std::optional<std::string>& dest);

// The interfaces of one namespace (for --point checks and diagnostics).
tl::expected<std::vector<LinkInfo>, std::string> list_links(const Netns& ns);

}  // namespace hoptrace
