#pragma once
// Owners of the C library handles hoptrace uses, one of each: a file descriptor, a stdio FILE, a libpcap handle
// and the libnl objects. unique_ptr with a stateless deleter (or, for a descriptor, a small class), so a handle is
// closed exactly once on every path. The libnl, libmnl/libnftnl and libpcap types are only declared here: whoever
// creates one includes the library's header, whoever only holds one does not need to.

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <utility>

struct pcap;         // pcap_t
struct pcap_dumper;  // pcap_dumper_t
struct nl_sock;
struct nl_cache;
struct nl_addr;
struct nl_msg;
struct mnl_socket;
struct nftnl_table;
struct nftnl_chain;
struct nftnl_rule;
struct nftnl_trace;

namespace hoptrace {

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : m_fd(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) {
            reset();
            m_fd = std::exchange(o.m_fd, -1);
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }
    void reset() noexcept {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = -1;
    }
    [[nodiscard]] int get() const noexcept { return m_fd; }
    explicit operator bool() const noexcept { return m_fd >= 0; }

private:
    int m_fd = -1;
};

struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Defined in handles.cpp, next to the libraries' headers.
struct CHandleDeleter {
    void operator()(pcap* p) const noexcept;         // pcap_close
    void operator()(pcap_dumper* d) const noexcept;  // pcap_dump_close
    void operator()(nl_sock* s) const noexcept;      // nl_socket_free
    void operator()(nl_cache* c) const noexcept;     // nl_cache_free
    void operator()(nl_addr* a) const noexcept;      // nl_addr_put
    void operator()(nl_msg* m) const noexcept;       // nlmsg_free
    // handles_nftables.cpp
    void operator()(mnl_socket* s) const noexcept;   // mnl_socket_close
    void operator()(nftnl_table* t) const noexcept;  // nftnl_table_free
    void operator()(nftnl_chain* c) const noexcept;  // nftnl_chain_free
    void operator()(nftnl_rule* r) const noexcept;   // nftnl_rule_free
    void operator()(nftnl_trace* t) const noexcept;  // nftnl_trace_free
};
using PcapPtr = std::unique_ptr<pcap, CHandleDeleter>;
using PcapDumperPtr = std::unique_ptr<pcap_dumper, CHandleDeleter>;
using NlSocketPtr = std::unique_ptr<nl_sock, CHandleDeleter>;
using NlCachePtr = std::unique_ptr<nl_cache, CHandleDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, CHandleDeleter>;
using NlMsgPtr = std::unique_ptr<nl_msg, CHandleDeleter>;
using MnlSocketPtr = std::unique_ptr<mnl_socket, CHandleDeleter>;
using NftnlTablePtr = std::unique_ptr<nftnl_table, CHandleDeleter>;
using NftnlChainPtr = std::unique_ptr<nftnl_chain, CHandleDeleter>;
using NftnlRulePtr = std::unique_ptr<nftnl_rule, CHandleDeleter>;
using NftnlTracePtr = std::unique_ptr<nftnl_trace, CHandleDeleter>;

}  // namespace hoptrace
