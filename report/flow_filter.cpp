#include "report/flow_filter.hpp"

#include "tracer/packet.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <limits>
#include <optional>
#include <utility>

namespace hoptrace::report {
namespace {

constexpr std::string_view k_terms = "terms: proto NAME, host ADDR, port N, flow ID";

struct ProtoName {
    std::string_view name;
    std::uint8_t number;
};
constexpr std::array<ProtoName, 6> k_protos{
    {{"icmp", 1}, {"tcp", 6}, {"udp", 17}, {"icmpv6", 58}, {"icmp6", 58}, {"sctp", 132}}};

bool is_separator(char c) { return c == ',' || std::isspace(static_cast<unsigned char>(c)) != 0; }

std::vector<std::string_view> tokens(std::string_view expr) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < expr.size()) {
        while (i < expr.size() && is_separator(expr[i])) ++i;
        const std::size_t start = i;
        while (i < expr.size() && !is_separator(expr[i])) ++i;
        if (i > start) out.push_back(expr.substr(start, i - start));
    }
    return out;
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// A whole token as a decimal number in [lo, hi]; no sign, no spaces, no trailing characters.
std::optional<std::int64_t> number(std::string_view text, std::int64_t lo, std::int64_t hi) {
    if (text.empty() || std::isdigit(static_cast<unsigned char>(text.front())) == 0) return std::nullopt;
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi) return std::nullopt;
    return v;
}

std::optional<std::uint8_t> proto_number(std::string_view text) {
    const std::string name = lower(text);
    for (const ProtoName& p : k_protos)
        if (p.name == name) return p.number;
    if (const auto n = number(text, 0, 255)) return static_cast<std::uint8_t>(*n);
    return std::nullopt;
}

std::string proto_text(std::int64_t number) {
    for (const ProtoName& p : k_protos)
        if (p.number == number) return std::string(p.name);
    return std::to_string(number);
}

std::string quoted(std::string_view s) {
    std::string out = "'";
    out.append(s).append("'");
    return out;
}

}  // namespace

tl::expected<FlowFilter, std::string> FlowFilter::parse(std::string_view expr) {
    const auto words = tokens(expr);
    if (words.empty()) return tl::unexpected(std::string("empty expression (").append(k_terms).append(")"));
    FlowFilter filter;
    for (std::size_t i = 0; i < words.size(); ++i) {
        const std::string keyword = lower(words[i]);
        Term term;
        if (keyword != "proto" && keyword != "host" && keyword != "port" && keyword != "flow") {
            // A bare protocol name ("udp") is "proto udp"; a bare number is not (port? flow? proto?).
            const auto p = proto_number(words[i]);
            if (!p || number(words[i], 0, 255)) {
                return tl::unexpected(
                    std::string("unknown term ").append(quoted(words[i])).append(" (").append(k_terms).append(")"));
            }
            term.kind = Kind::proto;
            term.number = *p;
            filter.m_terms.push_back(std::move(term));
            continue;
        }
        if (i + 1 >= words.size()) {
            const char* what = keyword == "proto"  ? "a protocol (icmp, icmpv6, udp, tcp, sctp or a number)"
                               : keyword == "host" ? "an address"
                               : keyword == "port" ? "a port number"
                                                   : "a flow id";
            return tl::unexpected(quoted(words[i]).append(" needs ").append(what));
        }
        const std::string_view value = words[++i];
        std::string bad = keyword;
        bad.append(" ").append(quoted(value)).append(": ");
        if (keyword == "proto") {
            const auto p = proto_number(value);
            if (!p)
                return tl::unexpected(bad.append("unknown protocol (icmp, icmpv6, udp, tcp, sctp or a number 0-255)"));
            term.kind = Kind::proto;
            term.number = *p;
        } else if (keyword == "host") {
            const auto a = IpAddr::parse(value);
            if (!a) return tl::unexpected(bad.append("not an IPv4 or IPv6 address"));
            term.kind = Kind::host;
            term.address = a->to_string();
        } else if (keyword == "port") {
            const auto n = number(value, 0, 65535);
            if (!n) return tl::unexpected(bad.append("not a port number (0-65535)"));
            term.kind = Kind::port;
            term.number = *n;
        } else {
            const auto n = number(value, 1, std::numeric_limits<std::int64_t>::max());
            if (!n) return tl::unexpected(bad.append("not a flow id (a positive number, flows.id)"));
            term.kind = Kind::flow;
            term.number = *n;
        }
        filter.m_terms.push_back(std::move(term));
    }
    return filter;
}

bool FlowFilter::matches(const FlowRow& f) const {
    return std::all_of(m_terms.begin(), m_terms.end(), [&f](const Term& t) {
        switch (t.kind) {
            case Kind::proto:
                return f.proto == t.number;
            case Kind::host:
                return f.orig_src == t.address || f.orig_dst == t.address || f.trans_src == t.address ||
                       f.trans_dst == t.address;
            case Kind::port:
                // For ICMP the source "port" is the echo id and the destination one is always 0: not a port.
                if (is_icmp(f.proto)) return f.orig_sport == t.number || f.trans_sport == t.number;
                return f.orig_sport == t.number || f.orig_dport == t.number || f.trans_sport == t.number ||
                       f.trans_dport == t.number;
            case Kind::flow:
                return f.id == t.number;
        }
        return false;
    });
}

std::string FlowFilter::to_string() const {
    std::string out;
    for (const Term& t : m_terms) {
        if (!out.empty()) out.append(", ");
        switch (t.kind) {
            case Kind::proto:
                out.append("proto ").append(proto_text(t.number));
                break;
            case Kind::host:
                out.append("host ").append(t.address);
                break;
            case Kind::port:
                out.append("port ").append(std::to_string(t.number));
                break;
            case Kind::flow:
                out.append("flow ").append(std::to_string(t.number));
                break;
        }
    }
    return out;
}

}  // namespace hoptrace::report
