#include "report/report.hpp"
#include "report/verdicts.hpp"

#include "correlate/analysis.hpp"
#include "report/report_detail.hpp"
#include "report/traceroute.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <ostream>
#include <map>
#include <sstream>
#include <string_view>
#include <tuple>
#include <vector>

namespace hoptrace::report {

using Json = nlohmann::ordered_json;

namespace report_detail {

std::string proto_name(std::int64_t proto) {
    switch (proto) {
        case 1: return "icmp";
        case 6: return "tcp";
        case 17: return "udp";
        case 58: return "icmpv6";
        case 132: return "sctp";
        default: return "ip-proto-" + std::to_string(proto);
    }
}

bool is_icmp(std::int64_t proto) { return proto == 1 || proto == 58; }

// A tuple as the contract spells it: icmp {"src","dst","id"}, others {"src","dst","sport","dport"}.
Json tuple_json(std::int64_t proto, const std::string& src, const std::string& dst, std::int64_t sport,
                std::int64_t dport) {
    Json t;
    t["src"] = src;
    t["dst"] = dst;
    if (is_icmp(proto)) {
        t["id"] = sport;
    } else {
        t["sport"] = sport;
        t["dport"] = dport;
    }
    return t;
}

}  // namespace report_detail

namespace {

using namespace report_detail;

Json rewrite_value(const std::string& field, const std::string& text) {
    if (field == "src" || field == "dst") return text;
    return std::stoll(text);  // ports and ids are numbers
}

// Points that saw a flow's packets without being on its path (hop NULL): a bridge that switched them from one
// port to another. Per flow: {"point", "direction", "count", "between": [port, port]}, the two veth points of
// one such journey's path in its order — the ports the bridge switched it between.
template <typename NameOf>
std::map<std::int64_t, Json> flow_observers(const store::Database& db, const NameOf& name_of) {
    std::map<std::int64_t, Json> out;
    auto q = db.prepare(
        "WITH observed AS (SELECT j.flow_id, j.direction, o.point_id, count(*) AS n, min(o.journey_id) AS sample "
        "FROM packets o JOIN journeys j ON j.id = o.journey_id WHERE o.journey_id IS NOT NULL AND o.hop IS NULL "
        "GROUP BY j.flow_id, j.direction, o.point_id) "
        "SELECT b.flow_id, b.direction, b.point_id, b.n, p.point_id FROM observed b "
        "LEFT JOIN packets p ON p.journey_id = b.sample AND p.hop IS NOT NULL "
        "AND p.point_id IN (SELECT id FROM points WHERE role = 'veth') "
        "ORDER BY b.flow_id, b.direction, b.point_id, p.hop");
    Json* current = nullptr;
    using Key = std::tuple<std::int64_t, std::string, std::int64_t>;  // flow, direction, observer
    Key key{-1, "", -1};
    while (q.step()) {
        const Key row{q.column_int(0), q.column_text(1), q.column_int(2)};
        if (row != key) {
            key = row;
            auto& list = out[q.column_int(0)];
            if (list.is_null()) list = Json::array();
            list.push_back({{"point", name_of(q.column_int(2))}, {"direction", q.column_text(1)},
                            {"count", q.column_int(3)}, {"between", Json::array()}});
            current = &list.back();
        }
        if (!q.column_is_null(4) && (*current)["between"].size() < 2)
            (*current)["between"].push_back(name_of(q.column_int(4)));
    }
    return out;
}

// A flow's hops along its own path: forward ones from its first point on, replies from its last. The points'
// global path order cannot say that for a flow between two containers, whose path runs inward after the bridge.
// Hops from a point off the path keep their place after the others.
Json along_path(Json hops, const Json& path) {
    std::map<std::string, std::size_t> position;
    for (std::size_t i = 0; i < path.size(); ++i) position.emplace(path[i].get<std::string>(), i);
    auto key = [&](const Json& h) {
        const bool reply = h["direction"] == "reply";
        const auto it = position.find(h["from"].get<std::string>());
        const std::size_t at = it == position.end() ? path.size() : reply ? path.size() - 1 - it->second : it->second;
        return std::pair{reply, at};
    };
    std::stable_sort(hops.begin(), hops.end(), [&](const Json& a, const Json& b) { return key(a) < key(b); });
    return hops;
}

}  // namespace

std::string format_duration(std::int64_t ns) {
    char buf[64];
    const double v = static_cast<double>(ns);
    const std::int64_t a = ns < 0 ? -ns : ns;
    if (a < 1'000) std::snprintf(buf, sizeof buf, "%" PRId64 " ns", ns);
    else if (a < 1'000'000) std::snprintf(buf, sizeof buf, "%.1f µs", v / 1e3);
    else if (a < 1'000'000'000) std::snprintf(buf, sizeof buf, "%.2f ms", v / 1e6);
    else std::snprintf(buf, sizeof buf, "%.3f s", v / 1e9);
    return buf;
}

Json build_report(const store::Database& db) {
    Json report;
    report["schema"] = k_report_schema;

    std::map<std::int64_t, std::string> point_name;
    Json points = Json::array();
    auto pq = db.prepare(
        "SELECT id, name, netns, ifname, role, packets, kernel_drops, path_order, source, note, role_evidence "
        "FROM points ORDER BY path_order IS NULL, path_order, id");
    while (pq.step()) {
        Json p;
        point_name[pq.column_int(0)] = pq.column_text(1);
        p["name"] = pq.column_text(1);
        p["netns"] = pq.column_text(2);
        p["ifname"] = pq.column_text(3);
        p["role"] = pq.column_text(4);
        p["packets"] = pq.column_int(5);
        p["kernel_drops"] = pq.column_int(6);
        if (!pq.column_is_null(7)) p["path_order"] = pq.column_int(7);
        p["source"] = pq.column_text(8);
        if (!pq.column_text(9).empty()) p["note"] = pq.column_text(9);
        p["role_evidence"] = pq.column_text(10);
        points.push_back(std::move(p));
    }
    report["points"] = std::move(points);
    auto name_of = [&](std::int64_t id) {
        auto it = point_name.find(id);
        return it == point_name.end() ? std::string("point#") + std::to_string(id) : it->second;
    };

    // Per-flow children, each loaded in one pass (no per-flow queries: flows can be many).
    std::map<std::int64_t, Json> rewrites;
    std::map<std::int64_t, std::string> flow_proto_field;
    auto rq = db.prepare(
        "SELECT flow_id, field, from_value, to_value, from_point, to_point, direction, packets FROM nat_rewrites "
        "ORDER BY flow_id, direction, from_point, to_point, field, id");
    while (rq.step()) {
        const std::string field = rq.column_text(1);
        Json r;
        r["field"] = field;
        r["from"] = rewrite_value(field, rq.column_text(2));
        r["to"] = rewrite_value(field, rq.column_text(3));
        r["between"] = Json::array({name_of(rq.column_int(4)), name_of(rq.column_int(5))});
        r["direction"] = rq.column_text(6);
        r["packets"] = rq.column_int(7);
        auto& list = rewrites[rq.column_int(0)];
        if (list.is_null()) list = Json::array();
        list.push_back(std::move(r));
    }
    auto hop_json = [&](store::Statement& q) {
        Json h;
        h["from"] = name_of(q.column_int(1));
        h["to"] = name_of(q.column_int(2));
        h["direction"] = q.column_text(3);
        h["count"] = q.column_int(4);
        h["min_ns"] = q.column_int(5);
        h["p50_ns"] = q.column_int(6);
        h["p90_ns"] = q.column_int(7);
        h["p99_ns"] = q.column_int(8);
        h["max_ns"] = q.column_int(9);
        return h;
    };
    std::map<std::int64_t, Json> hops;
    Json all_hops = Json::array();
    // Hops in path order of their first point within each direction: forward outward, replies inward.
    auto hq = db.prepare(
        "SELECT h.flow_id, h.from_point, h.to_point, h.direction, h.count, h.min_ns, h.p50_ns, h.p90_ns, "
        "h.p99_ns, h.max_ns FROM hops h JOIN points f ON f.id = h.from_point "
        "ORDER BY h.flow_id IS NULL, h.flow_id, h.direction, "
        "CASE WHEN h.direction = 'reply' THEN -f.path_order ELSE f.path_order END, h.to_point");
    while (hq.step()) {
        if (hq.column_is_null(0)) {
            all_hops.push_back(hop_json(hq));
            continue;
        }
        auto& list = hops[hq.column_int(0)];
        if (list.is_null()) list = Json::array();
        list.push_back(hop_json(hq));
    }
    std::map<std::int64_t, Json> lost;
    auto lq = db.prepare(
        "SELECT l.flow_id, l.after_point, l.expected_point, l.direction, l.count, l.cause, p.kernel_drops, "
        "l.outside_window "
        "FROM losses l LEFT JOIN points p ON p.id = l.expected_point WHERE l.error_journey IS NULL "
        "ORDER BY l.flow_id, l.id");
    while (lq.step()) {
        Json l;
        l["after"] = name_of(lq.column_int(1));
        l["expected"] = name_of(lq.column_int(2));
        l["direction"] = lq.column_text(3);
        l["count"] = lq.column_int(4);
        l["cause"] = lq.column_text(5);
        // Evidence: kernel drops at the point that should have seen them (the capture's, not the network's).
        l["kernel_drops_at_expected"] = lq.column_int(6);
        // Imported files: how many of them were lost while only the other files show capturing.
        if (lq.column_int(7) > 0) l["outside_window"] = lq.column_int(7);
        auto& list = lost[lq.column_int(0)];
        if (list.is_null()) list = Json::array();
        list.push_back(std::move(l));
    }
    // GSO/TSO: super-packets seen whole up to one point and as segments from the next one (journeys.relation
    // 'segment-of'), per flow, direction and pair of points. Sizes are IP lengths.
    std::map<std::int64_t, Json> segmentation;
    auto sq = db.prepare(
        "SELECT s.flow_id, w.last_point, s.first_point, s.direction, count(DISTINCT s.related_id), count(*), "
        "max(pw.ip_len), max(ps.ip_len) FROM journeys s JOIN journeys w ON w.id = s.related_id "
        "JOIN packets pw ON pw.journey_id = w.id AND pw.hop = 0 JOIN packets ps ON ps.journey_id = s.id AND ps.hop = 0 "
        "WHERE s.relation = 'segment-of' GROUP BY s.flow_id, s.direction, w.last_point, s.first_point "
        "ORDER BY s.flow_id, s.direction, w.last_point, s.first_point");
    while (sq.step()) {
        Json g;
        g["between"] = Json::array({name_of(sq.column_int(1)), name_of(sq.column_int(2))});
        g["direction"] = sq.column_text(3);
        g["super_packets"] = sq.column_int(4);
        g["segments"] = sq.column_int(5);
        g["max_super_packet_bytes"] = sq.column_int(6);
        g["max_segment_bytes"] = sq.column_int(7);
        auto& list = segmentation[sq.column_int(0)];
        if (list.is_null()) list = Json::array();
        list.push_back(std::move(g));
    }
    // Each flow's path: the points of its longest forward journey (else its longest journey).
    std::map<std::int64_t, Json> paths;
    auto path_q = db.prepare(
        "WITH best AS (SELECT flow_id, id, row_number() OVER (PARTITION BY flow_id ORDER BY "
        "direction = 'forward' DESC, sightings DESC, id) AS rn FROM journeys) "
        "SELECT b.flow_id, p.point_id FROM best b JOIN packets p ON p.journey_id = b.id "
        "WHERE b.rn = 1 AND p.hop IS NOT NULL ORDER BY b.flow_id, p.hop");
    while (path_q.step()) {
        auto& list = paths[path_q.column_int(0)];
        if (list.is_null()) list = Json::array();
        list.push_back(name_of(path_q.column_int(1)));
    }
    std::map<std::int64_t, Json> observers = flow_observers(db, name_of);
    // flow -> (forward, reply) packets of the flow itself; ICMP errors that answered it are listed apart, and the
    // segments a GSO/TSO super-packet was cut into count as that one packet (`segmentation` counts them).
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> per_direction;
    auto dq = db.prepare(
        "SELECT flow_id, sum(direction = 'forward'), sum(direction = 'reply') FROM journeys WHERE id NOT IN "
        "(SELECT journey_id FROM packets WHERE (flags & 16) != 0 AND journey_id IS NOT NULL) "
        "AND (relation IS NULL OR relation NOT IN ('segment-of', 'fragment-of', 'reassembly-of', 'copy-of')) "
        "GROUP BY flow_id");
    while (dq.step()) per_direction[dq.column_int(0)] = {dq.column_int(1), dq.column_int(2)};
    // flow -> journeys that repeat an earlier one (TCP retransmissions, duplicated packets), per direction.
    std::map<std::int64_t, Json> repeated;
    auto rpq = db.prepare(
        "SELECT flow_id, sum(direction = 'forward'), sum(direction = 'reply') FROM journeys "
        "WHERE relation = 'repeats' GROUP BY flow_id");
    while (rpq.step()) repeated[rpq.column_int(0)] = {{"forward", rpq.column_int(1)}, {"reply", rpq.column_int(2)}};

    // The kernel's NAT for each connection (live capture only): conntrack's reply tuple, reversed, is how the
    // kernel translated the original tuple. The dump at the end wins over the one at the start.
    std::map<std::string, Json> kernel;
    auto key = [](std::int64_t proto, const std::string& src, const std::string& dst, std::int64_t sport,
                  std::int64_t dport) {
        return std::to_string(proto) + "|" + src + "|" + dst + "|" + std::to_string(sport) + "|" +
               std::to_string(is_icmp(proto) ? 0 : dport);
    };
    auto cq = db.prepare(
        "SELECT proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst, reply_sport, reply_dport "
        "FROM conntrack ORDER BY event = 'dump-end', id");
    while (cq.step()) {
        const std::int64_t proto = cq.column_int(0);
        Json k;
        k["original"] = tuple_json(proto, cq.column_text(1), cq.column_text(2), cq.column_int(3), cq.column_int(4));
        k["reply"] = tuple_json(proto, cq.column_text(5), cq.column_text(6), cq.column_int(7), cq.column_int(8));
        k["translated"] =
            tuple_json(proto, cq.column_text(6), cq.column_text(5), is_icmp(proto) ? cq.column_int(7) : cq.column_int(8),
                       cq.column_int(7));
        kernel[key(proto, cq.column_text(1), cq.column_text(2), cq.column_int(3), cq.column_int(4))] = std::move(k);
    }

    Json flows = Json::array();
    auto fq = db.prepare(
        "SELECT id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, trans_sport, "
        "trans_dport, packets, journeys, first_ts_ns, last_ts_ns FROM flows ORDER BY id");
    while (fq.step()) {
        const std::int64_t id = fq.column_int(0);
        const std::int64_t proto = fq.column_int(1);
        Json f;
        f["id"] = id;
        f["proto"] = proto_name(proto);
        f["original"] = tuple_json(proto, fq.column_text(2), fq.column_text(3), fq.column_int(4), fq.column_int(5));
        f["translated"] =
            tuple_json(proto, fq.column_text(6), fq.column_text(7), fq.column_int(8), fq.column_int(9));
        f["rewrites"] = rewrites.contains(id) ? rewrites[id] : Json::array();
        f["packets"] = fq.column_int(10);
        f["journeys"] = fq.column_int(11);
        f["forward_journeys"] = per_direction[id].first;
        f["reply_journeys"] = per_direction[id].second;
        f["repeated_journeys"] = repeated.contains(id) ? repeated[id] : Json{{"forward", 0}, {"reply", 0}};
        f["first_ts_ns"] = fq.column_int(12);
        f["last_ts_ns"] = fq.column_int(13);
        f["path"] = paths.contains(id) ? paths[id] : Json::array();
        f["hops"] = hops.contains(id) ? along_path(std::move(hops[id]), f["path"]) : Json::array();
        f["lost"] = lost.contains(id) ? lost[id] : Json::array();
        f["observers"] = observers.contains(id) ? observers[id] : Json::array();
        f["segmentation"] = segmentation.contains(id) ? segmentation[id] : Json::array();
        if (!kernel.empty()) {
            const auto it = kernel.find(key(proto, fq.column_text(2), fq.column_text(3), fq.column_int(4), fq.column_int(5)));
            Json c;
            if (it == kernel.end()) {
                c["state"] = "not found";
            } else {
                c = it->second;
                c["state"] = c["translated"] == f["translated"] ? "agrees" : "differs";
            }
            f["conntrack"] = std::move(c);
        }
        flows.push_back(std::move(f));
    }
    report["flows"] = std::move(flows);

    // ICMP errors: one per journey. The reporter is the error's source where it was first seen; the probe is
    // the quoted packet as seen at the last point (after NAT undid its rewrite, inside the container).
    Json errors = Json::array();
    // The TTL each probe was sent with (its first sighting: inside the container when that was captured).
    std::map<std::int64_t, std::int64_t> sent_ttl;  // probe journey -> TTL
    auto tq = db.prepare(
        "SELECT p.journey_id, p.ttl FROM journeys e JOIN packets p ON p.journey_id = e.related_id AND p.hop = 0 "
        "WHERE e.relation = 'answers'");
    while (tq.step()) sent_ttl.try_emplace(tq.column_int(0), tq.column_int(1));
    auto eq = db.prepare(
        "SELECT p.journey_id, p.point_id, p.icmp_type, p.icmp_code, p.src, p.inner_proto, p.inner_src, p.inner_dst, "
        "p.inner_sport, p.inner_dport, p.inner_ttl, p.proto, j.flow_id, j.related_id FROM packets p "
        "JOIN journeys j ON j.id = p.journey_id WHERE (p.flags & 16) != 0 AND p.hop IS NOT NULL ORDER BY p.journey_id, p.hop");
    std::map<std::int64_t, std::vector<std::size_t>> errors_of_flow;  // flow -> indexes into errors
    std::int64_t current = -1;
    Json error;
    auto finish = [&] {
        if (current >= 0) errors.push_back(std::move(error));
        error = Json();
    };
    while (eq.step()) {
        const std::int64_t journey = eq.column_int(0);
        if (journey != current) {
            finish();
            current = journey;
            error["type"] = eq.column_int(2);
            error["code"] = eq.column_int(3);
            error["reporter"] = eq.column_text(4);
            error["icmp"] = proto_name(eq.column_int(11));
            error["journey"] = journey;
            error["flow"] = eq.column_int(12);
            if (!eq.column_is_null(13)) error["probe_journey"] = eq.column_int(13);
            error["path"] = Json::array();
            errors_of_flow[eq.column_int(12)].push_back(errors.size());
        }
        error["path"].push_back(name_of(eq.column_int(1)));
        Json probe;
        const std::int64_t inner_proto = eq.column_is_null(5) ? 0 : eq.column_int(5);
        probe["proto"] = proto_name(inner_proto);
        probe["src"] = eq.column_text(6);
        probe["dst"] = eq.column_text(7);
        probe["sport"] = eq.column_is_null(8) ? 0 : eq.column_int(8);
        probe["dport"] = eq.column_is_null(9) ? 0 : eq.column_int(9);
        probe["ttl"] = eq.column_is_null(10) ? 0 : eq.column_int(10);
        if (!eq.column_is_null(13))
            if (const auto it = sent_ttl.find(eq.column_int(13)); it != sent_ttl.end()) probe["sent_ttl"] = it->second;
        error["probe"] = std::move(probe);  // the last sighting's view wins
    }
    finish();
    // Each flow says which ICMP errors answered it (a traceroute probe, a closed port).
    for (Json& f : report["flows"]) {
        Json answered = Json::array();
        if (const auto it = errors_of_flow.find(f["id"].get<std::int64_t>()); it != errors_of_flow.end())
            for (const std::size_t i : it->second)
                answered.push_back({{"icmp", errors[i]["icmp"]}, {"type", errors[i]["type"]},
                                    {"code", errors[i]["code"]}, {"reporter", errors[i]["reporter"]}});
        f["icmp_errors"] = std::move(answered);
    }
    report["icmp_errors"] = std::move(errors);
    report["hop_totals"] = std::move(all_hops);
    report["traceroutes"] = build_traceroutes(db, name_of);
    add_verdicts(db, report, name_of);
    return report;
}

// Names are stored as given (a pcapng if_name or a --point name may hold any bytes); the JSON is always valid UTF-8:
// an invalid byte becomes U+FFFD.
std::string render_json(const Json& report) {
    return report.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

namespace {

// RFC 4180 quoting; a cell a spreadsheet would take for a formula (starting with = + - @, tab or CR) gets a leading
// apostrophe first (OWASP's rule against CSV injection).
std::string csv_field(const std::string& value) {
    std::string v = value;
    if (!v.empty() && std::string_view("=+-@\t\r").find(v.front()) != std::string_view::npos) v.insert(0, 1, '\'');
    if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
    std::string out = "\"";
    for (char c : v) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

}  // namespace

void write_csv(const store::Database& db, std::ostream& out, const std::function<bool(std::int64_t flow)>& keep) {
    out << "flow_id,proto,direction,journey_id,from,to,from_ts_ns,to_ts_ns,latency_ns\n";
    auto q = db.prepare(
        "SELECT j.flow_id, f.proto, j.direction, a.journey_id, pa.name, pb.name, a.ts_ns, b.ts_ns "
        "FROM packets a JOIN packets b ON b.journey_id = a.journey_id AND b.hop = a.hop + 1 "
        "JOIN journeys j ON j.id = a.journey_id JOIN flows f ON f.id = j.flow_id "
        "JOIN points pa ON pa.id = a.point_id JOIN points pb ON pb.id = b.point_id "
        "WHERE a.journey_id IS NOT NULL ORDER BY a.journey_id, a.hop");
    while (q.step()) {
        const std::int64_t flow = q.column_int(0);
        if (keep && !keep(flow)) continue;
        const std::int64_t from_ts = q.column_int(6);
        const std::int64_t to_ts = q.column_int(7);
        out << flow << ',' << proto_name(q.column_int(1)) << ',' << q.column_text(2) << ',' << q.column_int(3) << ','
            << csv_field(q.column_text(4)) << ',' << csv_field(q.column_text(5)) << ',' << from_ts << ',' << to_ts
            << ',' << (to_ts - from_ts) << '\n';
    }
}

Json hop_totals(const store::Database& db, const std::function<bool(std::int64_t flow)>& keep) {
    using Key = std::tuple<std::string, std::int64_t, std::int64_t, std::int64_t>;  // direction, order, from, to
    std::map<Key, std::vector<std::int64_t>> samples;
    std::map<std::int64_t, std::string> names;
    auto q = db.prepare(
        "SELECT j.flow_id, j.direction, a.point_id, b.point_id, b.ts_ns - a.ts_ns, "
        "CASE WHEN j.direction = 'reply' THEN -pa.path_order ELSE pa.path_order END "
        "FROM packets a JOIN packets b ON b.journey_id = a.journey_id AND b.hop = a.hop + 1 "
        "JOIN journeys j ON j.id = a.journey_id JOIN points pa ON pa.id = a.point_id "
        "WHERE a.journey_id IS NOT NULL AND (a.flags & 16) = 0");
    while (q.step()) {
        if (keep && !keep(q.column_int(0))) continue;
        samples[{q.column_text(1), q.column_int(5), q.column_int(2), q.column_int(3)}].push_back(q.column_int(4));
    }
    auto nq = db.prepare("SELECT id, name FROM points");
    while (nq.step()) names[nq.column_int(0)] = nq.column_text(1);
    Json totals = Json::array();
    for (auto& [key, v] : samples) {
        std::sort(v.begin(), v.end());
        const auto& [direction, order, from, to] = key;
        totals.push_back({{"from", names[from]}, {"to", names[to]}, {"direction", direction},
                          {"count", static_cast<std::int64_t>(v.size())}, {"min_ns", v.front()},
                          {"p50_ns", correlate::percentile(v, 50)}, {"p90_ns", correlate::percentile(v, 90)}, {"p99_ns", correlate::percentile(v, 99)},
                          {"max_ns", v.back()}});
    }
    return totals;
}

void keep_flows(Json& report, const store::Database& db, const std::function<bool(std::int64_t flow)>& keep) {
    auto kept = [&](const Json& j) { return keep(j["flow"].get<std::int64_t>()); };
    Json flows = Json::array();
    for (Json& f : report["flows"])
        if (keep(f["id"].get<std::int64_t>())) flows.push_back(std::move(f));
    report["flows"] = std::move(flows);
    Json errors = Json::array();
    for (Json& e : report["icmp_errors"])
        if (kept(e)) errors.push_back(std::move(e));
    report["icmp_errors"] = std::move(errors);
    Json traces = Json::array();
    for (Json& t : report["traceroutes"]) {
        Json hops = Json::array();
        for (Json& h : t["hops"]) {
            Json probes = Json::array();
            for (Json& p : h["probes"])
                if (kept(p)) probes.push_back(std::move(p));
            if (probes.empty()) continue;
            h["probes"] = std::move(probes);
            hops.push_back(std::move(h));
        }
        if (hops.empty()) continue;
        t["hops"] = std::move(hops);
        traces.push_back(std::move(t));
    }
    report["traceroutes"] = std::move(traces);
    report["hop_totals"] = hop_totals(db, keep);
}

namespace {

std::string tuple_text(const std::string& proto, const Json& t) {
    if (t.contains("id")) {
        return t["src"].get<std::string>() + " → " + t["dst"].get<std::string>() + " id " +
               std::to_string(t["id"].get<std::int64_t>());
    }
    auto endpoint = [](const std::string& addr, std::int64_t port) {
        const bool v6 = addr.find(':') != std::string::npos;
        return (v6 ? "[" + addr + "]" : addr) + ":" + std::to_string(port);
    };
    if (proto == "tcp" || proto == "udp" || proto == "sctp") {
        return endpoint(t["src"].get<std::string>(), t["sport"].get<std::int64_t>()) + " → " +
               endpoint(t["dst"].get<std::string>(), t["dport"].get<std::int64_t>());
    }
    return t["src"].get<std::string>() + " → " + t["dst"].get<std::string>();
}

std::string value_text(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// Word-wraps `text` at `width` display columns, each line indented.
std::string wrap(const std::string& text, const std::string& indent, std::size_t width) {
    std::string out;
    std::string line;
    std::size_t columns = 0;
    std::istringstream words(text);
    for (std::string w; words >> w;) {
        std::size_t n = 0;
        for (unsigned char c : w) n += (c & 0xC0) != 0x80;
        if (!line.empty() && columns + 1 + n > width) {
            out += indent + line + "\n";
            line.clear();
            columns = 0;
        }
        if (!line.empty()) {
            line += ' ';
            ++columns;
        }
        line += w;
        columns += n;
    }
    if (!line.empty()) out += indent + line + "\n";
    return out;
}

}  // namespace

namespace report_detail {

// Left-aligned table with one space-padded column per cell; the first row is the header.
std::string table(const std::vector<std::vector<std::string>>& rows, const std::string& indent,
                  const std::vector<bool>& right_aligned) {
    std::vector<std::size_t> width;
    auto display_width = [](const std::string& s) {
        std::size_t n = 0;
        for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // count UTF-8 code points, not bytes
        return n;
    };
    for (const auto& row : rows) {
        if (width.size() < row.size()) width.resize(row.size(), 0);
        for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], display_width(row[i]));
    }
    std::string out;
    for (const auto& row : rows) {
        std::string line = indent;
        for (std::size_t i = 0; i < row.size(); ++i) {
            const std::string pad(width[i] - display_width(row[i]), ' ');
            const bool right = i < right_aligned.size() && right_aligned[i];
            line += right ? pad + row[i] : row[i] + (i + 1 < row.size() ? pad : "");
            if (i + 1 < row.size()) line += "  ";
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

}  // namespace report_detail

namespace {

}  // namespace

namespace report_detail {

// What an ICMP error means, in words.
std::string icmp_error_name(std::int64_t family_proto, std::int64_t type, std::int64_t code) {
    if (family_proto == 58) {
        switch (type) {
            case 1: return code == 4 ? "port unreachable" : "destination unreachable";
            case 2: return "packet too big";
            case 3: return "time exceeded";
            case 4: return "parameter problem";
            default: return "ICMPv6 type " + std::to_string(type);
        }
    }
    switch (type) {
        case 3:
            switch (code) {
                case 0: return "network unreachable";
                case 1: return "host unreachable";
                case 3: return "port unreachable";
                case 4: return "fragmentation needed";
                case 13: return "administratively prohibited";
                default: return "destination unreachable, code " + std::to_string(code);
            }
        case 4: return "source quench";
        case 5: return "redirect";
        case 11: return "time exceeded";
        case 12: return "parameter problem";
        default: return "ICMP type " + std::to_string(type) + " code " + std::to_string(code);
    }
}

}  // namespace report_detail

namespace {

// The source side of a tuple as the narrative says it: "192.168.43.116:1252", or "… id 48338" for ICMP.
std::string source_text(const std::string& proto, const Json& t) {
    if (t.contains("id")) return t["src"].get<std::string>() + " id " + std::to_string(t["id"].get<std::int64_t>());
    if (proto == "tcp" || proto == "udp" || proto == "sctp")
        return t["src"].get<std::string>() + ":" + std::to_string(t["sport"].get<std::int64_t>());
    return t["src"].get<std::string>();
}
std::string destination_text(const std::string& proto, const Json& t) {
    if (proto == "tcp" || proto == "udp" || proto == "sctp")
        return t["dst"].get<std::string>() + ":" + std::to_string(t["dport"].get<std::int64_t>());
    return t["dst"].get<std::string>();
}

// The bridge that switched the flow's forward packets from port `from` to port `to` ("" when none did).
std::string observer_between(const Json& flow, const std::string& from, const std::string& to) {
    if (!flow.contains("observers")) return "";
    for (const Json& o : flow["observers"])
        if (o["direction"] == "forward" && o["between"] == Json::array({from, to}))
            return o["point"].get<std::string>();
    return "";
}

// One loss line: what ended the packets, and whether the capture itself could have missed them.
std::string loss_text(const Json& l) {
    const std::string cause = l.value("cause", "dropped");
    const std::string n = std::to_string(l["count"].get<std::int64_t>());
    const std::string where = l["after"].get<std::string>();
    const std::string expected = l["expected"].get<std::string>();
    const std::string dir = l["direction"].get<std::string>();
    if (cause == "expired")
        return "EXPIRED: " + n + " " + dir + " packet(s) after " + where + " (TTL ran out: answered by time exceeded)";
    if (cause == "rejected")
        return "REJECTED: " + n + " " + dir + " packet(s) after " + where + ", answered by an ICMP error";
    std::string text = "LOST: " + n + " " + dir + " packet(s) after " + where + ", never seen at " + expected;
    const std::int64_t drops = l.value("kernel_drops_at_expected", std::int64_t{0});
    text += drops == 0 ? " (no capture drops at " + expected + ": the network dropped them)"
                       : " (" + std::to_string(drops) + " capture drops at " + expected + " might explain it)";
    if (const std::int64_t outside = l.value("outside_window", std::int64_t{0}); outside > 0)
        text += "; " + std::to_string(outside) + " of them while " + expected +
                "'s file shows no packet yet (or any more): it is taken to have captured along with the other files";
    return text;
}

// Packets of the flow lost in `direction` (not counting those an ICMP error answered).
std::int64_t lost_count(const Json& flow, const std::string& direction) {
    std::int64_t n = 0;
    for (const Json& l : flow["lost"])
        if (l["direction"] == direction && l.value("cause", "dropped") == "dropped") n += l["count"].get<std::int64_t>();
    return n;
}

// " 4 segments were retransmitted (3 forward, 1 reply)." or "".
std::string repeats_text(const Json& flow, const std::string& verb) {
    if (!flow.contains("repeated_journeys")) return "";
    const std::int64_t fwd = flow["repeated_journeys"]["forward"].get<std::int64_t>();
    const std::int64_t rep = flow["repeated_journeys"]["reply"].get<std::int64_t>();
    if (fwd + rep == 0) return "";
    const std::string what = verb == "retransmitted" ? (fwd + rep == 1 ? " segment was " : " segments were ")
                                                     : (fwd + rep == 1 ? " packet was " : " packets were ");
    return " " + std::to_string(fwd + rep) + what + verb + " (" + std::to_string(fwd) + " forward, " +
           std::to_string(rep) + " reply), each its own journey tied to the one it repeats.";
}

// " 6 were answered by ICMP errors instead (time exceeded from 172.17.0.1 and 192.168.43.1)." or "".
std::string answered_by_errors(const Json& flow) {
    const Json& answers = flow.contains("icmp_errors") ? flow["icmp_errors"] : Json::array();
    if (answers.empty()) return "";
    std::vector<std::string> kinds;
    for (const Json& e : answers) {
        const std::string k = icmp_error_name(e["icmp"] == "icmpv6" ? 58 : 1, e["type"].get<std::int64_t>(),
                                              e["code"].get<std::int64_t>()) +
                              " from " + e["reporter"].get<std::string>();
        if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
    }
    std::string text = " " + std::to_string(answers.size()) + (answers.size() == 1 ? " was" : " were") +
                       " answered by " + (answers.size() == 1 ? "an ICMP error" : "ICMP errors") + " instead (";
    for (std::size_t i = 0; i < kinds.size(); ++i) text += (i == 0 ? "" : i + 1 == kinds.size() ? " and " : ", ") + kinds[i];
    return text + ").";
}

// "  observed by docker0 (bridge-local: switched between vethA and vethB, not a hop): 3 forward, 3 reply"
std::string observers_text(const Json& flow) {
    if (!flow.contains("observers")) return "";
    std::map<std::string, std::pair<std::string, std::string>> seen;  // point -> (switched between, counts)
    for (const Json& o : flow["observers"]) {
        auto& [between, counts] = seen[o["point"].get<std::string>()];
        if (between.empty() && o["between"].size() == 2)
            between = o["between"][0].get<std::string>() + " and " + o["between"][1].get<std::string>();
        counts += (counts.empty() ? "" : ", ") + std::to_string(o["count"].get<std::int64_t>()) + " " +
                  o["direction"].get<std::string>();
    }
    std::string out;
    for (const auto& [point, text] : seen) {
        const std::string between = text.first.empty() ? "" : " between " + text.first;
        out += "  observed by " + point + " (bridge-local: switched" + between + ", not a hop): " + text.second + "\n";
    }
    return out;
}

std::string size_text(std::int64_t bytes) {
    if (bytes < 10240) return std::to_string(bytes) + " bytes";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
    return buf;
}

// "295 super-packets (up to 35.4 KiB) were cut into 2973 segments (up to 1500 bytes) between docker0 and uplink
// (GSO/TSO)." per direction and pair of points.
std::string segmentation_text(const Json& flow) {
    std::string text;
    if (!flow.contains("segmentation")) return text;
    for (const Json& g : flow["segmentation"]) {
        const std::int64_t supers = g["super_packets"].get<std::int64_t>();
        const std::int64_t segments = g["segments"].get<std::int64_t>();
        text += std::string(" ") + (g["direction"] == "reply" ? "On the way back, " : "") + std::to_string(supers) +
                (supers == 1 ? " super-packet" : " super-packets") + " (up to " +
                size_text(g["max_super_packet_bytes"].get<std::int64_t>()) + ") " + (supers == 1 ? "was" : "were") +
                " cut into " + std::to_string(segments) + (segments == 1 ? " segment" : " segments") + " (up to " +
                size_text(g["max_segment_bytes"].get<std::int64_t>()) + ") between " +
                g["between"][0].get<std::string>() + " and " + g["between"][1].get<std::string>() + " (GSO/TSO).";
    }
    return text;
}

}  // namespace

std::string narrate(const Json& flow, const Json& points) {
    const Json& path = flow["path"];
    if (path.empty()) return "";
    std::map<std::string, std::pair<std::string, std::string>> point;  // name -> (role, ifname)
    for (const Json& p : points) point[p["name"].get<std::string>()] = {p["role"].get<std::string>(), p["ifname"].get<std::string>()};
    std::map<std::pair<std::string, std::string>, std::pair<std::int64_t, std::int64_t>> hop;  // forward p50, count
    for (const Json& h : flow["hops"])
        if (h["direction"] == "forward")
            hop[{h["from"].get<std::string>(), h["to"].get<std::string>()}] = {h["p50_ns"].get<std::int64_t>(),
                                                                               h["count"].get<std::int64_t>()};
    const std::string proto = flow["proto"].get<std::string>();
    std::string text = tuple_text(proto, flow["original"]);
    const std::string first = path[0].get<std::string>();
    const auto& [first_role, first_if] = point[first];
    if (first_role == "container") text += " left the container on " + (first_if.empty() ? first : first_if);
    else if (first_role == "uplink") text += " arrived on the uplink " + first;
    else text += " was first seen at " + first;
    std::int64_t samples = 0;
    for (std::size_t i = 1; i < path.size(); ++i) {
        const std::string from = path[i - 1].get<std::string>();
        const std::string to = path[i].get<std::string>();
        const auto it = hop.find({from, to});
        const std::string t = it == hop.end() ? "?" : format_duration(it->second.first);
        if (it != hop.end()) samples = std::max(samples, it->second.second);
        bool snat = false;
        bool dnat = false;
        for (const Json& r : flow["rewrites"]) {
            if (r["direction"] != "forward" || r["between"][0] != from || r["between"][1] != to) continue;
            const std::string field = r["field"].get<std::string>();
            snat = snat || field == "src" || field == "sport" || field == "id";
            dnat = dnat || field == "dst" || field == "dport";
        }
        const std::string role = point[to].first;
        const std::string observer = observer_between(flow, from, to);
        text += i + 1 == path.size() && path.size() > 2 ? ", and " : ", ";
        if (snat) text += "was masqueraded to " + source_text(proto, flow["translated"]) + " on " + to + " " + t + " later";
        else if (dnat) text += "was redirected to " + destination_text(proto, flow["translated"]) + " on " + to + " " + t + " later";
        else if (!observer.empty()) text += "crossed " + observer + " (bridge-local, no NAT) to " + to + " in " + t;
        else if (role == "veth") text += "crossed " + to + " in " + t;
        else if (role == "bridge") text += "the bridge " + to + " in " + t;
        else text += "reached " + to + " " + t + " later";
    }
    text += ".";
    const std::int64_t forward = flow["forward_journeys"].get<std::int64_t>();
    const std::int64_t replies = flow["reply_journeys"].get<std::int64_t>();
    if (replies > 0) {
        bool reverse_rewrite = false;
        for (const Json& r : flow["rewrites"]) reverse_rewrite = reverse_rewrite || r["direction"] == "reply";
        text += reverse_rewrite ? " The reply took the reverse path with the reverse rewrite."
                                : " The reply took the reverse path.";
        const std::int64_t lost = lost_count(flow, "forward") + lost_count(flow, "reply");
        if (proto == "tcp") {  // segments and acknowledgements are not one-to-one: no "round trips"
            text += " " + std::to_string(forward) + " packets went forward and " + std::to_string(replies) +
                    " came back; " + (lost == 0 ? std::string("none was lost.") : std::to_string(lost) + " were lost.");
            text += repeats_text(flow, "retransmitted");
        } else {
            const std::int64_t round_trips =
                std::min(forward - lost_count(flow, "forward"), replies - lost_count(flow, "reply"));
            text += " " + std::to_string(std::max<std::int64_t>(round_trips, 0)) + " of " + std::to_string(forward) +
                    " packets made the round trip." + answered_by_errors(flow) + repeats_text(flow, "duplicated");
        }
    } else {
        const Json* loss = nullptr;
        for (const Json& l : flow["lost"])
            if (l["direction"] == "forward" && (loss == nullptr || l["count"] > (*loss)["count"])) loss = &l;
        const Json& answers = flow.contains("icmp_errors") ? flow["icmp_errors"] : Json::array();
        if (!answers.empty()) {
            const Json& e = answers[0];
            text += " It was answered by " + std::string(answers.size() == 1 ? "an ICMP error" : "ICMP errors") + " (" +
                    icmp_error_name(e["icmp"] == "icmpv6" ? 58 : 1, e["type"].get<std::int64_t>(),
                                    e["code"].get<std::int64_t>()) +
                    ") from " + e["reporter"].get<std::string>() + ".";
        } else if (loss != nullptr) {
            text += " " + std::to_string(lost_count(flow, "forward")) + " of " + std::to_string(forward) +
                    " packets were lost after " + (*loss)["after"].get<std::string>() + ", never seen at " +
                    (*loss)["expected"].get<std::string>() + "; no reply was seen.";
        } else {
            text += " " + std::to_string(forward) + " of " + std::to_string(forward) + " packets reached " +
                    path.back().get<std::string>() + "; no reply was seen.";
        }
    }
    text += segmentation_text(flow);
    if (samples > 1) text += " (Times are medians over " + std::to_string(samples) + " packets.)";
    return text;
}

namespace {

// Captured names go to a terminal: control characters in them (ESC could retitle or reprogram it, a newline would
// split a table row) are shown escaped, \x1b, \n. Every string of the model is data; the layout is the renderer's.
std::string printable(const std::string& s) {
    std::string out;
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u != 0x7f) {
            out += c;
            continue;
        }
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", u);
        out += u == '\n' ? "\\n" : u == '\t' ? "\\t" : buf;
    }
    return out;
}

void make_printable(Json& j) {
    if (j.is_string()) {
        j = printable(j.get<std::string>());
    } else if (j.is_structured()) {
        for (auto& item : j) make_printable(item);
    }
}

}  // namespace

std::string render_text(const Json& given) {
    Json escaped = given;
    make_printable(escaped);
    const Json& report = escaped;
    std::ostringstream out;
    const Json& points = report["points"];
    const Json& flows = report["flows"];
    std::int64_t packets = 0;
    for (const Json& p : points) packets += p["packets"].get<std::int64_t>();
    out << "hoptrace: " << points.size() << " points, " << packets << " packets, " << flows.size() << " flows\n\n";

    out << "Points, in path order\n";
    std::vector<std::vector<std::string>> rows{{"#", "point", "role", "netns", "interface", "packets", "drops"}};
    int n = 0;
    for (const Json& p : points) {
        rows.push_back({std::to_string(++n), p["name"].get<std::string>(), p["role"].get<std::string>(),
                        p["netns"].get<std::string>().empty() ? "-" : p["netns"].get<std::string>(),
                        p["ifname"].get<std::string>().empty() ? "-" : p["ifname"].get<std::string>(),
                        std::to_string(p["packets"].get<std::int64_t>()),
                        std::to_string(p["kernel_drops"].get<std::int64_t>())});
    }
    out << table(rows, "  ", {true, false, false, false, false, true, true});

    for (const Json& f : flows) {
        const std::string proto = f["proto"].get<std::string>();
        out << "\nFlow " << f["id"].get<std::int64_t>() << "  " << proto << "  "
            << tuple_text(proto, f["original"]);
        if (f["translated"] != f["original"]) out << "  ⇒  " << tuple_text(proto, f["translated"]);
        out << "\n";
        if (const std::string story = narrate(f, report["points"]); !story.empty()) out << wrap(story, "  ", 100);
        if (!f["path"].empty()) {
            out << "  path: ";
            for (std::size_t i = 0; i < f["path"].size(); ++i)
                out << (i ? " → " : "") << f["path"][i].get<std::string>();
            out << "\n";
        }
        out << observers_text(f);
        out << "  " << f["forward_journeys"].get<std::int64_t>() << " forward and "
            << f["reply_journeys"].get<std::int64_t>() << " reply packets, " << f["packets"].get<std::int64_t>()
            << " sightings\n";
        if (f["rewrites"].empty()) {
            out << "  no rewrite\n";
        } else {
            out << "  rewrites:\n";
            std::vector<std::vector<std::string>> rw;
            for (const Json& r : f["rewrites"]) {
                rw.push_back({r["direction"].get<std::string>(), r["field"].get<std::string>(),
                              value_text(r["from"]) + " → " + value_text(r["to"]),
                              "between " + r["between"][0].get<std::string>() + " and " +
                                  r["between"][1].get<std::string>()});
            }
            out << table(rw, "    ", {});
        }
        if (!f["hops"].empty()) {
            out << "  hop latency:\n";
            std::vector<std::vector<std::string>> hr{
                {"direction", "hop", "count", "min", "p50", "p90", "p99", "max"}};
            for (const Json& h : f["hops"]) {
                hr.push_back({h["direction"].get<std::string>(),
                              h["from"].get<std::string>() + " → " + h["to"].get<std::string>(),
                              std::to_string(h["count"].get<std::int64_t>()),
                              format_duration(h["min_ns"].get<std::int64_t>()),
                              format_duration(h["p50_ns"].get<std::int64_t>()),
                              format_duration(h["p90_ns"].get<std::int64_t>()),
                              format_duration(h["p99_ns"].get<std::int64_t>()),
                              format_duration(h["max_ns"].get<std::int64_t>())});
            }
            out << table(hr, "    ", {false, false, true, true, true, true, true, true});
        }
        if (f.contains("segmentation") && !f["segmentation"].empty()) {
            out << "  segmentation (GSO/TSO):\n";
            std::vector<std::vector<std::string>> sr{
                {"direction", "between", "super-packets", "segments", "largest super-packet", "largest segment"}};
            for (const Json& g : f["segmentation"]) {
                sr.push_back({g["direction"].get<std::string>(),
                              g["between"][0].get<std::string>() + " → " + g["between"][1].get<std::string>(),
                              std::to_string(g["super_packets"].get<std::int64_t>()),
                              std::to_string(g["segments"].get<std::int64_t>()),
                              std::to_string(g["max_super_packet_bytes"].get<std::int64_t>()) + " B",
                              std::to_string(g["max_segment_bytes"].get<std::int64_t>()) + " B"});
            }
            out << table(sr, "    ", {false, false, true, true, true, true});
        }
        if (f.contains("conntrack")) {
            const Json& c = f["conntrack"];
            const std::string state = c["state"].get<std::string>();
            if (state == "agrees") out << "  conntrack agrees: the kernel translated it the same way\n";
            else if (state == "differs")
                out << "  conntrack DIFFERS: the kernel's entry translates it to " << tuple_text(proto, c["translated"])
                    << "\n";
            else if (state == "not-reached") out << "  conntrack: never reached the NAT point (no uplink saw it)\n";
            else out << "  conntrack: no entry for this flow\n";
        }
        for (const Json& l : f["lost"]) out << "  " << loss_text(l) << "\n";
        out << verdict_lines(f);
    }
    if (!report["icmp_errors"].empty()) {
        out << "\nICMP errors\n";
        for (const Json& e : report["icmp_errors"]) {
            const Json& p = e["probe"];
            out << "  " << icmp_error_name(e["icmp"] == "icmpv6" ? 58 : 1, e["type"].get<std::int64_t>(),
                                           e["code"].get<std::int64_t>())
                << " from " << e["reporter"].get<std::string>() << " about " << p["proto"].get<std::string>() << " "
                << p["src"].get<std::string>() << " → " << p["dst"].get<std::string>();
            if (p["proto"] == "udp" || p["proto"] == "tcp") out << ":" << p["dport"].get<std::int64_t>();
            if (p.contains("sent_ttl")) out << " (sent with ttl " << p["sent_ttl"].get<std::int64_t>() << ")";
            if (!e["path"].empty()) {
                out << ", back via ";
                for (std::size_t i = 0; i < e["path"].size(); ++i)
                    out << (i ? " → " : "") << e["path"][i].get<std::string>();
            }
            if (e.contains("lost"))
                for (const Json& l : e["lost"])
                    out << "; LOST after " << l["after"].get<std::string>() << ", never seen at "
                        << l["expected"].get<std::string>() << " (the host dropped it on its way back)";
            out << "\n";
        }
    }
    if (report.value("ambiguous_journeys", 0) > 0)
        out << "\n" << report["ambiguous_journeys"].get<std::int64_t>()
            << " journeys are AMBIGUOUS: a sighting could have continued another flow's journey just as well "
               "(journeys.ambiguous = 1; see docs/correlation.md)\n";
    if (report.contains("traceroutes")) out << render_traceroutes(report["traceroutes"]);
    return out.str();
}

}  // namespace hoptrace::report
