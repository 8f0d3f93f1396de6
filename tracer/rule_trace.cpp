#include "tracer/rule_trace.hpp"

#include "tracer/errno_text.hpp"
#include "tracer/handles.hpp"
#include "tracer/privileges.hpp"
#include "tracer/wire.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/trace.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>

namespace hoptrace {
namespace {

constexpr const char* k_table_prefix = "hoptrace_";
constexpr std::uint8_t k_ct_original = 0;  // enum ip_conntrack_dir
constexpr std::uint8_t k_ct_reply = 1;

std::int64_t realtime_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string family_name(std::uint32_t family) {
    switch (family) {
        case NFPROTO_IPV4:
            return "ip";
        case NFPROTO_IPV6:
            return "ip6";
        case NFPROTO_INET:
            return "inet";
        case NFPROTO_BRIDGE:
            return "bridge";
        case NFPROTO_ARP:
            return "arp";
        case NFPROTO_NETDEV:
            return "netdev";
        default:
            return std::to_string(family);
    }
}

std::string verdict_name(std::uint32_t verdict) {
    switch (static_cast<std::int32_t>(verdict)) {
        case NF_DROP:
            return "drop";
        case NF_ACCEPT:
            return "accept";
        case NF_STOLEN:
            return "stolen";
        case NF_QUEUE:
            return "queue";
        case NF_REPEAT:
            return "repeat";
        case NFT_CONTINUE:
            return "continue";
        case NFT_BREAK:
            return "break";
        case NFT_JUMP:
            return "jump";
        case NFT_GOTO:
            return "goto";
        case NFT_RETURN:
            return "return";
        default:
            break;
    }
    // NF_QUEUE with a queue number, NF_DROP with an errno: the low byte is the verdict.
    if ((verdict & NF_VERDICT_MASK) == NF_QUEUE) return "queue";
    if ((verdict & NF_VERDICT_MASK) == NF_DROP) return "drop";
    return std::to_string(verdict);
}

using TablePtr = NftnlTablePtr;
using ChainPtr = NftnlChainPtr;
using RulePtr = NftnlRulePtr;
using TracePtr = NftnlTracePtr;

tl::expected<MnlSocketPtr, std::string> open_socket() {
    MnlSocketPtr nl(mnl_socket_open(NETLINK_NETFILTER));
    if (!nl) return tl::unexpected("cannot open a netfilter netlink socket: " + errno_text(errno));
    if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
        return tl::unexpected("cannot bind a netfilter netlink socket: " + errno_text(errno));
    return nl;
}

// Sends one batch of nf_tables messages (built by `fill`, at most `messages` of them) and waits for the kernel's
// answer to it: all of it is applied, or none. Room for 1 KiB per message (a marking rule takes about 400 bytes),
// twice over as libmnl asks: a message beyond the limit would be lost silently.
template <typename Fill>
tl::expected<void, std::string> send_batch(mnl_socket* nl, std::uint32_t& seq, Fill&& fill, std::size_t messages = 4) {
    const std::size_t limit = static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE) + 1024 * (messages + 2);
    std::vector<char> buf(2 * limit);
    mnl_nlmsg_batch* batch = mnl_nlmsg_batch_start(buf.data(), limit);
    nftnl_batch_begin(static_cast<char*>(mnl_nlmsg_batch_current(batch)), seq++);
    mnl_nlmsg_batch_next(batch);
    const std::uint32_t first = seq;
    fill(batch, seq);
    const std::uint32_t last = seq;
    nftnl_batch_end(static_cast<char*>(mnl_nlmsg_batch_current(batch)), seq++);
    mnl_nlmsg_batch_next(batch);
    const bool sent = mnl_socket_sendto(nl, mnl_nlmsg_batch_head(batch), mnl_nlmsg_batch_size(batch)) >= 0;
    mnl_nlmsg_batch_stop(batch);
    if (!sent) return tl::unexpected("cannot send to nf_tables: " + errno_text(errno));
    // Acknowledged: the last message asks for it; an error for any message of the batch comes first and aborts it.
    // Anything else on the socket (the rest of an interrupted dump) is not this batch's and is passed over.
    std::vector<char> reply(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
    for (;;) {
        pollfd p{mnl_socket_get_fd(nl), POLLIN, 0};
        if (::poll(&p, 1, 2000) <= 0) return tl::unexpected(std::string("nf_tables did not answer"));
        const ssize_t n = mnl_socket_recvfrom(nl, reply.data(), reply.size());
        if (n < 0) return tl::unexpected("nf_tables: " + errno_text(errno));
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(reply.data());
        for (int left = static_cast<int>(n); mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
            if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_seq < first || nlh->nlmsg_seq >= last) continue;
            if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) continue;
            const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
            if (err->error != 0) return tl::unexpected("nf_tables refused it: " + errno_text(-err->error));
            if (nlh->nlmsg_seq == last - 1) return {};
        }
    }
}

