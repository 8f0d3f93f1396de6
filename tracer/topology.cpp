#include "tracer/topology.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/net_namespace.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>

namespace hoptrace {
namespace {

std::string nl_error(const char* what, int err) { return std::string(what) + ": " + nl_geterror(err); }

std::string addr_text(nl_addr* a) {
    if (a == nullptr) return "";
    std::array<char, 128> buf{};
    nl_addr2str(a, buf.data(), buf.size());
    return buf.data();
}

// What discovery needs from one namespace, read inside it.
struct Snapshot {
    std::vector<LinkInfo> links;
    std::uint32_t route_oif = 0;  // output interface toward dest (or of the default route); 0 = none
    bool route_local = false;     // the route to dest is the local table's: dest is this namespace's own address
};

struct RouteAnswer {
    std::uint32_t oif = 0;
    bool local = false;
};

tl::expected<NlSocketPtr, std::string> route_socket() {
    NlSocketPtr sock(nl_socket_alloc());
    if (!sock) return tl::unexpected(std::string("netlink: out of memory"));
    if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0)
        return tl::unexpected(nl_error("netlink connect", err));
    return sock;
}

int on_route(nl_msg* msg, void* arg) {
    rtnl_route* route = nullptr;
    if (rtnl_route_parse(nlmsg_hdr(msg), &route) == 0 && route != nullptr) {
        auto* answer = static_cast<RouteAnswer*>(arg);
        if (rtnl_route_get_nnexthops(route) > 0)
            answer->oif = static_cast<std::uint32_t>(rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0)));
        answer->local = rtnl_route_get_type(route) == RTN_LOCAL;
        rtnl_route_put(route);
    }
    return NL_OK;
}

// RTM_GETROUTE for one address: the kernel's own answer, policy routing included.
tl::expected<RouteAnswer, std::string> route_lookup(const std::string& dest) {
    auto sock = route_socket();
    if (!sock) return tl::unexpected(sock.error());
    nl_socket_disable_auto_ack(sock->get());
    nl_addr* parsed = nullptr;
    if (nl_addr_parse(dest.c_str(), AF_UNSPEC, &parsed) < 0 || parsed == nullptr)
        return tl::unexpected("--dest '" + dest + "': not an IP address");
    NlAddrPtr addr(parsed);
    rtmsg header{};
    header.rtm_family = static_cast<unsigned char>(nl_addr_get_family(addr.get()));
    header.rtm_dst_len = static_cast<unsigned char>(nl_addr_get_prefixlen(addr.get()));
    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETROUTE, 0));
    if (!msg || nlmsg_append(msg.get(), &header, sizeof header, NLMSG_ALIGNTO) < 0 ||
        nla_put_addr(msg.get(), RTA_DST, addr.get()) < 0)
        return tl::unexpected(std::string("netlink: cannot build a route request"));
    RouteAnswer answer;
    nl_socket_modify_cb(sock->get(), NL_CB_VALID, NL_CB_CUSTOM, on_route, &answer);
    if (int err = nl_send_auto(sock->get(), msg.get()); err < 0) return tl::unexpected(nl_error("route lookup", err));
    if (int err = nl_recvmsgs_default(sock->get()); err < 0) {
        if (err == -NLE_NOADDR || err == -NLE_OBJ_NOTFOUND || err == -NLE_FAILURE) return RouteAnswer{};  // none
        return tl::unexpected("route to " + dest + ": " + nl_geterror(err));
    }
    return answer;
}

