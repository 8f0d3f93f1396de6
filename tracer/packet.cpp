#include "tracer/packet.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>

namespace hoptrace {

std::string_view to_string(Direction d) noexcept {
    switch (d) {
        case Direction::inbound:
            return "in";
        case Direction::outbound:
            return "out";
        case Direction::unknown:
            break;
    }
    return "";
}

IpAddr IpAddr::v4(std::span<const std::uint8_t, 4> b) noexcept {
    IpAddr a;
    a.family = 4;
    std::copy(b.begin(), b.end(), a.bytes.begin());
    return a;
}

IpAddr IpAddr::v6(std::span<const std::uint8_t, 16> b) noexcept {
    IpAddr a;
    a.family = 6;
    std::copy(b.begin(), b.end(), a.bytes.begin());
    return a;
}

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
    // inet_pton wants a NUL-terminated string; an embedded NUL would let "1.2.3.4\0junk" through.
    if (text.find('\0') != std::string_view::npos) {
        return std::nullopt;
    }
    const std::string z(text);
    IpAddr a;
    if (text.find(':') != std::string_view::npos) {
        if (inet_pton(AF_INET6, z.c_str(), a.bytes.data()) != 1) {
            return std::nullopt;
        }
        a.family = 6;
        return a;
    }
    if (inet_pton(AF_INET, z.c_str(), a.bytes.data()) != 1) {
        return std::nullopt;
    }
    a.family = 4;
    return a;
}

std::string IpAddr::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    const int af = family == 4 ? AF_INET : family == 6 ? AF_INET6 : AF_UNSPEC;
    if (af == AF_UNSPEC || inet_ntop(af, bytes.data(), text, sizeof text) == nullptr) {
        return {};
    }
    return text;
}

}  // namespace hoptrace