// A dump (NLM_F_DUMP) of nf_tables objects, each message given to `each`. The objects are copied out of libnftnl
// inside `each`, which must not throw (it runs inside libmnl's C callback): `each` records what it could not take.
template <typename Each>
tl::expected<void, std::string> dump_once(mnl_socket* nl, std::uint32_t& seq, std::uint16_t type, Each&& each) {
    std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
    const std::uint32_t mine = seq++;
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), type, NFPROTO_UNSPEC, NLM_F_DUMP, mine);
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        return tl::unexpected("cannot ask nf_tables: " + errno_text(errno));
    const unsigned portid = mnl_socket_get_portid(nl);
    using Fn = std::remove_reference_t<Each>;
    auto cb = [](const nlmsghdr* m, void* data) -> int {
        (*static_cast<Fn*>(data))(m);
        return MNL_CB_OK;
    };
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
        if (n < 0) return tl::unexpected("nf_tables: " + errno_text(errno));
        const int r = mnl_cb_run(buf.data(), static_cast<std::size_t>(n), mine, portid, cb, &each);
        if (r < 0) {
            const int error = errno;
            // The rules changed while they were dumped (NLM_F_DUMP_INTR): read the rest away, then again.
            if (error == EINTR) {
                for (int rest = 0; rest >= 0;) {
                    const ssize_t m = mnl_socket_recvfrom(nl, buf.data(), buf.size());
                    if (m < 0) break;
                    rest = mnl_cb_run(buf.data(), static_cast<std::size_t>(m), mine, portid, nullptr, nullptr);
                    if (rest == MNL_CB_STOP) break;
                }
                return tl::unexpected(std::string("EINTR"));
            }
            return tl::unexpected("nf_tables: " + errno_text(error));
        }
        if (r == MNL_CB_STOP) return {};
    }
}

template <typename Each>
tl::expected<void, std::string> dump(mnl_socket* nl, std::uint32_t& seq, std::uint16_t type, Each&& each,
                                     const std::function<void()>& restart = {}) {
    for (int attempt = 0;; ++attempt) {
        auto done = dump_once(nl, seq, type, each);
        if (done || done.error() != "EINTR") return done;
        if (attempt == 9) return tl::unexpected(std::string("nf_tables: the rules kept changing while read"));
        if (restart) restart();
    }
}

std::string text_of(const char* s) { return s != nullptr ? s : ""; }

// The `inet hoptrace_*` tables; `owned`: those a live socket owns (NFT_TABLE_F_OWNER: the kernel removes them with
// it, so they are never stale).
struct TraceTable {
    std::string name;
    bool owned = false;
};

tl::expected<std::vector<TraceTable>, std::string> list_trace_tables(mnl_socket* nl, std::uint32_t& seq) {
    std::vector<TraceTable> tables;
    auto listed = dump(
        nl, seq, NFT_MSG_GETTABLE,
        [&](const nlmsghdr* m) noexcept {
            try {
                TablePtr t(nftnl_table_alloc());
                if (!t || nftnl_table_nlmsg_parse(m, t.get()) < 0) return;
                if (nftnl_table_get_u32(t.get(), NFTNL_TABLE_FAMILY) != NFPROTO_INET) return;
                const std::string name = text_of(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME));
                const bool owned = nftnl_table_is_set(t.get(), NFTNL_TABLE_FLAGS) &&
                                   (nftnl_table_get_u32(t.get(), NFTNL_TABLE_FLAGS) & NFT_TABLE_F_OWNER) != 0;
                if (name.starts_with(k_table_prefix)) tables.push_back({name, owned});
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory: the table is not listed
            }
        },
        [&] { tables.clear(); });
    if (!listed) return tl::unexpected(listed.error());
    return tables;
}

std::optional<pid_t> owner_of(const std::string& table) {
    pid_t pid = 0;
    const char* begin = table.data() + std::string_view(k_table_prefix).size();
    const char* end = table.data() + table.size();
    auto [ptr, ec] = std::from_chars(begin, end, pid);
    if (ec != std::errc() || ptr != end || pid <= 0) return std::nullopt;
    return pid;
}

tl::expected<void, std::string> delete_table(mnl_socket* nl, std::uint32_t& seq, const std::string& name) {
    return send_batch(nl, seq, [&](mnl_nlmsg_batch* batch, std::uint32_t& s) {
        TablePtr t(nftnl_table_alloc());
        nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(static_cast<char*>(mnl_nlmsg_batch_current(batch)), NFT_MSG_DELTABLE,
                                              NFPROTO_INET, NLM_F_ACK, s++);
        nftnl_table_nlmsg_build_payload(nlh, t.get());
        mnl_nlmsg_batch_next(batch);
    });
}