tl::expected<Snapshot, std::string> snapshot(const std::optional<std::string>& dest) {
    auto sock = route_socket();
    if (!sock) return tl::unexpected(sock.error());
    nl_cache* raw = nullptr;
    if (int err = rtnl_link_alloc_cache(sock->get(), AF_UNSPEC, &raw); err < 0)
        return tl::unexpected(nl_error("netlink link dump", err));
    NlCachePtr links(raw);
    if (int err = rtnl_addr_alloc_cache(sock->get(), &raw); err < 0)
        return tl::unexpected(nl_error("netlink address dump", err));
    NlCachePtr addrs(raw);

    Snapshot snap;
    for (nl_object* o = nl_cache_get_first(links.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* link = reinterpret_cast<rtnl_link*>(o);
        LinkInfo info;
        info.ifindex = static_cast<std::uint32_t>(rtnl_link_get_ifindex(link));
        info.ifname = rtnl_link_get_name(link) != nullptr ? rtnl_link_get_name(link) : "";
        info.kind = rtnl_link_get_type(link) != nullptr ? rtnl_link_get_type(link) : "";
        info.mac = addr_text(rtnl_link_get_addr(link));
        info.peer_ifindex = static_cast<std::uint32_t>(std::max(0, rtnl_link_get_link(link)));
        info.master = static_cast<std::uint32_t>(std::max(0, rtnl_link_get_master(link)));
        info.up = (rtnl_link_get_flags(link) & IFF_UP) != 0;
        if (std::int32_t nsid = -1; rtnl_link_get_link_netnsid(link, &nsid) == 0 && nsid >= 0) info.link_netnsid = nsid;
        snap.links.push_back(std::move(info));
    }
    for (nl_object* o = nl_cache_get_first(addrs.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* addr = reinterpret_cast<rtnl_addr*>(o);
        const auto ifindex = static_cast<std::uint32_t>(rtnl_addr_get_ifindex(addr));
        for (auto& l : snap.links)
            if (l.ifindex == ifindex) l.addresses.push_back(addr_text(rtnl_addr_get_local(addr)));  // "a.b.c.d/len"
    }
    if (dest) {
        auto route = route_lookup(*dest);
        if (!route) return tl::unexpected(route.error());
        snap.route_oif = route->oif;
        snap.route_local = route->local;
    } else {
        if (int err = rtnl_route_alloc_cache(sock->get(), AF_INET, 0, &raw); err < 0)
            return tl::unexpected(nl_error("netlink route dump", err));
        NlCachePtr routes(raw);
        for (nl_object* o = nl_cache_get_first(routes.get()); o != nullptr; o = nl_cache_get_next(o)) {
            auto* route = reinterpret_cast<rtnl_route*>(o);
            if (rtnl_route_get_table(route) != RT_TABLE_MAIN || rtnl_route_get_type(route) != RTN_UNICAST) continue;
            nl_addr* dst = rtnl_route_get_dst(route);
            if (dst != nullptr && nl_addr_get_prefixlen(dst) != 0) continue;
            if (rtnl_route_get_nnexthops(route) == 0) continue;
            snap.route_oif = static_cast<std::uint32_t>(rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0)));
            break;
        }
    }
    return snap;
}

const LinkInfo* by_index(const Snapshot& s, std::uint32_t ifindex) {
    for (const auto& l : s.links)
        if (l.ifindex == ifindex) return &l;
    return nullptr;
}

// The nat tables of iptables-save and ip6tables-save, read inside the host namespace. There is no netlink API
// for xtables rules (libnl does not cover nftables either), so this one piece of NAT discovery reads the
// tools' output. A missing ip6tables (or a kernel without IPv6 NAT) just contributes nothing.
struct NatDump {
    std::string v4;
    std::string v6;
};
NatDump iptables_rules(const char* table) {
    NatDump dump;
    if (auto r = run_program({"iptables-save", "-t", table}); r && r->status == 0) dump.v4 = r->out;
    if (auto r = run_program({"ip6tables-save", "-t", table}); r && r->status == 0) dump.v6 = r->out;
    return dump;
}

