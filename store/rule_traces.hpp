#pragma once
// The `rule_traces` table: the netfilter trace events of a capture with --trace-rules (tracer/rule_trace.hpp), and
// their tie to the journeys of the packets they traced; `rule_counters`: the rules whose counters moved.

#include "store/database.hpp"
#include "tracer/rule_trace.hpp"

#include <cstdint>
#include <span>
#include <string>

namespace hoptrace::store {

// Inserts the events of namespace `netns` (its label), in one transaction.
void insert_rule_traces(Database& db, const std::string& netns, std::span<const RuleTraceEvent> events);

// Inserts the rules whose counters moved during the capture (namespace `netns`), in one transaction.
void insert_rule_counts(Database& db, const std::string& netns, std::span<const RuleCount> counts);

// Ties each walk (one packet's events) to the one journey holding a sighting with the headers one of its events
// saw (addresses, protocol, ports or echo id, IP id and length) within `window_ns` of it; a walk whose headers
// fit sightings of several journeys stays untied (never guessed). Returns the walks tied.
std::uint64_t tie_rule_traces(Database& db, std::int64_t window_ns);

}  // namespace hoptrace::store