// Tables of runs that are gone. A table owned by its socket (kernel 5.12 on) goes with its process, so only an
// unowned one can be stale: one whose name is hoptrace_PID with no process PID here (a table with our own pid is a
// dead run's whose pid came round again). A name that is not hoptrace_PID is not ours to judge; a table that cannot
// be removed (another pid namespace's, owned after all) is left, and said.
tl::expected<std::vector<std::string>, std::string> remove_stale(mnl_socket* nl, std::uint32_t& seq,
                                                                 std::vector<std::string>* left = nullptr) {
    auto tables = list_trace_tables(nl, seq);
    if (!tables) return tl::unexpected(tables.error());
    std::vector<std::string> removed;
    for (const TraceTable& t : *tables) {
        if (t.owned) continue;
        const auto pid = owner_of(t.name);
        if (!pid) continue;
        if (*pid != ::getpid() && (::kill(*pid, 0) == 0 || errno != ESRCH)) continue;
        if (auto gone = delete_table(nl, seq, t.name); !gone) {
            if (left != nullptr) left->push_back(t.name + ": " + gone.error());
            continue;
        }
        removed.push_back(t.name);
    }
    return removed;
}

// The expressions of one marking rule: `meta nfproto F ct DIR ip[6] saddr|daddr & MASK == NET meta nftrace set 1`.
void add_expr(nftnl_rule* r, nftnl_expr* e) { nftnl_rule_add_expr(r, e); }

nftnl_expr* meta_load(std::uint32_t key) {
    nftnl_expr* e = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
    return e;
}
nftnl_expr* cmp_eq(const void* data, std::uint32_t len) {
    nftnl_expr* e = nftnl_expr_alloc("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
    return e;
}

void set_nftrace(nftnl_rule* r) {
    nftnl_expr* one = nftnl_expr_alloc("immediate");
    const std::uint8_t on = 1;
    nftnl_expr_set_u32(one, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
    nftnl_expr_set(one, NFTNL_EXPR_IMM_DATA, &on, 1);
    add_expr(r, one);
    nftnl_expr* set = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(set, NFTNL_EXPR_META_KEY, NFT_META_NFTRACE);
    nftnl_expr_set_u32(set, NFTNL_EXPR_META_SREG, NFT_REG_1);
    add_expr(r, set);
}

RulePtr marking_rule(const std::string& table, const char* chain, const TracedNetwork& net, std::uint32_t ct_key,
                     std::uint8_t ct_dir) {
    const bool v6 = net.address.family == 6;
    const std::uint32_t len = v6 ? 16 : 4;
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain);
    const std::uint8_t nfproto = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
    add_expr(r.get(), meta_load(NFT_META_NFPROTO));
    add_expr(r.get(), cmp_eq(&nfproto, 1));
    nftnl_expr* ct = nftnl_expr_alloc("ct");
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_KEY, ct_key);
    nftnl_expr_set_u8(ct, NFTNL_EXPR_CT_DIR, ct_dir);
    nftnl_expr_set_u32(ct, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    add_expr(r.get(), ct);
    std::array<std::uint8_t, 16> mask{};
    std::array<std::uint8_t, 16> value{};
    std::array<std::uint8_t, 16> zero{};
    for (std::uint32_t i = 0; i < len; ++i) {
        const int bits = std::clamp(net.prefix - static_cast<int>(8 * i), 0, 8);
        mask[i] = static_cast<std::uint8_t>(bits == 0 ? 0 : 0xff << (8 - bits));
        value[i] = static_cast<std::uint8_t>(net.address.bytes[i] & mask[i]);
    }
    nftnl_expr* bw = nftnl_expr_alloc("bitwise");
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, len);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, mask.data(), len);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, zero.data(), len);
    add_expr(r.get(), bw);
    add_expr(r.get(), cmp_eq(value.data(), len));
    set_nftrace(r.get());
    return r;
}