// Whether address `addr_with_len` ("172.17.0.2/16", "fd00:17::2/64") lies in `cidr` ("172.17.0.0/16",
// "fd00:17::/64", or a bare address = one host). Different families never match.
bool in_cidr(const std::string& addr_with_len, const std::string& cidr) {
    const std::string addr = addr_with_len.substr(0, addr_with_len.find('/'));
    const auto slash = cidr.find('/');
    const std::string net = cidr.substr(0, slash);
    const bool v6 = addr.find(':') != std::string::npos;
    if (v6 != (net.find(':') != std::string::npos)) return false;
    std::array<unsigned char, 16> a{};
    std::array<unsigned char, 16> n{};
    const int family = v6 ? AF_INET6 : AF_INET;
    if (inet_pton(family, addr.c_str(), a.data()) != 1 || inet_pton(family, net.c_str(), n.data()) != 1) return false;
    const int bits = v6 ? 128 : 32;
    const int len = slash == std::string::npos ? bits : std::clamp(std::atoi(cidr.c_str() + slash + 1), 0, bits);
    for (int i = 0; i < len; ++i) {
        const auto mask = static_cast<unsigned char>(0x80U >> (i % 8));
        if ((a[static_cast<std::size_t>(i / 8)] & mask) != (n[static_cast<std::size_t>(i / 8)] & mask)) return false;
    }
    return true;
}

// The address of a DNAT --to-destination: "172.17.0.2:80", "172.17.0.2", "[fd00:17::2]:80", "fd00:17::2".
std::string dnat_address(const std::string& to) {
    if (!to.empty() && to.front() == '[') return to.substr(1, to.find(']') - 1);
    if (std::count(to.begin(), to.end(), ':') > 1) return to;  // a bare IPv6 address
    return to.substr(0, to.find(':'));
}

// One `-A CHAIN …` line of iptables-save, the options hoptrace reads.
struct Rule {
    std::string chain;
    std::string target;
    std::string source;
    std::string destination;
    std::string to_destination;
    std::string in_if;
    std::string out_if;
    bool in_negated = false;
    bool out_negated = false;
    bool destination_negated = false;
};

std::optional<Rule> parse_rule(const std::string& line) {
    if (line.rfind("-A ", 0) != 0) return std::nullopt;
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    Rule r;
    r.chain = w.size() > 1 ? w[1] : "";
    for (std::size_t i = 2; i + 1 < w.size(); ++i) {
        const bool negated = w[i] == "!" && i + 2 < w.size();
        const std::string& opt = negated ? w[i + 1] : w[i];
        const std::string& val = negated ? w[i + 2] : w[i + 1];
        if (opt == "-j") r.target = val;
        else if (opt == "-s") r.source = val;
        else if (opt == "-d") r.destination = val, r.destination_negated = negated;
        else if (opt == "-i") r.in_if = val, r.in_negated = negated;
        else if (opt == "-o") r.out_if = val, r.out_negated = negated;
        else if (opt == "--to-destination") r.to_destination = val;
        if (negated) ++i;
    }
    return r;
}

// Which nat rules apply to the path: MASQUERADE/SNAT for a container address leaving by the uplink (not
// Docker's hairpin rule for a published port, whose destination is the container itself), DNAT to a
// container address. Without an uplink (delivered to the host itself) nothing is source-translated.
void nat_rules(const std::string& dump, const std::string& family, const std::vector<std::string>& container_addrs,
               const std::string& uplink, Topology& topo) {
    std::istringstream in(dump);
    std::string line;
    while (std::getline(in, line)) {
        const auto r = parse_rule(line);
        if (!r) continue;
        if (r->target == "MASQUERADE" || r->target == "SNAT") {
            bool covers = r->source.empty();
            bool to_container = false;
            for (const auto& a : container_addrs) {
                covers = covers || in_cidr(a, r->source);
                to_container =
                    to_container || (!r->destination.empty() && !r->destination_negated && in_cidr(a, r->destination));
            }
            const bool leaves_uplink =
                !uplink.empty() && (r->out_if.empty() || (r->out_negated ? r->out_if != uplink : r->out_if == uplink));
            if (covers && leaves_uplink && !to_container) {
                topo.nat.push_back({r->target, r->chain, line, family});
                topo.masquerade = true;
            }
        } else if (r->target == "DNAT") {
            const std::string to = dnat_address(r->to_destination);
            for (const auto& a : container_addrs) {
                if (a.substr(0, a.find('/')) == to) {
                    topo.nat.push_back({r->target, r->chain, line, family});
                    break;
                }
            }
        }
    }
}

