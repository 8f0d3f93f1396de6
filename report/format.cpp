#include "report/format.hpp"

#include "report/model.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace hoptrace::report {

std::string proto_name(std::int64_t proto) {
    switch (proto) {
        case 1:
            return "icmp";
        case 6:
            return "tcp";
        case 17:
            return "udp";
        case 58:
            return "icmpv6";
        case 132:
            return "sctp";
        default:
            return "ip-proto-" + std::to_string(proto);
    }
}

bool has_ports(std::int64_t proto) { return proto == 6 || proto == 17 || proto == 132; }

std::string format_duration(std::int64_t ns) {
    char buf[64];
    const auto v = static_cast<double>(ns);
    const std::int64_t a = ns < 0 ? -ns : ns;
    if (a < 1'000) std::snprintf(buf, sizeof buf, "%" PRId64 " ns", ns);
    else if (a < 1'000'000) std::snprintf(buf, sizeof buf, "%.1f µs", v / 1e3);
    else if (a < 1'000'000'000) std::snprintf(buf, sizeof buf, "%.2f ms", v / 1e6);
    else std::snprintf(buf, sizeof buf, "%.3f s", v / 1e9);
    return buf;
}

std::string icmp_error_name(std::int64_t family_proto, std::int64_t type, std::int64_t code) {
    if (family_proto == 58) {
        switch (type) {
            case 1:
                return code == 4 ? "port unreachable" : "destination unreachable";
            case 2:
                return "packet too big";
            case 3:
                return "time exceeded";
            case 4:
                return "parameter problem";
            default:
                return "ICMPv6 type " + std::to_string(type);
        }
    }
    switch (type) {
        case 3:
            switch (code) {
                case 0:
                    return "network unreachable";
                case 1:
                    return "host unreachable";
                case 3:
                    return "port unreachable";
                case 4:
                    return "fragmentation needed";
                case 13:
                    return "administratively prohibited";
                default:
                    return "destination unreachable, code " + std::to_string(code);
            }
        case 4:
            return "source quench";
        case 5:
            return "redirect";
        case 11:
            return "time exceeded";
        case 12:
            return "parameter problem";
        default:
            return "ICMP type " + std::to_string(type) + " code " + std::to_string(code);
    }
}

std::string counted(std::int64_t n, std::string_view one, std::string_view many) {
    return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

std::size_t display_width(const std::string& s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // count UTF-8 code points, not bytes
    return n;
}

std::string table(const std::vector<std::vector<std::string>>& rows, const std::string& indent,
                  const std::vector<bool>& right_aligned) {
    std::vector<std::size_t> width;
    for (const auto& row : rows) {
        if (width.size() < row.size()) width.resize(row.size(), 0);
        for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], display_width(row[i]));
    }
    std::string out;
    for (const auto& row : rows) {
        std::string line = indent;
        for (std::size_t i = 0; i < row.size(); ++i) {
            const std::string pad(width[i] - display_width(row[i]), ' ');
            const bool right = i < right_aligned.size() && right_aligned[i];
            line += right ? pad + row[i] : row[i] + (i + 1 < row.size() ? pad : "");
            if (i + 1 < row.size()) line += "  ";
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string rule_text(const FirewallRule& r) {
    if (r.policy) return "the policy of " + r.table + " " + r.chain;
    return r.table + " " + r.chain + " " + r.rule;
}

}  // namespace hoptrace::report
