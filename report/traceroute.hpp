#pragma once
// Traceroute as a table: probes from one source to one destination grouped by the TTL they were sent with,
// each with the points it passed, who answered (the ICMP error's reporter, or the destination itself), the way
// the answer came back with its quoted header before and after NAT undid the rewrite, and the round trip
// measured at every point both crossed. Built from the store after correlate (journeys and their relations).

#include "store/database.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace hoptrace::report {

// The "traceroutes" key of the report: one entry per (protocol, source, destination) whose probes were answered
// by at least one ICMP time exceeded. `name_of` turns a point id into its name.
nlohmann::ordered_json build_traceroutes(const store::Database& db,
                                         const std::function<std::string(std::int64_t)>& name_of);

// The text report's section for them ("" when there are none).
std::string render_traceroutes(const nlohmann::ordered_json& traceroutes);

}  // namespace hoptrace::report