// `ct state new fib daddr type local th dport PORT meta nftrace set 1`: the first packet of a connection to a published
// port at one of the host's own addresses. Its DNAT rewrites it to a container only at the nat hook, after the
// marking chains (its conntrack entry does not name the container yet); later packets are the container's by their
// reply tuple. Only the published ports: the host's other services are not traced.
NftnlRulePtr new_local_connection_rule(const std::string& table, const char* chain, std::uint16_t port) {
    NftnlRulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain);
    nftnl_expr* state = nftnl_expr_alloc("ct");
    nftnl_expr_set_u32(state, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
    nftnl_expr_set_u32(state, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    add_expr(r.get(), state);
    const std::uint32_t new_bit = 1U << 3;  // NF_CT_STATE_BIT(IP_CT_NEW)
    const std::uint32_t zero = 0;
    nftnl_expr* bw = nftnl_expr_alloc("bitwise");
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, sizeof new_bit);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, &new_bit, sizeof new_bit);
    nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, &zero, sizeof zero);
    add_expr(r.get(), bw);
    nftnl_expr* is_new = nftnl_expr_alloc("cmp");
    nftnl_expr_set_u32(is_new, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(is_new, NFTNL_EXPR_CMP_OP, NFT_CMP_NEQ);
    nftnl_expr_set(is_new, NFTNL_EXPR_CMP_DATA, &zero, sizeof zero);
    add_expr(r.get(), is_new);
    nftnl_expr* fib = nftnl_expr_alloc("fib");
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
    nftnl_expr_set_u32(fib, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
    add_expr(r.get(), fib);
    const std::uint32_t local = RTN_LOCAL;
    add_expr(r.get(), cmp_eq(&local, sizeof local));
    nftnl_expr* dport = nftnl_expr_alloc("payload");  // th dport: TCP, UDP and SCTP keep it at offset 2
    nftnl_expr_set_u32(dport, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
    nftnl_expr_set_u32(dport, NFTNL_EXPR_PAYLOAD_OFFSET, 2);
    nftnl_expr_set_u32(dport, NFTNL_EXPR_PAYLOAD_LEN, 2);
    nftnl_expr_set_u32(dport, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    add_expr(r.get(), dport);
    const std::uint16_t wire_port = htons(port);
    add_expr(r.get(), cmp_eq(&wire_port, sizeof wire_port));
    set_nftrace(r.get());
    return r;
}

tl::expected<void, std::string> add_table(mnl_socket* nl, std::uint32_t& seq, const std::string& name,
                                          const std::vector<TracedNetwork>& networks,
                                          const std::vector<std::uint16_t>& ports, bool owned) {
    return send_batch(
        nl, seq,
        [&](mnl_nlmsg_batch* batch, std::uint32_t& s) {
            auto next = [&](std::uint16_t type, std::uint16_t flags) {
                return nftnl_nlmsg_build_hdr(static_cast<char*>(mnl_nlmsg_batch_current(batch)), type, NFPROTO_INET,
                                             flags, s++);
            };
            // Owned by this socket: the kernel removes the table when the socket closes, however hoptrace ends.
            TablePtr t(nftnl_table_alloc());
            nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
            if (owned) nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER);
            nftnl_table_nlmsg_build_payload(next(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL), t.get());
            mnl_nlmsg_batch_next(batch);
            const std::array<std::pair<const char*, std::uint32_t>, 2> hooks{
                {{"prerouting", NF_INET_PRE_ROUTING}, {"output", NF_INET_LOCAL_OUT}}};
            for (const auto& [chain, hook] : hooks) {
                ChainPtr c(nftnl_chain_alloc());
                nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, name.c_str());
                nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain);
                nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
                nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, hook);
                nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, -150);  // after conntrack (-200), before DNAT (-100)
                nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
                nftnl_chain_nlmsg_build_payload(next(NFT_MSG_NEWCHAIN, NLM_F_CREATE), c.get());
                mnl_nlmsg_batch_next(batch);
            }
            for (const auto& [chain, hook] : hooks) {
                for (const TracedNetwork& net : networks) {
                    const bool v6 = net.address.family == 6;
                    const std::uint32_t src = v6 ? NFT_CT_SRC_IP6 : NFT_CT_SRC_IP;
                    const std::uint32_t dst = v6 ? NFT_CT_DST_IP6 : NFT_CT_DST_IP;
                    // Started by the container (forward and replies), to the container, and DNATed to it.
                    const std::array<std::pair<std::uint32_t, std::uint8_t>, 3> selectors{
                        {{src, k_ct_original}, {dst, k_ct_original}, {src, k_ct_reply}}};
                    for (const auto& [key, dir] : selectors) {
                        RulePtr r = marking_rule(name, chain, net, key, dir);
                        nftnl_rule_nlmsg_build_payload(next(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND), r.get());
                        mnl_nlmsg_batch_next(batch);
                    }
                }
            }
            for (const std::uint16_t port : ports) {
                NftnlRulePtr r = new_local_connection_rule(name, "prerouting", port);
                nftnl_rule_nlmsg_build_payload(next(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND), r.get());
                mnl_nlmsg_batch_next(batch);
            }
            // The last message asks for the acknowledgement send_batch waits for.
            TablePtr again(nftnl_table_alloc());
            nftnl_table_set_str(again.get(), NFTNL_TABLE_NAME, name.c_str());
            if (owned) nftnl_table_set_u32(again.get(), NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER);
            nftnl_table_nlmsg_build_payload(next(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK), again.get());
            mnl_nlmsg_batch_next(batch);
        },
        2 + 2 + 6 * networks.size() + ports.size() + 2);
}