// Docker's network isolation between two bridges, in the filter table: DOCKER-ISOLATION-STAGE-1 sends what comes
// in from `from` and leaves by another interface to DOCKER-ISOLATION-STAGE-2, which drops what leaves by `to`.
// The two rules, or nothing when they are not both there.
std::vector<std::string> isolation_rules(const std::string& filter_dump, const std::string& from,
                                         const std::string& to) {
    std::string stage1;
    std::string stage2;
    std::istringstream in(filter_dump);
    for (std::string line; std::getline(in, line);) {
        const auto r = parse_rule(line);
        if (!r) continue;
        if (r->chain == "DOCKER-ISOLATION-STAGE-1" && r->target == "DOCKER-ISOLATION-STAGE-2" && !r->in_negated &&
            r->in_if == from && (r->out_if.empty() || (r->out_negated ? r->out_if != to : r->out_if == to)))
            stage1 = line;
        if (r->chain == "DOCKER-ISOLATION-STAGE-2" && r->target == "DROP" && !r->out_negated && r->out_if == to &&
            (r->in_if.empty() || (r->in_negated ? r->in_if != from : r->in_if == from)))
            stage2 = line;
    }
    if (stage1.empty() || stage2.empty()) return {};
    return {stage1, stage2};
}

}  // namespace

const char* to_string(Role role) noexcept {
    switch (role) {
        case Role::container:
            return "container";
        case Role::veth:
            return "veth";
        case Role::bridge:
            return "bridge";
        case Role::uplink:
            return "uplink";
        case Role::other:
            return "other";
    }
    return "other";
}

const char* to_string(Destination d) noexcept {
    switch (d) {
        case Destination::routed:
            return "routed";
        case Destination::host:
            return "host";
        case Destination::isolated:
            return "isolated";
    }
    return "routed";
}

tl::expected<std::vector<LinkInfo>, std::string> list_links(const Netns& ns) {
    auto snap = run_in(ns, [] { return snapshot(std::nullopt); });
    if (!snap) return tl::unexpected(snap.error());
    return std::move(snap->links);
}

namespace {

// A destination behind `other`, another bridge than the path's: blocked when Docker isolates the two networks.
void isolation_of(const Netns& host_ns, const std::vector<TopologyPoint>& shared, const LinkInfo& other,
                  const std::string& what, Topology& topo) {
    auto filter = run_in(host_ns, [] { return tl::expected<NatDump, std::string>(iptables_rules("filter")); });
    if (!filter) return;
    for (const auto& s : shared) {
        if (s.role != Role::bridge) continue;
        auto rules = isolation_rules(filter->v4, s.link.ifname, other.ifname);
        if (rules.empty()) rules = isolation_rules(filter->v6, s.link.ifname, other.ifname);
        if (rules.empty()) continue;
        topo.destination = Destination::isolated;
        topo.destination_note = what + " is on " + other.ifname + ", another Docker network than " + s.link.ifname +
                                "'s: blocked by Docker's network isolation (" + rules[0] + "; " + rules[1] +
                                "), unless a DOCKER-USER rule accepts it first";
        return;
    }
}

}  // namespace

