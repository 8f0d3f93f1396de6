#pragma once
// The firewall's own verdicts (`--trace-rules`): netfilter tracing in one namespace, with libnftnl + libmnl.
//
// A temporary nftables table, `inet hoptrace_<pid>`, sets `meta nftrace` on the traced containers' packets: those
// whose connection (conntrack, so replies and NATed packets too) has its original source, original destination
// or reply source in one of their networks, and the first packet of every connection to a published port at one of
// the host's own addresses (before its DNAT names the container). Its chains hook prerouting and output at priority
// -150 (after conntrack, before NAT). The kernel then reports every rule such a packet meets, in every table of the
// namespace (iptables-nft's included), as NFT_MSG_TRACE on NFNLGRP_NFTRACE; a thread of its own reads them. At stop the
// table is removed; the kernel removes it anyway when its socket closes (NFT_TABLE_F_OWNER, kernel 5.12 on: even after
// SIGKILL), and on older kernels a table whose process is gone is removed by the next run
// (remove_stale_trace_tables).
//
// The kernel does not stamp trace events: ts_ns is when hoptrace read the event, microseconds after the packet.

#include "tracer/netns.hpp"
#include "tracer/packet.hpp"

#include <tl/expected.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hoptrace {

// The packet's headers as the hook saw them (NAT may have rewritten them since it was captured).
struct TracedPacket {
    std::uint8_t ip_version = 0;  // 0: not IP (or the header was not in the event)
    std::uint8_t proto = 0;
    IpAddr src;
    IpAddr dst;
    std::uint16_t sport = 0;  // UDP/TCP ports; ICMP/ICMPv6 echo: the id in sport, as in our tuples
    std::uint16_t dport = 0;
    std::uint16_t ip_id = 0;
    std::uint16_t ip_len = 0;  // IPv4 total length; IPv6 payload length + 40
};

struct RuleTraceEvent {
    std::int64_t ts_ns = 0;
    std::uint32_t trace_id = 0;  // the kernel's id for one packet's walk through the hooks (reused later)
    std::uint64_t packet = 0;    // hoptrace's number for that walk: one trace id, events less than 10 ms apart
    std::string family;          // ip | ip6 | inet | bridge | arp | netdev
    std::string table;
    std::string chain;
    std::string type;          // packet (the headers, as a chain is entered) | rule | return | policy
    std::uint64_t handle = 0;  // the rule's, for type rule
    std::string rule;          // its text: as iptables-save prints it (iptables-nft rules), else nft's expressions
    std::string verdict;       // accept | drop | continue | jump | goto | return | queue | stolen | repeat | break
    std::string target;        // jump and goto: the chain
    std::uint32_t iif = 0;     // interface indexes in the traced namespace (0: none)
    std::uint32_t oif = 0;
    TracedPacket headers;
};

struct TracedNetwork {
    IpAddr address;  // any address in it; the prefix says how much counts
    int prefix = 0;
};

class RuleTracer {
public:
    // In `ns`: adds this process's table for `networks` (and the first packet of connections
    // to the host's published `ports`) and starts reading trace events. Needs CAP_SYS_ADMIN (to enter the
    // namespace) and CAP_NET_ADMIN; stop() needs CAP_NET_ADMIN still (nfnetlink checks the sender as well as the
    // socket's opener), not the namespace. The error is one line naming the namespace.
    static tl::expected<std::unique_ptr<RuleTracer>, std::string> start(const Netns& ns,
                                                                        const std::vector<TracedNetwork>& networks,
                                                                        const std::vector<std::uint16_t>& ports);
    RuleTracer(const RuleTracer&) = delete;
    RuleTracer& operator=(const RuleTracer&) = delete;
    ~RuleTracer();  // stop(), its result dropped: the table never outlives the tracer

    // Stops reading, removes the table and returns the events in arrival order, their `rule` empty: the rules'
    // texts are RuleCounters' (which reads every rule of the namespace anyway). Idempotent (later calls return
    // nothing).
    std::vector<RuleTraceEvent> stop();
    // How often the kernel could not deliver trace events (the socket's buffer was full): their verdicts are missing.
    [[nodiscard]] std::uint64_t overflows() const noexcept;
    // Problems met on the way (the table could not be removed …), one line each.
    [[nodiscard]] std::vector<std::string> notes() const;
    [[nodiscard]] const std::string& table_name() const noexcept;

    struct State;  // rule_trace.cpp

private:
    explicit RuleTracer(std::unique_ptr<State> state);
    std::unique_ptr<State> m_state;
};

// A rule whose counter moved during a capture: what a capture without --trace-rules can still say about the
// firewall (an inference: the counter counts every packet the rule matched, not only the traced containers').
struct RuleCount {
    std::string family;
    std::string table;
    std::string chain;
    std::uint64_t handle = 0;
    std::string rule;           // as iptables-save prints it, else "nft: " and nft's expressions
    std::uint64_t packets = 0;  // how much its counter moved
};

// The counters of every rule of a namespace (its nf_tables rules, iptables-nft's included), read at start() (which
// enters the namespace: CAP_SYS_ADMIN, CAP_NET_ADMIN) and again at stop() (through the socket opened then:
// CAP_NET_ADMIN only). iptables-legacy rules are not nf_tables rules and are not seen.
class RuleCounters {
public:
    static tl::expected<std::unique_ptr<RuleCounters>, std::string> start(const Netns& ns);
    RuleCounters(const RuleCounters&) = delete;
    RuleCounters& operator=(const RuleCounters&) = delete;
    ~RuleCounters();
    // The rules whose counters moved since start(). Idempotent (later calls return nothing).
    tl::expected<std::vector<RuleCount>, std::string> stop();
    // A rule's text (as iptables-save prints it, else nft's expressions), from the reads of start() and stop().
    [[nodiscard]] std::string rule_text(const std::string& family, const std::string& table,
                                        std::uint64_t handle) const;

    struct State;  // rule_trace.cpp

private:
    explicit RuleCounters(std::unique_ptr<State> state);
    std::unique_ptr<State> m_state;
};

// The tables `inet hoptrace_<pid>` in `ns` whose process is gone, removed (runs in `ns`). Returns their names.
tl::expected<std::vector<std::string>, std::string> remove_stale_trace_tables(const Netns& ns);
// Whether a table `inet hoptrace_*` exists in `ns` (for tests and checks).
tl::expected<std::vector<std::string>, std::string> trace_tables(const Netns& ns);

// Parses the network and transport header bytes of a trace event (IPv4/IPv6, then UDP/TCP/ICMP/ICMPv6 ports or id).
TracedPacket parse_traced_headers(std::span<const std::uint8_t> network, std::span<const std::uint8_t> transport);

}  // namespace hoptrace