// The rules of the namespace: (family, table, chain) -> handles in order; handle -> nft's text of the rule.
struct RuleKey {
    std::string family, table, chain;
    auto operator<=>(const RuleKey&) const = default;  // NOLINT(modernize-use-nullptr): clang-tidy 14 on <=>
};
using RuleId = std::tuple<std::string, std::string, std::uint64_t>;  // (family, table, handle)
struct Rules {
    std::map<RuleKey, std::vector<std::uint64_t>> order;
    std::map<RuleId, std::string> text;
    std::map<RuleId, std::string> chain;
    std::map<RuleId, std::uint64_t> packets;  // its counters' packets, when it has any (iptables-nft rules do)
};

std::string one_line(const std::string& s) {
    std::string out;
    bool space = false;
    for (const char c : s) {
        if (c == '\n' || c == '\t' || c == ' ') {
            space = !out.empty();
            continue;
        }
        if (space) out += ' ';
        space = false;
        out += c;
    }
    return out;
}

tl::expected<void, std::string> read_rules(mnl_socket* nl, std::uint32_t& seq, Rules& rules) {
    const Rules fresh = rules;  // a dump the rules' changes interrupted starts again from what was known
    return dump(
        nl, seq, NFT_MSG_GETRULE,
        [&](const nlmsghdr* m) noexcept {
            try {
                RulePtr r(nftnl_rule_alloc());
                if (!r || nftnl_rule_nlmsg_parse(m, r.get()) < 0) return;
                RuleKey k{family_name(nftnl_rule_get_u32(r.get(), NFTNL_RULE_FAMILY)),
                          text_of(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE)),
                          text_of(nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN))};
                const std::uint64_t handle = nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE);
                auto& list = rules.order[k];
                if (std::find(list.begin(), list.end(), handle) == list.end()) list.push_back(handle);
                std::array<char, 4096> text{};
                nftnl_rule_snprintf(text.data(), text.size(), r.get(), NFTNL_OUTPUT_DEFAULT, 0);
                // nftnl's text starts with "FAMILY TABLE CHAIN HANDLE POSITION": the expressions follow.
                std::string t = one_line(text.data());
                for (int skip = 0; skip < 5; ++skip) {
                    const auto sp = t.find(' ');
                    t = sp == std::string::npos ? "" : t.substr(sp + 1);
                }
                const RuleId id{k.family, k.table, handle};
                rules.text.try_emplace(id, "nft: " + t);
                rules.chain.insert_or_assign(id, k.chain);
                std::optional<std::uint64_t> counted;
                nftnl_expr_iter* it = nftnl_expr_iter_create(r.get());
                for (nftnl_expr* e = it != nullptr ? nftnl_expr_iter_next(it) : nullptr; e != nullptr;
                     e = nftnl_expr_iter_next(it)) {
                    const char* kind = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
                    if (kind != nullptr && std::string_view(kind) == "counter")
                        counted = counted.value_or(0) + nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
                }
                if (it != nullptr) nftnl_expr_iter_destroy(it);
                if (counted) rules.packets.insert_or_assign(id, *counted);
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory: this rule stays unnamed
            }
        },
        [&] { rules = fresh; });
}

// iptables-save (iptables-nft): per (family, table, chain) its rules' text in order, "-A CHAIN" cut off.
void read_iptables(Rules& rules) {
    // By their full path: they run as root, whatever PATH says.
    for (const auto& [family_name, program] :
         {std::pair{"ip", "/usr/sbin/iptables-save"}, std::pair{"ip6", "/usr/sbin/ip6tables-save"}}) {
        const std::string family = family_name;  // a lambda below uses it (not a structured binding)
        const auto r = run_program({program});
        if (!r || r->status != 0) continue;
        std::istringstream in(r->out);
        std::string line;
        std::string table;
        std::map<std::string, std::vector<std::string>> chains;
        auto flush = [&] {
            for (auto& [chain, texts] : chains) {
                const auto it = rules.order.find(RuleKey{family, table, chain});
                if (it == rules.order.end() || it->second.size() != texts.size()) continue;  // not iptables' chain
                for (std::size_t i = 0; i < texts.size(); ++i)
                    rules.text.insert_or_assign({family, table, it->second[i]}, texts[i]);
            }
            chains.clear();
        };
        while (std::getline(in, line)) {
            if (line.starts_with("*")) {
                flush();
                table = line.substr(1);
            } else if (line.starts_with("-A ")) {
                const auto sp = line.find(' ', 3);
                if (sp == std::string::npos) continue;
                chains[line.substr(3, sp - 3)].push_back(line.substr(sp + 1));
            } else if (line == "COMMIT") {
                flush();
            }
        }
        flush();
    }
}

}  // namespace

