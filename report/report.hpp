#pragma once
// Reports read the store (never the packets' bytes): the JSON contract `hoptrace-report/1` (design.md),
// and the text report a person reads, rendered from that same JSON model so the two never disagree.

#include "store/database.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace hoptrace::report {

inline constexpr const char* k_report_schema = "hoptrace-report/1";

// The report model. Keys of hoptrace-report/1 are never renamed or dropped; new keys may be added.
nlohmann::ordered_json build_report(const store::Database& db);

std::string render_json(const nlohmann::ordered_json& report);

// Every hop sample as CSV (one row per pair of consecutive sightings of a journey), for people who plot in
// their own tools. `keep` selects flows by id (empty = all). Streams: memory does not grow with the capture.
void write_csv(const store::Database& db, std::ostream& out, const std::function<bool(std::int64_t flow)>& keep = {});
std::string render_text(const nlohmann::ordered_json& report);

// The report's "hop_totals" over the flows `keep` selects (for --flow): every hop sample of their journeys (ICMP
// errors apart, as in the stored totals), summarised per direction and point pair.
nlohmann::ordered_json hop_totals(const store::Database& db, const std::function<bool(std::int64_t flow)>& keep);

// Drops from a report model everything about flows `keep` does not select: the flows, their ICMP errors, their
// traceroute probes; hop_totals are recomputed over the flows kept.
void keep_flows(nlohmann::ordered_json& report, const store::Database& db,
                const std::function<bool(std::int64_t flow)>& keep);

// One flow in words, for a newcomer: where it went, what rewrote it, how long each hop took (medians).
std::string narrate(const nlohmann::ordered_json& flow, const nlohmann::ordered_json& points);

// "850 ns", "12.4 µs", "3.20 ms", "1.500 s".
std::string format_duration(std::int64_t ns);

}  // namespace hoptrace::report
