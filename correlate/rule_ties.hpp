#pragma once
// The firewall's verdicts (capture --trace-rules: rule_traces) tied to the journeys of the packets they traced, from
// the sightings correlate holds: each walk (one packet's way through one hook) goes to the one journey with a
// sighting of its headers within the hop gap, or stays untied (never guessed).

#include "correlate/analysis.hpp"
#include "correlate/matcher.hpp"
#include "store/database.hpp"

#include <cstdint>
#include <span>

namespace hoptrace::correlate {

// Headers as the hook saw them: addresses, protocol, ports (an echo's id in sport), IP id and length. A fragmented
// datagram is seen whole by the hooks (conntrack reassembles it first): where no point saw it whole, its first
// fragment's sighting (shorter, with the ports) stands in. Journey ids are stored ids (index + 1). Returns the
// walks tied.
std::uint64_t tie_rule_traces(store::Database& db, std::span<const Sighting> sightings, const Journeys& journeys,
                              const Analysis& analysis, std::int64_t window_ns);

}  // namespace hoptrace::correlate