TracedPacket parse_traced_headers(std::span<const std::uint8_t> network, std::span<const std::uint8_t> transport) {
    TracedPacket p;
    if (network.empty()) return p;
    const std::uint8_t version = network[0] >> 4;
    if (version == 4 && network.size() >= 20) {
        p.ip_version = 4;
        p.ip_len = wire::be16(network, 2);
        p.ip_id = wire::be16(network, 4);
        p.proto = network[9];
        p.src = IpAddr::v4(network.subspan<12, 4>());
        p.dst = IpAddr::v4(network.subspan<16, 4>());
        // A later fragment carries no transport header.
        if ((wire::be16(network, 6) & 0x1FFF) != 0) return p;
    } else if (version == 6 && network.size() >= 40) {
        p.ip_version = 6;
        p.ip_len = static_cast<std::uint16_t>(wire::be16(network, 4) + 40);
        p.proto = network[6];
        p.src = IpAddr::v6(network.subspan<8, 16>());
        p.dst = IpAddr::v6(network.subspan<24, 16>());
        // The event holds the fixed header only: behind an extension header (hop-by-hop, routing, fragment,
        // destination options, AH) the transport protocol is not known.
        if (p.proto == 0 || p.proto == 43 || p.proto == 44 || p.proto == 51 || p.proto == 60) {
            p.proto = 0;
            return p;
        }
    } else {
        return p;
    }
    if ((p.proto == IPPROTO_UDP || p.proto == IPPROTO_TCP) && transport.size() >= 4) {
        p.sport = wire::be16(transport, 0);
        p.dport = wire::be16(transport, 2);
    } else if ((p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6) && transport.size() >= 8) {
        const std::uint8_t type = transport[0];
        const bool echo = p.proto == IPPROTO_ICMP ? (type == 0 || type == 8) : (type == 128 || type == 129);
        if (echo) p.sport = wire::be16(transport, 4);
    }
    return p;
}

struct RuleTracer::State {
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    ~State() {  // whatever happened before, the reader is stopped and joined before its state goes
        if (!reader.joinable()) return;
        const std::uint64_t one = 1;
        static_cast<void>(::write(wake.get(), &one, sizeof one));
        reader.join();
    }

    std::string label;  // "NS: " or ""
    std::string table;
    MnlSocketPtr control;
    MnlSocketPtr events;
    std::uint32_t seq = 1;

    UniqueFd wake;  // eventfd: stop
    std::thread reader;
    mutable std::mutex mutex;
    std::vector<RuleTraceEvent> received;
    std::atomic<std::uint64_t> overflows{0};
    std::vector<std::string> notes;
    bool stopped = false;

    void read_events() noexcept;
    void read_events_until_stopped();
    void on_message(const nlmsghdr* nlh, std::map<std::uint32_t, std::pair<std::int64_t, std::uint64_t>>& walks,
                    std::uint64_t& next_walk);
};

void RuleTracer::State::on_message(const nlmsghdr* nlh,
                                   std::map<std::uint32_t, std::pair<std::int64_t, std::uint64_t>>& walks,
                                   std::uint64_t& next_walk) {
    if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES || NFNL_MSG_TYPE(nlh->nlmsg_type) != NFT_MSG_TRACE)
        return;
    TracePtr t(nftnl_trace_alloc());
    if (!t || nftnl_trace_nlmsg_parse(nlh, t.get()) < 0) return;
    RuleTraceEvent e;
    e.ts_ns = realtime_ns();
    auto str = [&](std::uint16_t attr) {
        const char* s = nftnl_trace_is_set(t.get(), attr) ? nftnl_trace_get_str(t.get(), attr) : nullptr;
        return std::string(s != nullptr ? s : "");
    };
    auto u32 = [&](std::uint16_t attr) {
        return nftnl_trace_is_set(t.get(), attr) ? nftnl_trace_get_u32(t.get(), attr) : 0U;
    };
    auto bytes = [&](std::uint16_t attr) {
        std::uint32_t len = 0;
        const void* d = nftnl_trace_is_set(t.get(), attr) ? nftnl_trace_get_data(t.get(), attr, &len) : nullptr;
        return d == nullptr ? std::span<const std::uint8_t>{}
                            : std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(d), len);
    };
    e.trace_id = u32(NFTNL_TRACE_ID);
    e.family = family_name(u32(NFTNL_TRACE_FAMILY));
    e.table = str(NFTNL_TRACE_TABLE);
    e.chain = str(NFTNL_TRACE_CHAIN);
    if (e.table == table) return;  // our own marking rules
    switch (u32(NFTNL_TRACE_TYPE)) {
        case NFT_TRACETYPE_RULE:
            e.type = "rule";
            break;
        case NFT_TRACETYPE_RETURN:
            e.type = "return";
            break;
        case NFT_TRACETYPE_POLICY:
            e.type = "policy";
            break;
        default:
            e.type = "other";
            break;
    }
    if (nftnl_trace_is_set(t.get(), NFTNL_TRACE_RULE_HANDLE))
        e.handle = nftnl_trace_get_u64(t.get(), NFTNL_TRACE_RULE_HANDLE);
    else if (e.type == "rule")
        e.type = "packet";  // a chain's first event: the packet's headers, before any of its rules
    if (e.type == "policy" && nftnl_trace_is_set(t.get(), NFTNL_TRACE_POLICY))
        e.verdict = verdict_name(u32(NFTNL_TRACE_POLICY));
    else if (nftnl_trace_is_set(t.get(), NFTNL_TRACE_VERDICT)) e.verdict = verdict_name(u32(NFTNL_TRACE_VERDICT));
    e.target = str(NFTNL_TRACE_JUMP_TARGET);
    e.iif = u32(NFTNL_TRACE_IIF);
    e.oif = u32(NFTNL_TRACE_OIF);
    e.headers = parse_traced_headers(bytes(NFTNL_TRACE_NETWORK_HEADER), bytes(NFTNL_TRACE_TRANSPORT_HEADER));
    // A base chain's first event carries the packet's headers: from there to the next such event of that trace id,
    // the events are one packet's way through one hook (trace ids are neither unique to a packet nor kept by it
    // from hook to hook, so the walk is no longer than that).
    const bool headers = nftnl_trace_is_set(t.get(), NFTNL_TRACE_NETWORK_HEADER);
    auto [walk, fresh] = walks.try_emplace(e.trace_id, e.ts_ns, 0);
    if (fresh || headers) walk->second.second = next_walk++;
    walk->second.first = e.ts_ns;
    e.packet = walk->second.second;
    std::lock_guard lock(mutex);
    received.push_back(std::move(e));
}

