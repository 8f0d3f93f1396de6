#include "report/traceroute.hpp"

#include "report/report.hpp"
#include "report/report_detail.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace hoptrace::report {
namespace {

using Json = nlohmann::ordered_json;
using namespace report_detail;

// traceroute's default maximum TTL (-m 30): packets sent with more are ordinary traffic to the same place,
// unless a time exceeded answered a larger TTL (a traceroute run with a larger -m).
constexpr std::int64_t k_default_max_ttl = 30;

constexpr std::int64_t k_tcp_syn = 0x02;
constexpr std::int64_t k_tcp_rst = 0x04;
constexpr std::int64_t k_tcp_ack = 0x10;

// One packet of a journey, as far as the table needs it.
struct Seen {
    std::int64_t point = 0;
    std::int64_t ts_ns = 0;
    std::string src;
    std::int64_t proto = 0;
    std::int64_t icmp_type = 0;
    std::int64_t icmp_code = 0;
    std::int64_t tcp_flags = 0;
    bool icmp_error = false;
    Json quoted;  // ICMP errors: the quoted packet's tuple
};

std::vector<Seen> sightings_of(store::Statement& q, std::int64_t journey) {
    q.reset();
    q.bind(1, journey);
    std::vector<Seen> out;
    while (q.step()) {
        Seen s;
        s.point = q.column_int(0);
        s.ts_ns = q.column_int(1);
        s.src = q.column_text(2);
        s.proto = q.column_int(3);
        s.icmp_type = q.column_int(4);
        s.icmp_code = q.column_int(5);
        s.tcp_flags = q.column_int(6);
        s.icmp_error = (q.column_int(7) & 16) != 0;
        if (s.icmp_error && !q.column_is_null(8)) {
            const std::int64_t inner = q.column_int(8);
            s.quoted = tuple_json(inner, q.column_text(9), q.column_text(10), q.column_int(11), q.column_int(12));
            s.quoted["proto"] = proto_name(inner);
        }
        out.push_back(std::move(s));
    }
    return out;
}

// What answered a probe, in words.
std::string answer_kind(const Seen& a) {
    if (a.icmp_error) return icmp_error_name(a.proto, a.icmp_type, a.icmp_code);
    if (is_icmp(a.proto)) return "echo reply";
    if (a.proto == 6) {
        if ((a.tcp_flags & k_tcp_rst) != 0) return "tcp reset";
        if ((a.tcp_flags & (k_tcp_syn | k_tcp_ack)) == (k_tcp_syn | k_tcp_ack)) return "tcp syn-ack";
    }
    return "reply";
}

bool is_time_exceeded(const Seen& a) {
    return a.icmp_error && ((a.proto == 1 && a.icmp_type == 11) || (a.proto == 58 && a.icmp_type == 3));
}

std::int64_t median(std::vector<std::int64_t> v) {
    std::sort(v.begin(), v.end());
    return v[(v.size() - 1) / 2];
}

}  // namespace

