#include "tracer/conntrack.hpp"

#include "tracer/handles.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netlink/netfilter/ct.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netlink.h>

#include <array>
#include <memory>

namespace hoptrace {
namespace {

std::string address(nl_addr* a) {
    if (a == nullptr) return "";
    std::array<char, INET6_ADDRSTRLEN> buf{};
    const int family = nl_addr_get_family(a);
    if (inet_ntop(family, nl_addr_get_binary_addr(a), buf.data(), buf.size()) == nullptr) return "";
    return buf.data();
}

tl::expected<std::vector<ConntrackEntry>, std::string> dump_on(nl_sock* sock) {
    nl_cache* raw = nullptr;
    if (int err = nfnl_ct_alloc_cache(sock, &raw); err < 0)
        return tl::unexpected(std::string("conntrack: cannot dump the table: ") + nl_geterror(err));
    NlCachePtr cache(raw);
    std::vector<ConntrackEntry> out;
    for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* ct = reinterpret_cast<nfnl_ct*>(o);
        ConntrackEntry e;
        e.proto = nfnl_ct_get_proto(ct);
        const bool icmp = e.proto == IPPROTO_ICMP || e.proto == IPPROTO_ICMPV6;
        e.orig_src = address(nfnl_ct_get_src(ct, 0));
        e.orig_dst = address(nfnl_ct_get_dst(ct, 0));
        e.reply_src = address(nfnl_ct_get_src(ct, 1));
        e.reply_dst = address(nfnl_ct_get_dst(ct, 1));
        if (icmp) {
            e.orig_sport = nfnl_ct_get_icmp_id(ct, 0);
            e.reply_sport = nfnl_ct_get_icmp_id(ct, 1);
        } else {
            e.orig_sport = nfnl_ct_get_src_port(ct, 0);
            e.orig_dport = nfnl_ct_get_dst_port(ct, 0);
            e.reply_sport = nfnl_ct_get_src_port(ct, 1);
            e.reply_dport = nfnl_ct_get_dst_port(ct, 1);
        }
        out.push_back(std::move(e));
    }
    return out;
}

}  // namespace

tl::expected<ConntrackSocket, std::string> ConntrackSocket::open(const Netns& ns) {
    const std::string label = ns.name().empty() ? "" : ns.name() + ": ";
    auto opened = run_in(ns, []() -> tl::expected<nl_sock*, std::string> {
        NlSocketPtr sock(nl_socket_alloc());
        if (!sock) return tl::unexpected(std::string("conntrack: out of memory"));
        if (int err = nfnl_connect(sock.get()); err < 0)
            return tl::unexpected(std::string("conntrack: cannot open a netfilter netlink socket: ") +
                                  nl_geterror(err));
        return sock.release();
    });
    if (!opened) return tl::unexpected(label + opened.error());
    return ConntrackSocket(*opened, label);
}

ConntrackSocket::ConntrackSocket(ConntrackSocket&& other) noexcept
    : m_sock(std::exchange(other.m_sock, nullptr)), m_label(std::move(other.m_label)) {}

ConntrackSocket& ConntrackSocket::operator=(ConntrackSocket&& other) noexcept {
    if (this != &other) {
        if (m_sock != nullptr) nl_socket_free(m_sock);
        m_sock = std::exchange(other.m_sock, nullptr);
        m_label = std::move(other.m_label);
    }
    return *this;
}

ConntrackSocket::~ConntrackSocket() {
    if (m_sock != nullptr) nl_socket_free(m_sock);
}

tl::expected<std::vector<ConntrackEntry>, std::string> ConntrackSocket::dump() const {
    auto result = dump_on(m_sock);
    if (!result) return tl::unexpected(m_label + result.error());
    return result;
}

tl::expected<std::vector<ConntrackEntry>, std::string> conntrack_dump(const Netns& ns) {
    auto socket = ConntrackSocket::open(ns);
    if (!socket) return tl::unexpected(socket.error());
    return socket->dump();
}

}  // namespace hoptrace
