#pragma once
// The `rule_traces` table: the netfilter trace events of a capture with --trace-rules (tracer/rule_trace.hpp), and
// their tie to the journeys of the packets they traced; `rule_counters`: the rules whose counters moved.

#include "store/database.hpp"
#include "tracer/rule_trace.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace hoptrace::store {

// Inserts the events of namespace `netns` (its label), in one transaction.
void insert_rule_traces(Database& db, const std::string& netns, std::span<const RuleTraceEvent> events);

// Inserts the rules whose counters moved during the capture (namespace `netns`), in one transaction.
void insert_rule_counts(Database& db, const std::string& netns, std::span<const RuleCount> counts);

// The walks' header rows (events that carry the packet's headers), for correlate to tie them to journeys.
struct TracedHeader {
    std::uint64_t walk = 0;
    std::int64_t ts_ns = 0;
    std::uint8_t proto = 0;
    IpAddr src;
    IpAddr dst;
    std::uint16_t sport = 0;  // an echo's id
    std::uint16_t dport = 0;
    std::uint16_t ip_id = 0;
    std::uint32_t ip_len = 0;
};
std::vector<TracedHeader> rule_trace_headers(const Database& db);

// Sets rule_traces.journey_id of every event of each walk given (journey ids as stored), NULL for the others, in
// one transaction.
void set_rule_trace_journeys(Database& db, std::span<const std::pair<std::uint64_t, std::int64_t>> walk_journey);

}  // namespace hoptrace::store