Json build_traceroutes(const store::Database& db, const std::function<std::string(std::int64_t)>& name_of) {
    Json result = Json::array();
    // Every probe answered by a time exceeded marks its (proto, source, destination) as a traceroute.
    std::vector<std::tuple<std::int64_t, std::string, std::string, std::int64_t>> groups;  // + highest expired TTL
    auto gq = db.prepare(
        "SELECT f.proto, f.orig_src, f.orig_dst, max(pp.ttl) FROM journeys e "
        "JOIN packets ep ON ep.journey_id = e.id AND ep.hop = 0 "
        "JOIN journeys p ON p.id = e.related_id JOIN flows f ON f.id = p.flow_id "
        "JOIN packets pp ON pp.journey_id = p.id AND pp.hop = 0 "
        "WHERE e.relation = 'answers' AND (ep.flags & 16) != 0 "
        "AND ((ep.proto = 1 AND ep.icmp_type = 11) OR (ep.proto = 58 AND ep.icmp_type = 3)) "
        "GROUP BY f.proto, f.orig_src, f.orig_dst ORDER BY min(p.id)");
    while (gq.step()) groups.emplace_back(gq.column_int(0), gq.column_text(1), gq.column_text(2), gq.column_int(3));
    if (groups.empty()) return result;

    std::map<std::int64_t, std::int64_t> answer_of;  // probe journey -> its first answer
    auto aq = db.prepare("SELECT related_id, id FROM journeys WHERE relation = 'answers' ORDER BY id");
    while (aq.step()) answer_of.try_emplace(aq.column_int(0), aq.column_int(1));

    auto sq = db.prepare(
        "SELECT point_id, ts_ns, src, proto, icmp_type, icmp_code, tcp_flags, flags, inner_proto, inner_src, "
        "inner_dst, inner_sport, inner_dport FROM packets WHERE journey_id = ? AND hop IS NOT NULL ORDER BY hop");
    auto pq = db.prepare(
        "SELECT j.id, j.flow_id, p.ttl FROM journeys j JOIN flows f ON f.id = j.flow_id "
        "JOIN packets p ON p.journey_id = j.id AND p.hop = 0 "
        "WHERE f.proto = ? AND f.orig_src = ? AND f.orig_dst = ? AND j.direction = 'forward' "
        "AND (j.relation IS NULL OR j.relation != 'answers') AND p.ttl <= ? ORDER BY p.ttl, j.first_ts_ns, j.id");

    for (const auto& [proto, src, dst, highest_expired] : groups) {
        pq.reset();
        pq.bind(1, proto).bind(2, src).bind(3, dst).bind(4, std::max(k_default_max_ttl, highest_expired));
        std::map<std::int64_t, Json> rows;  // sent TTL -> row
        std::int64_t probes = 0;
        while (pq.step()) {
            ++probes;
            const std::int64_t journey = pq.column_int(0);
            const std::int64_t ttl = pq.column_int(2);
            Json probe;
            probe["journey"] = journey;
            probe["flow"] = pq.column_int(1);
            const std::vector<Seen> sent = sightings_of(sq, journey);
            probe["path"] = Json::array();
            for (const Seen& s : sent) probe["path"].push_back(name_of(s.point));
            Json& row = rows[ttl];
            if (row.is_null()) {
                row["ttl"] = ttl;
                row["reporters"] = Json::array();
                row["answered"] = 0;
                row["reached_destination"] = false;
                row["probes"] = Json::array();
            }
            if (const auto it = answer_of.find(journey); it != answer_of.end()) {
                const std::vector<Seen> back = sightings_of(sq, it->second);
                if (!back.empty()) {
                    const Seen& first = back.front();
                    Json answer;
                    answer["journey"] = it->second;
                    answer["kind"] = answer_kind(first);
                    answer["reporter"] = first.src;
                    const bool destination = !is_time_exceeded(first) && (!first.icmp_error || first.src == dst);
                    answer["destination"] = destination;
                    answer["path"] = Json::array();
                    for (const Seen& s : back) answer["path"].push_back(name_of(s.point));
                    if (first.icmp_error && !first.quoted.is_null()) {
                        // The quote as the error arrived and as it left the last point: NAT rewrites it on the way.
                        answer["quoted"] = Json::array();
                        for (const Seen* s : {&back.front(), &back.back()}) {
                            Json q = s->quoted;
                            q["at"] = name_of(s->point);
                            answer["quoted"].push_back(std::move(q));
                            if (back.size() == 1) break;
                        }
                    }
                    // Round trip at each point both crossed, in the probe's path order.
                    Json rtt = Json::array();
                    for (const Seen& s : sent)
                        for (const Seen& b : back)
                            if (b.point == s.point) rtt.push_back({{"point", name_of(s.point)}, {"ns", b.ts_ns - s.ts_ns}});
                    probe["answer"] = std::move(answer);
                    probe["rtt"] = std::move(rtt);
                    row["answered"] = row["answered"].get<std::int64_t>() + 1;
                    if (std::find(row["reporters"].begin(), row["reporters"].end(), Json(first.src)) == row["reporters"].end())
                        row["reporters"].push_back(first.src);
                    if (destination) row["reached_destination"] = true;
                }
            }
            row["probes"].push_back(std::move(probe));
        }
        // Rows up to the first TTL that reached the destination, as traceroute prints them; the probes it had
        // already sent with larger TTLs are counted apart.
        Json trace;
        trace["proto"] = proto_name(proto);
        trace["src"] = src;
        trace["dst"] = dst;
        trace["probes"] = probes;
        trace["hops"] = Json::array();
        Json later{{"probes", 0}, {"answered", 0}, {"min_ttl", 0}, {"max_ttl", 0}};
        bool reached = false;
        for (auto& [ttl, row] : rows) {
            if (!reached) {
                reached = row["reached_destination"].get<bool>();
                trace["hops"].push_back(std::move(row));
                continue;
            }
            if (later["probes"] == 0) later["min_ttl"] = ttl;
            later["max_ttl"] = ttl;
            later["probes"] = later["probes"].get<std::int64_t>() + static_cast<std::int64_t>(row["probes"].size());
            later["answered"] = later["answered"].get<std::int64_t>() + row["answered"].get<std::int64_t>();
        }
        trace["reached_destination"] = reached;
        trace["later_probes"] = std::move(later);
        result.push_back(std::move(trace));
    }
    return result;
}

