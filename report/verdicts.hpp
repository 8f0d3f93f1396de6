#pragma once
// What the report says about how far its answers can be trusted, and the verdicts that need several tables at
// once: journeys the matcher could not decide (ambiguous), fragments and copies counted as what they are, the
// evidence behind a loss (the ICMP error and its next-hop MTU), ICMP errors that died on their way back, the
// path MTU in words, and whether a flow ever reached the NAT point. build_report calls add_verdicts; the text
// renderer calls verdict_lines per flow.

#include "store/database.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace hoptrace::report {

// Adds, to a report built by build_report: "ambiguous_journeys"; per flow "ambiguous", "copies", "fragments"
// (when any), "pmtu" (when DF packets above a size died while smaller ones passed), an "evidence" object on lost
// entries an ICMP error explains, and conntrack "state": "not-reached" for flows that never reached an uplink;
// per ICMP error "lost" (where it died on its way back to the probe's sender). Losses of ICMP errors are removed
// from their flow's "lost" list. `name_of` maps point ids to names.
void add_verdicts(const store::Database& db, nlohmann::ordered_json& report,
                  const std::function<std::string(std::int64_t)>& name_of);

// The text report's lines for those keys of one flow ("" when there is nothing to say), each indented by two.
std::string verdict_lines(const nlohmann::ordered_json& flow);

}  // namespace hoptrace::report
