#pragma once
// The text report a person reads (`hoptrace report`, `hoptrace trace`): points in path order, then per flow its
// story in words, its path, rewrites, hop latencies, segmentation, conntrack's agreement, losses and what the report
// cannot vouch for; the ICMP errors; a table per traceroute. Control characters in names are shown escaped.

#include "report/model.hpp"

#include <string>
#include <vector>

namespace hoptrace::report {

std::string render_text(const ReportModel& model);

// One flow in words, for a newcomer: where it went, what rewrote it, how long each hop took (medians).
std::string narrate(const Flow& flow, const std::vector<Point>& points);

}  // namespace hoptrace::report
