#pragma once
// Traceroute as a table: probes from one source to one destination grouped by the TTL they were sent with, each
// with the points it passed, who answered (the ICMP error's reporter, or the destination itself), the way the
// answer came back with its quoted header before and after NAT undid the rewrite, and the round trip measured at
// every point both crossed. model.cpp reads the probes and their answers (TraceGroup); this makes the table.
// Internal to the report library.

#include "report/model.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace::report {

// traceroute's default maximum TTL (-m 30): packets sent with more are ordinary traffic to the same place,
// unless a time exceeded answered a larger TTL (a traceroute run with a larger -m).
inline constexpr std::int64_t k_default_max_ttl = 30;

// One packet of a probe's or an answer's journey, as far as the table needs it.
struct TraceSighting {
    std::int64_t point = 0;
    std::int64_t ts_ns = 0;
    std::string src;
    std::int64_t proto = 0;
    std::int64_t icmp_type = 0;
    std::int64_t icmp_code = 0;
    std::int64_t tcp_flags = 0;
    bool icmp_error = false;
    std::optional<QuotedTuple> quoted;  // ICMP errors: the quoted packet (its `at` empty)
};

struct TraceProbeRow {
    std::int64_t journey = 0;
    std::int64_t flow = 0;
    std::int64_t ttl = 0;
    std::vector<TraceSighting> sent;
    std::optional<std::int64_t> answer;  // its first answer's journey
    std::vector<TraceSighting> back;     // that answer's sightings
};

// One (protocol, source, destination) whose probes a time exceeded answered: its probes by TTL, then time.
struct TraceGroup {
    std::int64_t proto = 0;
    std::string src;
    std::string dst;
    std::int64_t highest_expired_ttl = 0;
    std::vector<TraceProbeRow> probes;
};

std::vector<Traceroute> assemble_traceroutes(const std::vector<TraceGroup>& groups,
                                             const std::function<std::string(std::int64_t)>& name_of);

}  // namespace hoptrace::report
