#include "report/verdicts.hpp"

#include "tracer/packet.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include <vector>

namespace hoptrace::report {
namespace {

using Json = nlohmann::ordered_json;

// An ICMP error journey, as the verdicts need it.
struct ErrorInfo {
    std::int64_t journey = 0;
    std::int64_t probe = 0;
    std::int64_t type = 0;
    std::int64_t code = 0;
    std::int64_t mtu = 0;  // 0: none
    std::string reporter;
    std::int64_t first_point = 0;
    bool lost = false;     // died on its way back (losses.error_journey)
};

Json evidence_json(const ErrorInfo& e) {
    Json j;
    j["type"] = e.type;
    j["code"] = e.code;
    j["reporter"] = e.reporter;
    if (e.mtu != 0) j["mtu"] = e.mtu;
    return j;
}

// DF packets above a size died while smaller ones passed: {lost_min_size, passed_max_size, mtu, reporter,
// frag_needed, after}. A forward DF journey passed when it reached the end of the flow's path and no ICMP error
// answered it; it died when it stopped short of that end or an error answered it.
std::optional<Json> path_mtu(std::int64_t end_point, const std::vector<std::array<std::int64_t, 3>>& df_journeys,
                             const std::map<std::int64_t, ErrorInfo>& error_of_probe,
                             const std::function<std::string(std::int64_t)>& name_of) {
    std::optional<std::int64_t> lost_min;
    std::optional<std::int64_t> passed_max;
    const ErrorInfo* error = nullptr;
    std::int64_t after = 0;
    for (const auto& [journey, size, last_point] : df_journeys) {
        const auto e = error_of_probe.find(journey);
        const bool answered = e != error_of_probe.end();
        if (last_point == end_point && !answered) {
            passed_max = std::max(passed_max.value_or(0), size);
            continue;
        }
        if (!lost_min || size < *lost_min) {
            lost_min = size;
            after = last_point;
        }
        if (answered && (error == nullptr || (error->mtu == 0 && e->second.mtu != 0))) error = &e->second;
    }
    if (!lost_min || !passed_max || *lost_min <= *passed_max) return std::nullopt;
    if (error != nullptr && error->mtu == 0) return std::nullopt;  // refused for another reason than its size
    Json p;
    p["lost_min_size"] = *lost_min;
    p["passed_max_size"] = *passed_max;
    p["mtu"] = error != nullptr ? Json(error->mtu) : Json(nullptr);
    p["reporter"] = error != nullptr ? Json(error->reporter) : Json(nullptr);
    p["frag_needed"] = error == nullptr ? "none" : error->lost ? "dropped-in-host" : "returned";
    p["after"] = name_of(after);
    if (error != nullptr) p["arrived_on"] = name_of(error->first_point);
    return p;
}

}  // namespace

void add_verdicts(const store::Database& db, Json& report, const std::function<std::string(std::int64_t)>& name_of) {
    // Journeys per flow by what they are.
    std::map<std::int64_t, std::int64_t> ambiguous;
    std::map<std::int64_t, std::int64_t> copies;
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> fragments;  // flow -> (datagrams, fragments)
    std::int64_t ambiguous_total = 0;
    std::map<std::int64_t, std::int64_t> interfaces;  // flow -> on how many interfaces its packets were seen at most
    auto cq = db.prepare(
        "SELECT j.flow_id, max(n) FROM (SELECT related_id, count(*) + 1 AS n FROM journeys WHERE relation = 'copy-of' "
        "GROUP BY related_id) c JOIN journeys j ON j.id = c.related_id GROUP BY j.flow_id");
    while (cq.step()) interfaces[cq.column_int(0)] = cq.column_int(1);
    auto jq = db.prepare(
        "SELECT flow_id, sum(ambiguous), sum(relation IS 'copy-of'), sum(relation IS 'fragment-of'), "
        "count(DISTINCT CASE WHEN relation IS 'fragment-of' THEN related_id END) FROM journeys GROUP BY flow_id");
    while (jq.step()) {
        ambiguous[jq.column_int(0)] = jq.column_int(1);
        ambiguous_total += jq.column_int(1);
        copies[jq.column_int(0)] = jq.column_int(2);
        if (jq.column_int(3) > 0) fragments[jq.column_int(0)] = {jq.column_int(4), jq.column_int(3) + jq.column_int(4)};
    }
    // ICMP errors: what they say, and whether they died on their way back.
    std::set<std::int64_t> lost_errors;
    std::map<std::int64_t, Json> error_losses;  // error journey -> its lost list
    auto elq = db.prepare(
        "SELECT error_journey, after_point, expected_point, count FROM losses WHERE error_journey IS NOT NULL ORDER BY id");
    while (elq.step()) {
        lost_errors.insert(elq.column_int(0));
        error_losses[elq.column_int(0)].push_back(
            {{"after", name_of(elq.column_int(1))}, {"expected", name_of(elq.column_int(2))}, {"count", elq.column_int(3)}});
    }
    std::map<std::int64_t, ErrorInfo> errors;           // error journey -> info
    std::map<std::int64_t, ErrorInfo> error_of_probe;   // probe journey -> the (first) error that answered it
    auto eq = db.prepare(
        "SELECT e.id, e.related_id, p.icmp_type, p.icmp_code, coalesce(p.icmp_mtu, 0), p.src, e.first_point "
        "FROM journeys e JOIN packets p ON p.journey_id = e.id AND p.hop = 0 "
        "WHERE (p.flags & ?1) != 0 ORDER BY e.id");
    eq.bind(1, static_cast<std::int64_t>(packet_flag::k_icmp_error));
    while (eq.step()) {
        ErrorInfo e{eq.column_int(0), eq.column_is_null(1) ? 0 : eq.column_int(1), eq.column_int(2), eq.column_int(3),
                    eq.column_int(4), eq.column_text(5), eq.column_int(6), false};
        e.lost = lost_errors.contains(e.journey);
        errors[e.journey] = e;
        if (e.probe != 0) error_of_probe.try_emplace(e.probe, e);
    }
    // Forward DF journeys (the flow's own packets, not pieces of one) with their size and last point.
    std::map<std::int64_t, std::vector<std::array<std::int64_t, 3>>> df_journeys;  // flow -> (journey, size, last)
    auto dq = db.prepare(
        "SELECT j.flow_id, j.id, p.ip_len, j.last_point FROM journeys j JOIN packets p ON p.journey_id = j.id "
        "AND p.hop = 0 WHERE j.direction = 'forward' AND (p.flags & ?1) = 0 AND ((p.flags & ?2) != 0 OR "
        "p.ip_version = 6) AND (j.relation IS NULL OR j.relation IN ('repeats', 'answers')) ORDER BY j.id");
    dq.bind(1, static_cast<std::int64_t>(packet_flag::k_icmp_error))
        .bind(2, static_cast<std::int64_t>(packet_flag::k_dont_fragment));
    while (dq.step()) df_journeys[dq.column_int(0)].push_back({dq.column_int(1), dq.column_int(2), dq.column_int(3)});
    // The evidence behind each loss an ICMP error explains.
    std::map<std::int64_t, std::vector<std::pair<Json, std::int64_t>>> evidence;  // flow -> (loss key, error)
    auto vq = db.prepare(
        "SELECT flow_id, after_point, expected_point, direction, cause, evidence_id FROM losses "
        "WHERE evidence_id IS NOT NULL AND error_journey IS NULL");
    while (vq.step())
        evidence[vq.column_int(0)].push_back(
            {Json{name_of(vq.column_int(1)), name_of(vq.column_int(2)), vq.column_text(3), vq.column_text(4)},
             vq.column_int(5)});
    // Flows that reached an uplink (the NAT point): the others were never translated, so conntrack has nothing
    // to agree or differ with.
    std::set<std::int64_t> reached_uplink;
    auto uq = db.prepare(
        "SELECT DISTINCT j.flow_id FROM journeys j JOIN packets p ON p.journey_id = j.id "
        "JOIN points pt ON pt.id = p.point_id WHERE pt.role = 'uplink'");
    while (uq.step()) reached_uplink.insert(uq.column_int(0));
    // The end of each flow's forward path: the last point of its longest forward journey.
    std::map<std::int64_t, std::int64_t> path_end;
    auto pq = db.prepare(
        "SELECT flow_id, last_point FROM (SELECT flow_id, last_point, row_number() OVER (PARTITION BY flow_id "
        "ORDER BY sightings DESC, id) AS rn FROM journeys WHERE direction = 'forward') WHERE rn = 1");
    while (pq.step()) path_end[pq.column_int(0)] = pq.column_int(1);

    report["ambiguous_journeys"] = ambiguous_total;
    for (Json& f : report["flows"]) {
        const std::int64_t id = f["id"].get<std::int64_t>();
        f["ambiguous"] = ambiguous[id];
        f["copies"] = copies[id];
        if (const auto it = interfaces.find(id); it != interfaces.end()) f["copies_interfaces"] = it->second;
        if (const auto it = fragments.find(id); it != fragments.end())
            f["fragments"] = {{"datagrams", it->second.first}, {"fragments", it->second.second}};
        if (const auto ev = evidence.find(id); ev != evidence.end()) {
            for (Json& l : f["lost"]) {
                const Json key{l["after"], l["expected"], l["direction"], l.value("cause", "dropped")};
                for (const auto& [k, journey] : ev->second)
                    if (k == key && errors.contains(journey)) l["evidence"] = evidence_json(errors.at(journey));
            }
        }
        if (const auto end = path_end.find(id); end != path_end.end())
            if (auto p = path_mtu(end->second, df_journeys[id], error_of_probe, name_of)) f["pmtu"] = std::move(*p);
        if (f.contains("conntrack") && !reached_uplink.contains(id)) f["conntrack"]["state"] = "not-reached";
    }
    for (Json& e : report["icmp_errors"]) {
        const auto it = error_losses.find(e["journey"].get<std::int64_t>());
        e["lost"] = it == error_losses.end() ? Json::array() : it->second;
        if (const auto info = errors.find(e["journey"].get<std::int64_t>()); info != errors.end() && info->second.mtu != 0)
            e["mtu"] = info->second.mtu;
    }
}

std::string verdict_lines(const Json& flow) {
    std::string out;
    if (flow.value("ambiguous", 0) > 0)
        out += "  AMBIGUOUS: " + std::to_string(flow["ambiguous"].get<std::int64_t>()) +
               " journeys of this flow could not be told apart from another flow's (same packet, same time, nothing "
               "to decide by): their path and rewrite are the likeliest, not proven\n";
    if (flow.contains("copies_interfaces"))
        out += "  its packets were seen on " + std::to_string(flow["copies_interfaces"].get<std::int64_t>()) +
               " interfaces of one point (tcpdump -i any without interface names): copies, not duplicates\n";
    else if (flow.value("copies", 0) > 0)
        out += "  " + std::to_string(flow["copies"].get<std::int64_t>()) +
               " copies of packets of other flows, seen on several interfaces of one point (tcpdump -i any without "
               "interface names), not duplicates\n";
    if (flow.contains("fragments"))
        out += "  fragmented: " + std::to_string(flow["fragments"]["fragments"].get<std::int64_t>()) + " fragments of " +
               std::to_string(flow["fragments"]["datagrams"].get<std::int64_t>()) + " datagrams\n";
    if (flow.contains("pmtu")) {
        const Json& p = flow["pmtu"];
        const std::string lost = std::to_string(p["lost_min_size"].get<std::int64_t>());
        const std::string passed = std::to_string(p["passed_max_size"].get<std::int64_t>());
        const std::string state = p["frag_needed"].get<std::string>();
        const std::string after = p["after"].get<std::string>();
        out += "  PMTU: " + lost + "-byte DF packets ";
        out += state == "dropped-in-host" ? "left by " + after + " and were refused beyond it"
                                          : "lost after " + after;
        out += ", packets up to " + passed + " bytes pass; ";
        if (state == "returned")
            out += "frag-needed (MTU " + std::to_string(p["mtu"].get<std::int64_t>()) + ") came back from " +
                   p["reporter"].get<std::string>();
        else if (state == "none")
            out += "no frag-needed came back: a PMTU black hole";
        else
            out += "frag-needed arrived on " + p["arrived_on"].get<std::string>() + " but was dropped in the host (MTU " +
                   std::to_string(p["mtu"].get<std::int64_t>()) + ", from " + p["reporter"].get<std::string>() + ")";
        out += "\n";
    }
    return out;
}

}  // namespace hoptrace::report