tl::expected<Topology, std::string> discover(const std::vector<NamespaceRef>& namespaces,
                                             const std::optional<std::string>& dest) {
    if (namespaces.size() < 2) return tl::unexpected(std::string("no target namespace to discover"));
    const Netns& host_ns = *namespaces[0].ns;
    auto host = run_in(host_ns, [&] { return snapshot(dest); });
    if (!host) return tl::unexpected("host namespace: " + host.error());

    Topology topo;
    topo.dest = dest.value_or("");
    std::vector<std::string> container_addrs;
    std::vector<TopologyPoint> shared;  // bridge(s) and uplink, after every target's own points
    auto add_shared = [&](TopologyPoint p) {
        for (const auto& s : shared)
            if (s.link.ifindex == p.link.ifindex) return;
        shared.push_back(std::move(p));
    };
    for (std::size_t t = 1; t < namespaces.size(); ++t) {
        const NamespaceRef& ref = namespaces[t];
        if (ref.ns->same_as(host_ns))
            return tl::unexpected(ref.label +
                                  ": the target is the host namespace itself; name the host with --host-netns");
        auto snap = run_in(*ref.ns, [&] { return snapshot(dest); });
        if (!snap) return tl::unexpected(ref.label + ": " + snap.error());
        const LinkInfo* inner = by_index(*snap, snap->route_oif);
        if (inner == nullptr) {
            return tl::unexpected(ref.label + ": no " + (dest ? "route to " + *dest : std::string("default route")) +
                                  " in this namespace; give --dest IP or name the points with --point");
        }
        container_addrs.insert(container_addrs.end(), inner->addresses.begin(), inner->addresses.end());
        topo.points.push_back({ref.label + ":" + inner->ifname, Role::container, t, *inner});
        if (inner->kind != "veth") continue;  // macvlan/ipvlan: no host-side peer to capture on
        const LinkInfo* veth = nullptr;
        for (const auto& l : host->links)
            if (l.ifindex == inner->peer_ifindex && l.kind == "veth" && l.peer_ifindex == inner->ifindex) veth = &l;
        if (veth == nullptr) {
            return tl::unexpected(ref.label + ": the peer of " + inner->ifname + " (ifindex " +
                                  std::to_string(inner->peer_ifindex) +
                                  ") is not in the host namespace; is --host-netns right?");
        }
        topo.points.push_back({veth->ifname, Role::veth, 0, *veth});
        if (const LinkInfo* bridge = by_index(*host, veth->master))
            add_shared({bridge->ifname, Role::bridge, 0, *bridge});
    }
    // The host's route to the destination: out of an uplink; or the local table's (an address of the host: no
    // uplink, lo is never one); or another container network's bridge, which Docker may isolate from this one.
    const std::string what = dest ? *dest : std::string("the default route's destination");
    const LinkInfo* uplink = host->route_local ? nullptr : by_index(*host, host->route_oif);
    if (host->route_local) {
        topo.destination = Destination::host;
        topo.destination_note = what +
                                " is an address of the host: delivered to the host itself (no uplink), unless a "
                                "published port's DNAT sends it on to a container";
    }
    if (uplink != nullptr) {
        bool is_bridge = false;
        for (const auto& s : shared) is_bridge = is_bridge || s.link.ifindex == uplink->ifindex;
        if (!is_bridge && uplink->kind == "bridge") isolation_of(host_ns, shared, *uplink, what, topo);
        if (!is_bridge) add_shared({uplink->ifname, Role::uplink, 0, *uplink});
    }
    for (auto& s : shared) topo.points.push_back(std::move(s));
    auto rules = run_in(host_ns, [] { return tl::expected<NatDump, std::string>(iptables_rules("nat")); });
    if (rules) {
        const std::string up = uplink != nullptr ? uplink->ifname : "";
        nat_rules(rules->v4, "ipv4", container_addrs, up, topo);
        nat_rules(rules->v6, "ipv6", container_addrs, up, topo);
    }
    return topo;
}

