#pragma once
// Private to tracer/: what the pcap and pcapng readers share.

#include "tracer/handles.hpp"
#include "tracer/packet.hpp"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

namespace hoptrace {

// The pcap LINKTYPE_* number of a file or pcapng interface -> the link type we dissect; nullopt when
// dissect() does not know it.
std::optional<LinkType> supported_link_type(std::uint32_t linktype) noexcept;

// "unsupported link type 147 (supported: Ethernet, Linux cooked v1/v2, raw IP)"
std::string unsupported_link_type(std::uint32_t linktype);

}  // namespace hoptrace
