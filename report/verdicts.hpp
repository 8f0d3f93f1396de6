#pragma once
// What the report says about how far its answers can be trusted, and the verdicts that need several tables at
// once: journeys the matcher could not decide (ambiguous), fragments and copies counted as what they are, the
// evidence behind a loss (the ICMP error and its next-hop MTU), ICMP errors that died on their way back, the path
// MTU in words, and whether a flow ever reached the NAT point. model.cpp reads the rows (VerdictInputs); this
// decides. Internal to the report library.

#include "report/model.hpp"

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace hoptrace::report {

// An ICMP error journey, as the verdicts need it.
struct ErrorInfo {
    std::int64_t journey = 0;
    std::int64_t probe = 0;  // the journey it answers; 0 none
    std::int64_t type = 0;
    std::int64_t code = 0;
    std::int64_t mtu = 0;  // 0: none
    std::string reporter;
    std::string first_point;
    bool lost = false;  // died on its way back (losses.error_journey)
};

// A loss an ICMP error explains: the loss's key and the error's journey.
struct LossExplained {
    std::string after;
    std::string expected;
    FlowDirection direction = FlowDirection::forward;
    LossCause cause = LossCause::dropped;
    std::int64_t error_journey = 0;
};

struct DfJourney {
    std::int64_t journey = 0;
    std::int64_t size = 0;  // IP length
    std::int64_t last_point = 0;
};

struct VerdictInputs {
    std::map<std::int64_t, std::int64_t> ambiguous;  // flow -> journeys
    std::map<std::int64_t, std::int64_t> copies;
    std::map<std::int64_t, std::int64_t> interfaces;  // flow -> on how many interfaces its packets were seen at most
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> fragments;  // flow -> (datagrams, fragments)
    std::int64_t ambiguous_total = 0;
    std::map<std::int64_t, std::vector<ErrorLoss>> error_losses;  // error journey -> where it died
    std::map<std::int64_t, ErrorInfo> errors;                     // error journey -> info
    std::map<std::int64_t, ErrorInfo> error_of_probe;             // probe journey -> the (first) error answering it
    std::map<std::int64_t, std::vector<DfJourney>> df_journeys;   // flow -> its forward DF journeys
    std::map<std::int64_t, std::vector<LossExplained>> evidence;  // flow -> its explained losses
    std::set<std::int64_t> reached_uplink;                        // flows an uplink saw
    std::map<std::int64_t, std::int64_t> path_end;                // flow -> last point of its longest forward journey
};

// Sets the model's ambiguous_journeys; per flow ambiguous, copies, copies_interfaces, fragments, pmtu, the evidence
// of its losses and conntrack not-reached; per ICMP error its losses and MTU. `name_of` maps point ids to names.
void apply_verdicts(ReportModel& model, const VerdictInputs& in,
                    const std::function<std::string(std::int64_t)>& name_of);

}  // namespace hoptrace::report