void RuleTracer::State::read_events() noexcept {
    try {
        read_events_until_stopped();
    } catch (...) {  // out of memory: the events so far are kept, the rest are missed (as an overflow)
        ++overflows;
    }
}

void RuleTracer::State::read_events_until_stopped() {
    drop_all_capabilities();  // reading a socket that is open needs none
    std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE) * 16);
    std::map<std::uint32_t, std::pair<std::int64_t, std::uint64_t>> walks;  // trace id -> (last event, walk)
    std::uint64_t next_walk = 1;
    std::array<pollfd, 2> fds{pollfd{mnl_socket_get_fd(events.get()), POLLIN, 0}, pollfd{wake.get(), POLLIN, 0}};
    bool stopping = false;
    for (;;) {
        // After the stop, what is already queued is still read: the last packets' verdicts.
        const int ready = ::poll(fds.data(), stopping ? 1 : 2, stopping ? 0 : -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) break;
        if (!stopping && (fds[1].revents & POLLIN) != 0) {
            stopping = true;
            continue;
        }
        if ((fds[0].revents & POLLIN) == 0) continue;
        const ssize_t n = ::recv(fds[0].fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) ++overflows;  // the kernel dropped events; the socket goes on
            continue;
        }
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
        for (int left = static_cast<int>(n); mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left))
            on_message(nlh, walks, next_walk);
    }
}

RuleTracer::RuleTracer(std::unique_ptr<State> state) : m_state(std::move(state)) {}

RuleTracer::~RuleTracer() {
    try {
        static_cast<void>(stop());
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw; stop() said what it could
    }
}