namespace {

int on_nsid(nl_msg* msg, void* arg) {
    std::array<nlattr*, NETNSA_MAX + 1> tb{};
    if (nlmsg_parse(nlmsg_hdr(msg), sizeof(rtgenmsg), tb.data(), NETNSA_MAX, nullptr) == 0 &&
        tb[NETNSA_NSID] != nullptr)
        *static_cast<std::int32_t*>(arg) = nla_get_s32(tb[NETNSA_NSID]);
    return NL_OK;
}

// RTM_GETNSID: the id the calling thread's namespace gives the namespace open as `fd` (-1: none assigned).
std::int32_t nsid_of(int fd) {
    auto sock = route_socket();
    if (!sock) return -1;
    nl_socket_disable_auto_ack(sock->get());
    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETNSID, NLM_F_REQUEST));
    rtgenmsg header{};
    header.rtgen_family = AF_UNSPEC;
    if (!msg || nlmsg_append(msg.get(), &header, sizeof header, NLMSG_ALIGNTO) < 0 ||
        nla_put_u32(msg.get(), NETNSA_FD, static_cast<std::uint32_t>(fd)) < 0)
        return -1;
    std::int32_t nsid = -1;
    nl_socket_modify_cb(sock->get(), NL_CB_VALID, NL_CB_CUSTOM, on_nsid, &nsid);
    if (nl_send_auto(sock->get(), msg.get()) < 0 || nl_recvmsgs_default(sock->get()) < 0) return -1;
    return nsid;
}

// A namespace by where it can be opened: an `ip netns` name, or a process.
struct NamespacePath {
    std::string netns;  // the ip-netns name, or "" for a process's
    pid_t pid = 0;
    [[nodiscard]] std::string path() const {
        return netns.empty() ? "/proc/" + std::to_string(pid) + "/ns/net" : "/run/netns/" + netns;
    }
};

// Calls fn for every network namespace hoptrace can name, once each (by inode): the `ip netns` ones first, then
// those of processes. Nothing is kept open. Stops when fn returns true.
template <typename Fn>
void each_namespace(Fn&& fn) {
    std::set<ino_t> seen;
    auto visit = [&](const NamespacePath& where) {
        struct stat st {};
        if (::stat(where.path().c_str(), &st) != 0 || !seen.insert(st.st_ino).second) return false;
        return fn(where, st.st_ino);
    };
    auto each_entry = [](const char* dir, auto&& on_name) {
        std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir), ::closedir);
        if (!d) return false;
        while (const dirent* e = ::readdir(d.get()))
            if (on_name(std::string(e->d_name))) return true;
        return false;
    };
    if (each_entry("/run/netns", [&](const std::string& name) {
            return name != "." && name != ".." && visit(NamespacePath{name, 0});
        }))
        return;
    each_entry("/proc", [&](const std::string& name) {
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) return false;
        return visit(NamespacePath{"", static_cast<pid_t>(std::stol(name))});
    });
}

}  // namespace

tl::expected<std::optional<Netns>, std::string> peer_namespace(const Netns& target, const Netns& self,
                                                               const std::optional<std::string>& dest) {
    auto snap = run_in(target, [&] { return snapshot(dest); });
    if (!snap) return tl::unexpected(snap.error());
    const LinkInfo* inner = by_index(*snap, snap->route_oif);
    if (inner == nullptr || inner->kind != "veth" || !inner->link_netnsid) return std::nullopt;
    auto mine = run_in(self, [] { return snapshot(std::nullopt); });
    if (mine) {
        for (const auto& l : mine->links)
            if (l.ifindex == inner->peer_ifindex && l.kind == "veth" && l.peer_ifindex == inner->ifindex)
                return std::nullopt;  // the peer is here: self is the host
    }
    // Each candidate opened only while it is asked about: a host may have more namespaces than descriptors.
    auto found = run_in(target, [&]() -> tl::expected<std::optional<NamespacePath>, std::string> {
        std::optional<NamespacePath> match;
        each_namespace([&](const NamespacePath& where, ino_t inode) {
            if (inode == target.inode()) return false;
            UniqueFd fd(::open(where.path().c_str(), O_RDONLY | O_CLOEXEC));
            if (!fd || nsid_of(fd.get()) != *inner->link_netnsid) return false;
            match = where;
            return true;
        });
        return match;
    });
    if (!found) return tl::unexpected(found.error());
    if (!*found) return std::nullopt;
    auto ns = (*found)->netns.empty() ? Netns::by_pid((*found)->pid) : Netns::by_name((*found)->netns);
    if (!ns || ns->same_as(self)) return std::nullopt;
    return std::optional<Netns>(std::move(*ns));
}

}  // namespace hoptrace
