#pragma once
// Private to tracer/: what the pcap and pcapng readers share.

#include "tracer/packet.hpp"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

namespace hoptrace {

struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// The pcap LINKTYPE_* number of a file or pcapng interface -> the link type we dissect; nullopt when
// dissect() does not know it.
std::optional<LinkType> supported_link_type(std::uint32_t linktype) noexcept;

// "unsupported link type 147 (supported: Ethernet, Linux cooked v1/v2, raw IP)"
std::string unsupported_link_type(std::uint32_t linktype);

// The message of the current errno, e.g. "No such file or directory" (thread-safe, unlike strerror).
std::string errno_message();

}  // namespace hoptrace