tl::expected<std::unique_ptr<RuleTracer>, std::string> RuleTracer::start(const Netns& ns,
                                                                         const std::vector<TracedNetwork>& networks,
                                                                         const std::vector<std::uint16_t>& ports) {
    auto state = std::make_unique<State>();
    state->label = ns.name().empty() ? "" : ns.name() + ": ";
    state->table = k_table_prefix + std::to_string(::getpid());
    State& s = *state;
    auto opened = run_in(ns, [&s, &networks, &ports]() -> tl::expected<void, std::string> {
        auto control = open_socket();
        if (!control) return tl::unexpected(control.error());
        s.control = std::move(*control);

        auto events = open_socket();
        if (!events) return tl::unexpected(events.error());
        s.events = std::move(*events);
        int group = NFNLGRP_NFTRACE;
        if (mnl_socket_setsockopt(s.events.get(), NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0)
            return tl::unexpected("cannot listen to netfilter trace events: " + errno_text(errno));
        int bytes = 32 << 20;  // bursts of traced packets: every rule they meet is an event
        if (::setsockopt(mnl_socket_get_fd(s.events.get()), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
            static_cast<void>(
                ::setsockopt(mnl_socket_get_fd(s.events.get()), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes));
        // Owned by its socket where the kernel can (5.12 on), so that not even SIGKILL leaves it behind.
        auto added = add_table(s.control.get(), s.seq, s.table, networks, ports, true);
        if (!added) added = add_table(s.control.get(), s.seq, s.table, networks, ports, false);
        if (!added) return tl::unexpected("cannot add the table " + s.table + ": " + added.error());
        return {};
    });
    if (!opened) {
        if (s.control) static_cast<void>(delete_table(s.control.get(), s.seq, s.table));
        return tl::unexpected("--trace-rules: " + state->label + opened.error());
    }
    s.wake = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!s.wake) {
        static_cast<void>(delete_table(s.control.get(), s.seq, s.table));
        return tl::unexpected("--trace-rules: cannot create an eventfd: " + errno_text(errno));
    }
    s.reader = std::thread([&s] { s.read_events(); });
    return std::unique_ptr<RuleTracer>(new RuleTracer(std::move(state)));
}

std::vector<RuleTraceEvent> RuleTracer::stop() {
    State& s = *m_state;
    if (s.stopped) return {};
    s.stopped = true;
    // The table goes first: no new events; then the reader takes what is queued and ends.

    if (auto gone = delete_table(s.control.get(), s.seq, s.table); !gone)
        s.notes.push_back("--trace-rules: " + s.label + "cannot remove the table " + s.table + ": " + gone.error() +
                          " (remove it with: nft delete table inet " + s.table + ")");
    const std::uint64_t one = 1;
    static_cast<void>(::write(s.wake.get(), &one, sizeof one));
    if (s.reader.joinable()) s.reader.join();
    std::vector<RuleTraceEvent> out;
    {
        std::lock_guard lock(s.mutex);
        out = std::move(s.received);
    }
    return out;
}

std::uint64_t RuleTracer::overflows() const noexcept { return m_state->overflows.load(); }
std::vector<std::string> RuleTracer::notes() const { return m_state->notes; }
const std::string& RuleTracer::table_name() const noexcept { return m_state->table; }

struct RuleCounters::State {
    std::string label;
    MnlSocketPtr control;
    std::uint32_t seq = 1;
    Rules at_start;
    Rules now;  // after stop(): the texts read at the start, with the rules added since
    bool stopped = false;
};

RuleCounters::RuleCounters(std::unique_ptr<State> state) : m_state(std::move(state)) {}
RuleCounters::~RuleCounters() = default;

tl::expected<std::unique_ptr<RuleCounters>, std::string> RuleCounters::start(const Netns& ns) {
    auto state = std::make_unique<State>();
    state->label = ns.name().empty() ? "" : ns.name() + ": ";
    State& s = *state;
    auto opened = run_in(ns, [&s]() -> tl::expected<void, std::string> {
        auto control = open_socket();
        if (!control) return tl::unexpected(control.error());
        s.control = std::move(*control);
        if (auto read = read_rules(s.control.get(), s.seq, s.at_start); !read) return tl::unexpected(read.error());
        read_iptables(s.at_start);
        return {};
    });
    if (!opened) return tl::unexpected(state->label + opened.error());
    return std::unique_ptr<RuleCounters>(new RuleCounters(std::move(state)));
}

tl::expected<std::vector<RuleCount>, std::string> RuleCounters::stop() {
    State& s = *m_state;
    if (s.stopped) return std::vector<RuleCount>{};
    s.stopped = true;
    s.now = s.at_start;  // the texts read at the start (iptables-save), the counters read again
    s.now.packets.clear();
    Rules& now = s.now;
    if (auto read = read_rules(s.control.get(), s.seq, now); !read) return tl::unexpected(s.label + read.error());
    std::vector<RuleCount> out;
    for (const auto& [id, packets] : now.packets) {
        const auto before = s.at_start.packets.find(id);
        const std::uint64_t was = before == s.at_start.packets.end() ? 0 : before->second;
        if (packets <= was) continue;
        const auto& [family, table, handle] = id;
        out.push_back({family, table, now.chain[id], handle, now.text[id], packets - was});
    }
    return out;
}

std::string RuleCounters::rule_text(const std::string& family, const std::string& table, std::uint64_t handle) const {
    const State& s = *m_state;
    for (const Rules* rules : {&s.now, &s.at_start})
        if (const auto it = rules->text.find({family, table, handle}); it != rules->text.end()) return it->second;
    return "(rule handle " + std::to_string(handle) + ", gone)";
}

tl::expected<std::vector<std::string>, std::string> remove_stale_trace_tables(const Netns& ns) {
    return run_in(ns, []() -> tl::expected<std::vector<std::string>, std::string> {
        auto nl = open_socket();
        if (!nl) return tl::unexpected(nl.error());
        std::uint32_t seq = 1;
        return remove_stale(nl->get(), seq);
    });
}

tl::expected<std::vector<std::string>, std::string> trace_tables(const Netns& ns) {
    return run_in(ns, []() -> tl::expected<std::vector<std::string>, std::string> {
        auto nl = open_socket();
        if (!nl) return tl::unexpected(nl.error());
        std::uint32_t seq = 1;
        auto tables = list_trace_tables(nl->get(), seq);
        if (!tables) return tl::unexpected(tables.error());
        std::vector<std::string> names;
        for (const auto& t : *tables) names.push_back(t.name);
        return names;
    });
}

}  // namespace hoptrace
