#include "report/verdicts.hpp"

#include <algorithm>
#include <optional>

namespace hoptrace::report {
namespace {

// DF packets above a size died while smaller ones passed. A forward DF journey passed when it reached the end of
// the flow's path and no ICMP error answered it; it died when it stopped short of that end or an error answered it.
std::optional<PathMtu> path_mtu(std::int64_t end_point, const std::vector<DfJourney>& df_journeys,
                                const std::map<std::int64_t, ErrorInfo>& error_of_probe,
                                const std::function<std::string(std::int64_t)>& name_of) {
    std::optional<std::int64_t> lost_min;
    std::optional<std::int64_t> passed_max;
    const ErrorInfo* error = nullptr;
    std::int64_t after = 0;
    for (const DfJourney& j : df_journeys) {
        const auto e = error_of_probe.find(j.journey);
        const bool answered = e != error_of_probe.end();
        if (j.last_point == end_point && !answered) {
            passed_max = std::max(passed_max.value_or(0), j.size);
            continue;
        }
        if (!lost_min || j.size < *lost_min) {
            lost_min = j.size;
            after = j.last_point;
        }
        if (answered && (error == nullptr || (error->mtu == 0 && e->second.mtu != 0))) error = &e->second;
    }
    if (!lost_min || !passed_max || *lost_min <= *passed_max) return std::nullopt;
    if (error != nullptr && error->mtu == 0) return std::nullopt;  // refused for another reason than its size
    PathMtu p;
    p.lost_min_size = *lost_min;
    p.passed_max_size = *passed_max;
    p.frag_needed = error == nullptr ? FragNeeded::none
                    : error->lost    ? FragNeeded::dropped_in_host
                                     : FragNeeded::returned;
    p.after = name_of(after);
    if (error != nullptr) {
        p.mtu = error->mtu;
        p.reporter = error->reporter;
        p.arrived_on = error->first_point;
    }
    return p;
}

template <typename T>
T value_or_zero(const std::map<std::int64_t, T>& m, std::int64_t key) {
    const auto it = m.find(key);
    return it == m.end() ? T{} : it->second;
}

}  // namespace

void apply_verdicts(ReportModel& model, const VerdictInputs& in,
                    const std::function<std::string(std::int64_t)>& name_of) {
    model.ambiguous_journeys = in.ambiguous_total;
    for (Flow& f : model.flows) {
        f.ambiguous = value_or_zero(in.ambiguous, f.id);
        f.copies = value_or_zero(in.copies, f.id);
        if (const auto it = in.interfaces.find(f.id); it != in.interfaces.end()) f.copies_interfaces = it->second;
        if (const auto it = in.fragments.find(f.id); it != in.fragments.end())
            f.fragments = Fragments{it->second.first, it->second.second};
        if (const auto ev = in.evidence.find(f.id); ev != in.evidence.end()) {
            for (Loss& l : f.lost) {
                for (const LossExplained& k : ev->second) {
                    if (k.after != l.after || k.expected != l.expected || k.direction != l.direction ||
                        k.cause != l.cause)
                        continue;
                    if (const auto e = in.errors.find(k.error_journey); e != in.errors.end())
                        l.evidence = LossEvidence{e->second.type, e->second.code, e->second.reporter, e->second.mtu};
                }
            }
        }
        if (const auto end = in.path_end.find(f.id); end != in.path_end.end()) {
            static const std::vector<DfJourney> none;
            const auto df = in.df_journeys.find(f.id);
            f.pmtu = path_mtu(end->second, df == in.df_journeys.end() ? none : df->second, in.error_of_probe, name_of);
        }
        // A flow translated before the path (host-sent) needs no uplink to have met the NAT.
        if (f.conntrack && f.conntrack->state != ConntrackState::before_path && !in.reached_uplink.contains(f.id))
            f.conntrack->state = ConntrackState::not_reached;
    }
    for (IcmpError& e : model.icmp_errors) {
        if (const auto it = in.error_losses.find(e.journey); it != in.error_losses.end()) e.lost = it->second;
        if (const auto info = in.errors.find(e.journey); info != in.errors.end()) e.mtu = info->second.mtu;
    }
}

}  // namespace hoptrace::report
