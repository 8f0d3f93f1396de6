#pragma once
// Reports read the store (never the packets' bytes): the JSON contract `hoptrace-report/1` (design.md),
// and the text report a person reads, rendered from that same JSON model so the two never disagree.

#include "store/database.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace hoptrace::correlate {

inline constexpr const char* k_report_schema = "hoptrace-report/1";

// The report model. Keys of hoptrace-report/1 are never renamed or dropped; new keys may be added.
nlohmann::ordered_json build_report(const store::Database& db);

std::string render_json(const nlohmann::ordered_json& report);
std::string render_text(const nlohmann::ordered_json& report);

// "850 ns", "12.4 µs", "3.20 ms", "1.500 s".
std::string format_duration(std::int64_t ns);

}  // namespace hoptrace::correlate