std::string render_traceroutes(const Json& traceroutes) {
    std::string out;
    auto endpoint_text = [](const Json& t) {
        std::string s = t["src"].get<std::string>();
        if (t.contains("sport")) s += ":" + std::to_string(t["sport"].get<std::int64_t>());
        s += " → " + t["dst"].get<std::string>();
        if (t.contains("dport")) s += ":" + std::to_string(t["dport"].get<std::int64_t>());
        if (t.contains("id")) s += " id " + std::to_string(t["id"].get<std::int64_t>());
        return s;
    };
    for (const Json& t : traceroutes) {
        out += "\nTraceroute  " + t["proto"].get<std::string>() + "  " + t["src"].get<std::string>() + " → " +
               t["dst"].get<std::string>() + "  (" + std::to_string(t["probes"].get<std::int64_t>()) + " probes)\n";
        std::vector<std::vector<std::string>> rows{{"ttl", "answered by", "answers", "probe passed", "round trip (median) at each point"}};
        std::vector<std::string> quotes;
        for (const Json& row : t["hops"]) {
            std::string who;
            const Json* example = nullptr;  // the longest path among the row's probes
            std::map<std::string, std::vector<std::int64_t>> rtt;
            std::vector<std::string> rtt_order;
            bool quoted = false;  // one example per row
            for (const Json& p : row["probes"]) {
                if (example == nullptr || p["path"].size() > (*example)["path"].size()) example = &p;
                if (!p.contains("answer")) continue;
                const Json& a = p["answer"];
                const std::string w = a["reporter"].get<std::string>() + " (" + a["kind"].get<std::string>() +
                                      (a["destination"].get<bool>() ? ", destination" : "") + ")";
                if (who.find(w) == std::string::npos) who += (who.empty() ? "" : ", ") + w;
                for (const Json& r : p["rtt"]) {
                    const std::string point = r["point"].get<std::string>();
                    if (!rtt.contains(point)) rtt_order.push_back(point);
                    rtt[point].push_back(r["ns"].get<std::int64_t>());
                }
                auto without_place = [](Json q) {
                    q.erase("at");
                    return q;
                };
                if (!quoted && a.contains("quoted") && a["quoted"].size() == 2 &&
                    without_place(a["quoted"][0]) != without_place(a["quoted"][1])) {
                    quoted = true;
                    const Json& q0 = a["quoted"][0];
                    const Json& q1 = a["quoted"][1];
                    const std::string at0 = q0["at"].get<std::string>();
                    const std::string at1 = q1["at"].get<std::string>();
                    quotes.push_back("ttl " + std::to_string(row["ttl"].get<std::int64_t>()) + ": quoted " +
                                     endpoint_text(q0) + " at " + at0 + ", " + endpoint_text(q1) + " at " + at1);
                }
            }
            std::string passed;
            for (const Json& point : (*example)["path"]) passed += (passed.empty() ? "" : " → ") + point.get<std::string>();
            if (row["answered"].get<std::int64_t>() > 0 && !row["reached_destination"].get<bool>()) passed += " (expired)";
            std::string times;
            for (const std::string& point : rtt_order)
                times += (times.empty() ? "" : " · ") + point + " " + format_duration(median(rtt[point]));
            rows.push_back({std::to_string(row["ttl"].get<std::int64_t>()), who.empty() ? "*" : who,
                            std::to_string(row["answered"].get<std::int64_t>()) + "/" +
                                std::to_string(row["probes"].size()),
                            passed, times});
        }
        out += table(rows, "  ", {true, false, true, false, false});
        const Json& later = t["later_probes"];
        if (later["probes"].get<std::int64_t>() > 0) {
            out += "  " + std::to_string(later["probes"].get<std::int64_t>()) + " more probes with ttl " +
                   std::to_string(later["min_ttl"].get<std::int64_t>()) + "–" +
                   std::to_string(later["max_ttl"].get<std::int64_t>()) +
                   " were already on their way when the destination answered; " +
                   std::to_string(later["answered"].get<std::int64_t>()) + " of them were answered.\n";
        }
        if (!quotes.empty()) {
            out += "  the errors' quoted probes, as they arrived and after NAT undid its rewrite on the way back:\n";
            for (const std::string& q : quotes) out += "    " + q + "\n";
        }
    }
    return out;
}

}  // namespace hoptrace::report
