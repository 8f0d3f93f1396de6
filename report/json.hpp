#pragma once
// The JSON report, the contract hoptrace-report/1 (docs/cli.md): other tools and our own tests read it. Keys are
// never renamed or dropped, new ones may be added; json.cpp is the only place they are spelled.

#include "report/model.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace hoptrace::report {

nlohmann::ordered_json to_json(const ReportModel& model);

// to_json, indented by two, ending in a newline. Always valid UTF-8: an invalid byte of a name becomes U+FFFD.
std::string render_json(const ReportModel& model);

}  // namespace hoptrace::report
