#include "report/traceroute.hpp"

#include "report/format.hpp"

#include <algorithm>
#include <map>

namespace hoptrace::report {
namespace {

constexpr std::int64_t k_tcp_syn = 0x02;
constexpr std::int64_t k_tcp_rst = 0x04;
constexpr std::int64_t k_tcp_ack = 0x10;

// What answered a probe, in words.
std::string answer_kind(const TraceSighting& a) {
    if (a.icmp_error) return icmp_error_name(a.proto, a.icmp_type, a.icmp_code);
    if (is_icmp(a.proto)) return "echo reply";
    if (a.proto == 6) {
        if ((a.tcp_flags & k_tcp_rst) != 0) return "tcp reset";
        if ((a.tcp_flags & (k_tcp_syn | k_tcp_ack)) == (k_tcp_syn | k_tcp_ack)) return "tcp syn-ack";
    }
    return "reply";
}

bool is_time_exceeded(const TraceSighting& a) {
    return a.icmp_error && ((a.proto == 1 && a.icmp_type == 11) || (a.proto == 58 && a.icmp_type == 3));
}

std::vector<std::string> path_of(const std::vector<TraceSighting>& sightings,
                                 const std::function<std::string(std::int64_t)>& name_of) {
    std::vector<std::string> path;
    path.reserve(sightings.size());
    for (const TraceSighting& s : sightings) path.push_back(name_of(s.point));
    return path;
}

// The probe's answer, and the round trip at each point both crossed (in the probe's path order).
void answer_probe(TraceProbe& probe, const TraceProbeRow& row, const std::string& dst, TraceHop& hop,
                  const std::function<std::string(std::int64_t)>& name_of) {
    const TraceSighting& first = row.back.front();
    TraceAnswer answer;
    answer.journey = *row.answer;
    answer.kind = answer_kind(first);
    answer.reporter = first.src;
    answer.destination = !is_time_exceeded(first) && (!first.icmp_error || first.src == dst);
    answer.path = path_of(row.back, name_of);
    if (first.icmp_error && first.quoted) {
        // The quote as the error arrived and as it left the last point: NAT rewrites it on the way.
        answer.quoted.emplace();
        for (const TraceSighting* s : {&row.back.front(), &row.back.back()}) {
            QuotedTuple q = s->quoted.value_or(QuotedTuple{0, {}, "", false});
            q.at = name_of(s->point);
            answer.quoted->push_back(std::move(q));
            if (row.back.size() == 1) break;
        }
    }
    for (const TraceSighting& s : row.sent)
        for (const TraceSighting& b : row.back)
            if (b.point == s.point) probe.rtt.push_back({name_of(s.point), b.ts_ns - s.ts_ns});
    ++hop.answered;
    if (std::find(hop.reporters.begin(), hop.reporters.end(), first.src) == hop.reporters.end())
        hop.reporters.push_back(first.src);
    if (answer.destination) hop.reached_destination = true;
    probe.answer = std::move(answer);
}

}  // namespace

std::vector<Traceroute> assemble_traceroutes(const std::vector<TraceGroup>& groups,
                                             const std::function<std::string(std::int64_t)>& name_of) {
    std::vector<Traceroute> result;
    for (const TraceGroup& g : groups) {
        std::map<std::int64_t, TraceHop> rows;  // sent TTL -> row
        for (const TraceProbeRow& row : g.probes) {
            TraceHop& hop = rows[row.ttl];
            hop.ttl = row.ttl;
            TraceProbe probe{row.journey, row.flow, path_of(row.sent, name_of), std::nullopt, {}};
            if (row.answer && !row.back.empty()) answer_probe(probe, row, g.dst, hop, name_of);
            hop.probes.push_back(std::move(probe));
        }
        // Rows up to the first TTL that reached the destination, as traceroute prints them; the probes it had
        // already sent with larger TTLs are counted apart.
        Traceroute trace{g.proto, g.src, g.dst, static_cast<std::int64_t>(g.probes.size()), {}, false, {}};
        for (auto& [ttl, row] : rows) {
            if (!trace.reached_destination) {
                trace.reached_destination = row.reached_destination;
                trace.hops.push_back(std::move(row));
                continue;
            }
            LaterProbes& later = trace.later_probes;
            if (later.probes == 0) later.min_ttl = ttl;
            later.max_ttl = ttl;
            later.probes += static_cast<std::int64_t>(row.probes.size());
            later.answered += row.answered;
        }
        result.push_back(std::move(trace));
    }
    return result;
}

}  // namespace hoptrace::report
