// The report side's only SQL: the store read into the typed model (model.hpp). Flag bits, relation, direction and
// role names are bound as parameters from their C++ constants (tracer::packet_flag, correlate::Relation,
// correlate::FlowDirection, tracer::Role), never spelled in the SQL. Per-flow children are loaded in one pass each
// (no per-flow queries: flows can be many); the HTML samples are the only per-flow reads, bounded by HtmlOptions.

#include "report/model.hpp"

#include "report/format.hpp"
#include "report/traceroute.hpp"
#include "report/verdicts.hpp"
#include "store/containers.hpp"
#include "tracer/packet.hpp"

#include <algorithm>
#include <array>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace hoptrace::report {

using correlate::Relation;

namespace {

constexpr auto k_icmp_error_bit = static_cast<std::int64_t>(packet_flag::k_icmp_error);
constexpr auto k_dont_fragment_bit = static_cast<std::int64_t>(packet_flag::k_dont_fragment);
constexpr auto k_snapped_bit = static_cast<std::int64_t>(packet_flag::k_snapped);

const char* name(Relation r) { return correlate::to_string(r); }
const char* name(FlowDirection d) { return correlate::to_string(d); }
const char* name(Role r) { return hoptrace::to_string(r); }

FlowDirection direction_of(const std::string& text) {
    return text == name(FlowDirection::reply) ? FlowDirection::reply : FlowDirection::forward;
}

LossCause cause_of(const std::string& text) {
    for (const LossCause c : {LossCause::expired, LossCause::rejected})
        if (text == correlate::to_string(c)) return c;
    return LossCause::dropped;
}

// points.role as the enum; a text that is no role (the CLI never stores one) reads as other.
Role role_of(const std::string& text) {
    for (const Role r : {Role::container, Role::veth, Role::bridge, Role::uplink})
        if (text == name(r)) return r;
    return Role::other;
}

// A column that may be NULL.
std::optional<std::int64_t> optional_int(const store::Statement& q, int col) {
    return q.column_is_null(col) ? std::nullopt : std::optional<std::int64_t>(q.column_int(col));
}

// Point ids to names; an id the store does not know reads "point#ID".
class Names {
public:
    explicit Names(const std::vector<Point>& points) {
        for (const Point& p : points) m_names.emplace(p.id, p.name);
    }
    std::string operator()(std::int64_t id) const {
        const auto it = m_names.find(id);
        return it == m_names.end() ? "point#" + std::to_string(id) : it->second;
    }

private:
    std::map<std::int64_t, std::string> m_names;
};

HopStats hop_of(const store::Statement& q, int col, const Names& name_of) {
    return {name_of(q.column_int(col)), name_of(q.column_int(col + 1)), direction_of(q.column_text(col + 2)),
            q.column_int(col + 3),      q.column_int(col + 4),          q.column_int(col + 5),
            q.column_int(col + 6),      q.column_int(col + 7),          q.column_int(col + 8)};
}

// A flow's hops along its own path: forward ones from its first point on, replies from its last. The points'
// global path order cannot say that for a flow between two containers, whose path runs inward after the bridge.
// Hops from a point off the path keep their place after the others.
void along_path(std::vector<HopStats>& hops, const std::vector<std::string>& path) {
    std::map<std::string, std::size_t> position;
    for (std::size_t i = 0; i < path.size(); ++i) position.emplace(path[i], i);
    auto key = [&](const HopStats& h) {
        const bool reply = h.direction == FlowDirection::reply;
        const auto it = position.find(h.from);
        const std::size_t at = it == position.end() ? path.size() : reply ? path.size() - 1 - it->second : it->second;
        return std::pair{reply, at};
    };
    std::stable_sort(hops.begin(), hops.end(), [&](const HopStats& a, const HopStats& b) { return key(a) < key(b); });
}

// What the flows table does not hold, per flow, each in one pass.
struct FlowChildren {
    std::map<std::int64_t, std::vector<Rewrite>> rewrites;
    std::map<std::int64_t, std::vector<HopStats>> hops;
    std::vector<HopStats> all_hops;
    std::map<std::int64_t, std::vector<Loss>> lost;
    std::map<std::int64_t, std::vector<Segmentation>> segmentation;
    std::map<std::int64_t, std::vector<std::string>> paths;
    std::map<std::int64_t, std::vector<Observer>> observers;
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> per_direction;  // forward, reply
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> repeated;
};

void load_rewrites_hops_losses(const store::Database& db, const Names& name_of, FlowChildren& c) {
    auto rq = db.prepare(
        "SELECT flow_id, field, from_value, to_value, from_point, to_point, direction, packets FROM nat_rewrites "
        "ORDER BY flow_id, direction, from_point, to_point, field, id");
    while (rq.step()) {
        Rewrite r{rq.column_text(1),         rq.column_text(2),
                  rq.column_text(3),         name_of(rq.column_int(4)),
                  name_of(rq.column_int(5)), direction_of(rq.column_text(6)),
                  rq.column_int(7),          std::nullopt};
        if (r.numeric()) {  // ports and ids are numbers
            r.from = std::to_string(std::stoll(r.from));
            r.to = std::to_string(std::stoll(r.to));
        }
        c.rewrites[rq.column_int(0)].push_back(std::move(r));
    }
    // Hops in path order of their first point within each direction: forward outward, replies inward.
    auto hq = db.prepare(
        "SELECT h.flow_id, h.from_point, h.to_point, h.direction, h.count, h.min_ns, h.p50_ns, h.p90_ns, "
        "h.p99_ns, h.max_ns FROM hops h JOIN points f ON f.id = h.from_point "
        "ORDER BY h.flow_id IS NULL, h.flow_id, h.direction, "
        "CASE WHEN h.direction = ?1 THEN -f.path_order ELSE f.path_order END, h.to_point");
    hq.bind(1, name(FlowDirection::reply));
    while (hq.step()) {
        if (hq.column_is_null(0)) c.all_hops.push_back(hop_of(hq, 1, name_of));
        else c.hops[hq.column_int(0)].push_back(hop_of(hq, 1, name_of));
    }
    auto lq = db.prepare(
        "SELECT l.flow_id, l.after_point, l.expected_point, l.direction, l.count, l.cause, p.kernel_drops, "
        "l.outside_window, l.id "
        "FROM losses l LEFT JOIN points p ON p.id = l.expected_point WHERE l.error_journey IS NULL "
        "ORDER BY l.flow_id, l.id");
    while (lq.step()) {
        Loss l;
        l.after = name_of(lq.column_int(1));
        l.expected = name_of(lq.column_int(2));
        l.direction = direction_of(lq.column_text(3));
        l.count = lq.column_int(4);
        l.cause = cause_of(lq.column_text(5));
        l.kernel_drops_at_expected = lq.column_int(6);
        l.outside_window = std::max<std::int64_t>(lq.column_int(7), 0);
        l.id = lq.column_int(8);
        c.lost[lq.column_int(0)].push_back(std::move(l));
    }
}

// capture --trace-rules: what the traced packets met (rule_traces, tied to journeys by correlate). A loss gets the
// drop verdicts of its journeys (a reassembled datagram's walk is its first fragment's loss); a forward rewrite,
// the nat rule that made it (MASQUERADE/SNAT for the source, DNAT/REDIRECT for the destination).
FirewallRule firewall_rule(const store::Statement& q, int first) {
    FirewallRule r;
    r.netns = q.column_text(first);
    r.family = q.column_text(first + 1);
    r.table = q.column_text(first + 2);
    r.chain = q.column_text(first + 3);
    r.policy = q.column_text(first + 4) == "policy";
    r.rule = q.column_text(first + 5);
    r.verdict = q.column_text(first + 6);
    r.packets = q.column_int(first + 7);
    return r;
}

bool changes_source(const std::string& rule) {
    return rule.find("MASQUERADE") != std::string::npos || rule.find("SNAT") != std::string::npos ||
           rule.find("masq") != std::string::npos || rule.find("snat") != std::string::npos;
}
bool changes_destination(const std::string& rule) {
    return rule.find("DNAT") != std::string::npos || rule.find("REDIRECT") != std::string::npos ||
           rule.find("dnat") != std::string::npos || rule.find("redir") != std::string::npos;
}

bool drops(const std::string& rule) {
    return rule.find("-j DROP") != std::string::npos || rule.find("-j REJECT") != std::string::npos ||
           (rule.starts_with("nft: ") &&
            (rule.find(" drop") != std::string::npos || rule.find("reject") != std::string::npos));
}

// Without --trace-rules: the filter rules that drop and whose counters moved, for every loss on the host's side.
void load_probable_rules(const store::Database& db, ReportModel& m) {
    if (!db.meta("rule_counters")) return;
    std::vector<FirewallRule> moved;
    auto q = db.prepare("SELECT netns, family, tbl, chain, rule, packets FROM rule_counters ORDER BY id");
    while (q.step()) {
        FirewallRule r{q.column_text(0), q.column_text(1), q.column_text(2), q.column_text(3), q.column_text(4), false,
                       "drop",           q.column_int(5)};
        if (drops(r.rule)) moved.push_back(std::move(r));
    }
    if (moved.empty()) return;
    std::set<std::string> host_side;
    for (const Point& p : m.points)
        if (p.role == Role::veth || p.role == Role::bridge || p.role == Role::uplink) host_side.insert(p.name);
    for (Flow& f : m.flows)
        for (Loss& l : f.lost) {
            if (!l.rules.empty() || l.cause != LossCause::dropped) continue;
            if (!host_side.contains(l.after) && !host_side.contains(l.expected)) continue;
            // A rule that dropped them counted at least as many (split between rules, none is named: no guess).
            for (const FirewallRule& r : moved)
                if (r.packets >= l.count) l.probable_rules.push_back(r);
            std::stable_sort(l.probable_rules.begin(), l.probable_rules.end(),
                             [&](const FirewallRule& a, const FirewallRule& b) {
                                 return std::llabs(a.packets - l.count) < std::llabs(b.packets - l.count);
                             });
        }
}

void load_firewall_verdicts(const store::Database& db, ReportModel& m) {
    const auto traced = db.meta("trace_rules");
    if (!traced) {
        load_probable_rules(db, m);
        return;
    }
    RuleTraceSummary summary;
    auto sq = db.prepare(
        "SELECT count(*), count(DISTINCT walk), count(DISTINCT CASE WHEN journey_id IS NOT NULL THEN walk END), "
        "count(DISTINCT journey_id) FROM rule_traces");
    if (sq.step()) summary = {sq.column_int(0), sq.column_int(1), sq.column_int(2), sq.column_int(3), 0};
    if (auto overflows = db.meta("rule_trace_overflows")) summary.overflows = std::stoll(*overflows);
    m.rule_traces = summary;
    const std::string columns =
        "t.netns, t.family, t.tbl, t.chain, t.type, t.rule, t.verdict, count(DISTINCT t.walk) AS n ";
    auto dq = db.prepare(
        "WITH lost AS (SELECT id, loss_id FROM journeys WHERE loss_id IS NOT NULL UNION ALL "
        "  SELECT r.id, f.loss_id FROM journeys r JOIN journeys f ON f.id = r.related_id "
        "  WHERE r.relation = ?1 AND f.loss_id IS NOT NULL) "
        "SELECT lost.loss_id, " +
        columns +
        "FROM lost JOIN rule_traces t ON t.journey_id = lost.id "
        "WHERE t.verdict IN ('drop', 'queue', 'stolen') AND t.type IN ('rule', 'policy') "
        "GROUP BY lost.loss_id, t.netns, t.family, t.tbl, t.chain, t.type, t.rule, t.verdict "
        "ORDER BY lost.loss_id, n DESC, t.tbl, t.chain, t.rule");
    dq.bind(1, name(Relation::reassembly_of));
    std::map<std::int64_t, std::vector<FirewallRule>> drops;
    while (dq.step()) drops[dq.column_int(0)].push_back(firewall_rule(dq, 1));
    auto nq = db.prepare("SELECT j.flow_id, " + columns +
                         "FROM rule_traces t JOIN journeys j ON j.id = t.journey_id "
                         "WHERE t.tbl = 'nat' AND t.type = 'rule' AND t.verdict = 'accept' "
                         "GROUP BY j.flow_id, t.netns, t.family, t.tbl, t.chain, t.type, t.rule, t.verdict "
                         "ORDER BY j.flow_id, n DESC");
    std::map<std::int64_t, std::vector<FirewallRule>> nat;
    while (nq.step()) nat[nq.column_int(0)].push_back(firewall_rule(nq, 1));
    for (Flow& f : m.flows) {
        for (Loss& l : f.lost)
            if (auto it = drops.find(l.id); it != drops.end()) l.rules = std::move(it->second);
        const auto it = nat.find(f.id);
        if (it == nat.end()) continue;
        for (Rewrite& r : f.rewrites) {
            if (r.direction != FlowDirection::forward) continue;
            const bool source = r.field == "src" || r.field == "sport" || r.field == "id";
            for (const FirewallRule& rule : it->second)
                if (source ? changes_source(rule.rule) : changes_destination(rule.rule)) {
                    r.rule = rule;
                    break;
                }
        }
    }
    load_probable_rules(db, m);  // for the losses no traced verdict explains
}

void load_paths_and_observers(const store::Database& db, const Names& name_of, FlowChildren& c) {
    // GSO/TSO: super-packets seen whole up to one point and as segments from the next one, per flow, direction and
    // pair of points. Sizes are IP lengths.
    auto sq = db.prepare(
        "SELECT s.flow_id, w.last_point, s.first_point, s.direction, count(DISTINCT s.related_id), count(*), "
        "max(pw.ip_len), max(ps.ip_len) FROM journeys s JOIN journeys w ON w.id = s.related_id "
        "JOIN packets pw ON pw.journey_id = w.id AND pw.hop = 0 JOIN packets ps ON ps.journey_id = s.id AND ps.hop = 0 "
        "WHERE s.relation = ?1 GROUP BY s.flow_id, s.direction, w.last_point, s.first_point "
        "ORDER BY s.flow_id, s.direction, w.last_point, s.first_point");
    sq.bind(1, name(Relation::segment_of));
    while (sq.step()) {
        c.segmentation[sq.column_int(0)].push_back({name_of(sq.column_int(1)), name_of(sq.column_int(2)),
                                                    direction_of(sq.column_text(3)), sq.column_int(4), sq.column_int(5),
                                                    sq.column_int(6), sq.column_int(7)});
    }
    // Each flow's path: the points of its longest forward journey (else its longest journey).
    auto pq = db.prepare(
        "WITH best AS (SELECT flow_id, id, row_number() OVER (PARTITION BY flow_id ORDER BY "
        "direction = ?1 DESC, sightings DESC, id) AS rn FROM journeys) "
        "SELECT b.flow_id, p.point_id FROM best b JOIN packets p ON p.journey_id = b.id "
        "WHERE b.rn = 1 AND p.hop IS NOT NULL ORDER BY b.flow_id, p.hop");
    pq.bind(1, name(FlowDirection::forward));
    while (pq.step()) c.paths[pq.column_int(0)].push_back(name_of(pq.column_int(1)));
    // Points that saw a flow's packets without being on its path (hop NULL): a bridge that switched them from one
    // port to another; `between` are the veth points of one such journey's path in its order.
    auto oq = db.prepare(
        "WITH observed AS (SELECT j.flow_id, j.direction, o.point_id, count(*) AS n, min(o.journey_id) AS sample "
        "FROM packets o JOIN journeys j ON j.id = o.journey_id WHERE o.journey_id IS NOT NULL AND o.hop IS NULL "
        "GROUP BY j.flow_id, j.direction, o.point_id) "
        "SELECT b.flow_id, b.direction, b.point_id, b.n, p.point_id FROM observed b "
        "LEFT JOIN packets p ON p.journey_id = b.sample AND p.hop IS NOT NULL "
        "AND p.point_id IN (SELECT id FROM points WHERE role = ?1) "
        "ORDER BY b.flow_id, b.direction, b.point_id, p.hop");
    oq.bind(1, name(Role::veth));
    using Key = std::tuple<std::int64_t, std::string, std::int64_t>;  // flow, direction, observer
    Key key{-1, "", -1};
    Observer* current = nullptr;
    while (oq.step()) {
        const Key row{oq.column_int(0), oq.column_text(1), oq.column_int(2)};
        if (row != key) {
            key = row;
            auto& list = c.observers[oq.column_int(0)];
            list.push_back({name_of(oq.column_int(2)), direction_of(oq.column_text(1)), oq.column_int(3), {}});
            current = &list.back();
        }
        if (!oq.column_is_null(4) && current->between.size() < 2) current->between.push_back(name_of(oq.column_int(4)));
    }
    // The flow's own packets per direction: ICMP errors that answered it are listed apart, and the segments of a
    // GSO/TSO super-packet count as that one packet (`segmentation` counts them), likewise fragments and copies.
    auto dq = db.prepare(
        "SELECT flow_id, sum(direction = ?1), sum(direction = ?2) FROM journeys WHERE id NOT IN "
        "(SELECT journey_id FROM packets WHERE (flags & ?3) != 0 AND journey_id IS NOT NULL) "
        "AND (relation IS NULL OR relation NOT IN (?4, ?5, ?6, ?7)) GROUP BY flow_id");
    dq.bind(1, name(FlowDirection::forward)).bind(2, name(FlowDirection::reply)).bind(3, k_icmp_error_bit);
    dq.bind(4, name(Relation::segment_of)).bind(5, name(Relation::fragment_of));
    dq.bind(6, name(Relation::reassembly_of)).bind(7, name(Relation::copy_of));
    while (dq.step()) c.per_direction[dq.column_int(0)] = {dq.column_int(1), dq.column_int(2)};
    // Journeys that repeat an earlier one (TCP retransmissions, duplicated packets), per direction.
    auto rq = db.prepare(
        "SELECT flow_id, sum(direction = ?1), sum(direction = ?2) FROM journeys WHERE relation = ?3 GROUP BY flow_id");
    rq.bind(1, name(FlowDirection::forward)).bind(2, name(FlowDirection::reply)).bind(3, name(Relation::repeats));
    while (rq.step()) c.repeated[rq.column_int(0)] = {rq.column_int(1), rq.column_int(2)};
}

// The kernel's NAT for each connection (live capture only), by the original tuple: conntrack's reply tuple,
// reversed, is how the kernel translated it. The dump at the end wins over the one at the start.
std::map<std::tuple<std::int64_t, Tuple>, ConntrackEntry> load_conntrack(const store::Database& db) {
    std::map<std::tuple<std::int64_t, Tuple>, ConntrackEntry> kernel;
    auto q = db.prepare(
        "SELECT proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst, reply_sport, reply_dport "
        "FROM conntrack ORDER BY event = 'dump-end', id");
    while (q.step()) {
        const std::int64_t proto = q.column_int(0);
        ConntrackEntry e;
        e.original = make_tuple(proto, q.column_text(1), q.column_text(2), q.column_int(3), q.column_int(4));
        e.reply = make_tuple(proto, q.column_text(5), q.column_text(6), q.column_int(7), q.column_int(8));
        e.translated = make_tuple(proto, q.column_text(6), q.column_text(5),
                                  is_icmp(proto) ? q.column_int(7) : q.column_int(8), q.column_int(7));
        kernel[{proto, e.original}] = std::move(e);
    }
    return kernel;
}

// The host's own addresses as a live capture recorded them: those of its bridges and uplinks (points.addresses,
// "172.17.0.1/16 fd00:17::1/64"), without their prefix lengths.
std::set<std::string> host_addresses(const store::Database& db) {
    std::set<std::string> out;
    auto q = db.prepare("SELECT addresses FROM points WHERE source = 'live' AND role IN (?1, ?2)");
    q.bind(1, name(Role::bridge)).bind(2, name(Role::uplink));
    while (q.step()) {
        std::istringstream words(q.column_text(0));
        for (std::string a; words >> a;) out.insert(a.substr(0, a.find('/')));
    }
    return out;
}

template <typename T>
std::vector<T> take(std::map<std::int64_t, std::vector<T>>& from, std::int64_t id) {
    const auto it = from.find(id);
    return it == from.end() ? std::vector<T>{} : std::move(it->second);
}

// The flows with their children; `totals` gets the stored hop statistics of all flows together.
std::vector<Flow> load_flows(const store::Database& db, const Names& name_of, std::vector<HopStats>& totals) {
    FlowChildren c;
    load_rewrites_hops_losses(db, name_of, c);
    load_paths_and_observers(db, name_of, c);
    const auto kernel = load_conntrack(db);
    // The entries whose translation only rewrote the destination (nat OUTPUT's DNAT of what the host sent), by that
    // translation: a flow first seen already translated. A source rewrite (MASQUERADE) is never taken for one — a
    // flow first seen at the uplink would otherwise be "sent by the host".
    // The host must have sent it: its source is one of the host's own addresses.
    std::map<std::tuple<std::int64_t, Tuple>, const ConntrackEntry*> by_translation;
    const auto host = kernel.empty() ? std::set<std::string>{} : host_addresses(db);
    for (const auto& [key, e] : kernel) {
        const bool dnat_only = e.original.src == e.translated.src && e.original.sport == e.translated.sport &&
                               !(e.original.dst == e.translated.dst && e.original.dport == e.translated.dport);
        if (dnat_only && host.contains(e.original.src))
            by_translation.try_emplace({std::get<0>(key), e.translated}, &e);
    }
    std::vector<Flow> flows;
    auto q = db.prepare(
        "SELECT id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, trans_sport, "
        "trans_dport, packets, journeys, first_ts_ns, last_ts_ns FROM flows ORDER BY id");
    while (q.step()) {
        Flow f;
        f.id = q.column_int(0);
        f.proto = q.column_int(1);
        f.original = make_tuple(f.proto, q.column_text(2), q.column_text(3), q.column_int(4), q.column_int(5));
        f.translated = make_tuple(f.proto, q.column_text(6), q.column_text(7), q.column_int(8), q.column_int(9));
        f.rewrites = take(c.rewrites, f.id);
        f.packets = q.column_int(10);
        f.journeys = q.column_int(11);
        std::tie(f.forward_journeys, f.reply_journeys) = c.per_direction[f.id];
        std::tie(f.repeated_forward, f.repeated_reply) = c.repeated[f.id];
        f.first_ts_ns = q.column_int(12);
        f.last_ts_ns = q.column_int(13);
        f.path = take(c.paths, f.id);
        f.hops = take(c.hops, f.id);
        along_path(f.hops, f.path);
        f.lost = take(c.lost, f.id);
        f.observers = take(c.observers, f.id);
        f.segmentation = take(c.segmentation, f.id);
        if (!kernel.empty()) {
            Conntrack ct;
            if (const auto it = kernel.find({f.proto, f.original}); it != kernel.end()) {
                ct.entry = it->second;
                ct.state = ct.entry->translated == f.translated ? ConntrackState::agrees : ConntrackState::differs;
            } else if (const auto t = by_translation.find({f.proto, f.original}); t != by_translation.end()) {
                ct.entry = *t->second;
                ct.state = ConntrackState::before_path;
            }
            f.conntrack = std::move(ct);
        }
        flows.push_back(std::move(f));
    }
    totals = std::move(c.all_hops);
    return flows;
}

// ICMP errors: one per journey. The reporter is the error's source where it was first seen; the probe is the
// quoted packet as seen at the last point (after NAT undid its rewrite, inside the container).
std::vector<IcmpError> load_icmp_errors(const store::Database& db, const Names& name_of) {
    // The TTL each probe was sent with (its first sighting: inside the container when that was captured).
    std::map<std::int64_t, std::int64_t> sent_ttl;
    auto tq = db.prepare(
        "SELECT p.journey_id, p.ttl FROM journeys e JOIN packets p ON p.journey_id = e.related_id AND p.hop = 0 "
        "WHERE e.relation = ?1");
    tq.bind(1, name(Relation::answers));
    while (tq.step()) sent_ttl.try_emplace(tq.column_int(0), tq.column_int(1));
    auto q = db.prepare(
        "SELECT p.journey_id, p.point_id, p.icmp_type, p.icmp_code, p.src, p.inner_proto, p.inner_src, p.inner_dst, "
        "p.inner_sport, p.inner_dport, p.inner_ttl, p.proto, j.flow_id, j.related_id FROM packets p "
        "JOIN journeys j ON j.id = p.journey_id WHERE (p.flags & ?1) != 0 AND p.hop IS NOT NULL "
        "ORDER BY p.journey_id, p.hop");
    q.bind(1, k_icmp_error_bit);
    std::vector<IcmpError> errors;
    auto or_zero = [&](int col) { return optional_int(q, col).value_or(0); };
    while (q.step()) {
        if (errors.empty() || errors.back().journey != q.column_int(0)) {
            IcmpError e;
            e.type = q.column_int(2);
            e.code = q.column_int(3);
            e.reporter = q.column_text(4);
            e.icmp = q.column_int(11);
            e.journey = q.column_int(0);
            e.flow = q.column_int(12);
            e.probe_journey = optional_int(q, 13);
            errors.push_back(std::move(e));
        }
        IcmpError& e = errors.back();
        e.path.push_back(name_of(q.column_int(1)));
        Probe p{or_zero(5), q.column_text(6), q.column_text(7), or_zero(8), or_zero(9), or_zero(10), std::nullopt};
        if (e.probe_journey)
            if (const auto it = sent_ttl.find(*e.probe_journey); it != sent_ttl.end()) p.sent_ttl = it->second;
        e.probe = std::move(p);  // the last sighting's view wins
    }
    return errors;
}

// ---------------------------------------------------------------------------------------------------------------
// Traceroutes: the probes of every (protocol, source, destination) a time exceeded answered, with the sightings of
// each probe and of its first answer (traceroute.cpp makes the table of them).

std::vector<TraceSighting> trace_sightings(store::Statement& q, std::int64_t journey) {
    q.reset();
    q.bind(1, journey);
    std::vector<TraceSighting> out;
    while (q.step()) {
        TraceSighting s{q.column_int(0), q.column_int(1), q.column_text(2), q.column_int(3),
                        q.column_int(4), q.column_int(5), q.column_int(6),  (q.column_int(7) & k_icmp_error_bit) != 0,
                        std::nullopt};
        if (s.icmp_error && !q.column_is_null(8)) {
            const std::int64_t inner = q.column_int(8);
            s.quoted = QuotedTuple{
                inner, make_tuple(inner, q.column_text(9), q.column_text(10), q.column_int(11), q.column_int(12)), ""};
        }
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<TraceGroup> load_trace_groups(const store::Database& db) {
    std::vector<TraceGroup> groups;
    auto gq = db.prepare(
        "SELECT f.proto, f.orig_src, f.orig_dst, max(pp.ttl) FROM journeys e "
        "JOIN packets ep ON ep.journey_id = e.id AND ep.hop = 0 "
        "JOIN journeys p ON p.id = e.related_id JOIN flows f ON f.id = p.flow_id "
        "JOIN packets pp ON pp.journey_id = p.id AND pp.hop = 0 "
        "WHERE e.relation = ?1 AND (ep.flags & ?2) != 0 "
        "AND ((ep.proto = 1 AND ep.icmp_type = 11) OR (ep.proto = 58 AND ep.icmp_type = 3)) "
        "GROUP BY f.proto, f.orig_src, f.orig_dst ORDER BY min(p.id)");
    gq.bind(1, name(Relation::answers)).bind(2, k_icmp_error_bit);
    while (gq.step()) groups.push_back({gq.column_int(0), gq.column_text(1), gq.column_text(2), gq.column_int(3), {}});
    if (groups.empty()) return groups;

    std::map<std::int64_t, std::int64_t> answer_of;  // probe journey -> its first answer
    auto aq = db.prepare("SELECT related_id, id FROM journeys WHERE relation = ?1 ORDER BY id");
    aq.bind(1, name(Relation::answers));
    while (aq.step()) answer_of.try_emplace(aq.column_int(0), aq.column_int(1));
    auto sq = db.prepare(
        "SELECT point_id, ts_ns, src, proto, icmp_type, icmp_code, tcp_flags, flags, inner_proto, inner_src, "
        "inner_dst, inner_sport, inner_dport FROM packets WHERE journey_id = ? AND hop IS NOT NULL ORDER BY hop");
    auto pq = db.prepare(
        "SELECT j.id, j.flow_id, p.ttl FROM journeys j JOIN flows f ON f.id = j.flow_id "
        "JOIN packets p ON p.journey_id = j.id AND p.hop = 0 "
        "WHERE f.proto = ?1 AND f.orig_src = ?2 AND f.orig_dst = ?3 AND j.direction = ?5 "
        "AND (j.relation IS NULL OR j.relation != ?6) AND p.ttl <= ?4 ORDER BY p.ttl, j.first_ts_ns, j.id");
    for (TraceGroup& g : groups) {
        pq.reset();
        pq.bind(1, g.proto).bind(2, g.src).bind(3, g.dst).bind(4, std::max(k_default_max_ttl, g.highest_expired_ttl));
        pq.bind(5, name(FlowDirection::forward)).bind(6, name(Relation::answers));
        while (pq.step()) {
            TraceProbeRow probe{pq.column_int(0), pq.column_int(1), pq.column_int(2), {}, std::nullopt, {}};
            probe.sent = trace_sightings(sq, probe.journey);
            if (const auto it = answer_of.find(probe.journey); it != answer_of.end()) {
                probe.answer = it->second;
                probe.back = trace_sightings(sq, it->second);
            }
            g.probes.push_back(std::move(probe));
        }
    }
    return groups;
}

// ---------------------------------------------------------------------------------------------------------------
// What the verdicts need (verdicts.cpp decides them).

void load_journey_kinds(const store::Database& db, VerdictInputs& in) {
    auto cq = db.prepare(
        "SELECT j.flow_id, max(n) FROM (SELECT related_id, count(*) + 1 AS n FROM journeys WHERE relation = ?1 "
        "GROUP BY related_id) c JOIN journeys j ON j.id = c.related_id GROUP BY j.flow_id");
    cq.bind(1, name(Relation::copy_of));
    while (cq.step()) in.interfaces[cq.column_int(0)] = cq.column_int(1);
    auto jq = db.prepare(
        "SELECT flow_id, sum(ambiguous), sum(relation IS ?1), sum(relation IS ?2), "
        "count(DISTINCT CASE WHEN relation IS ?2 THEN related_id END) FROM journeys GROUP BY flow_id");
    jq.bind(1, name(Relation::copy_of)).bind(2, name(Relation::fragment_of));
    while (jq.step()) {
        in.ambiguous[jq.column_int(0)] = jq.column_int(1);
        in.ambiguous_total += jq.column_int(1);
        in.copies[jq.column_int(0)] = jq.column_int(2);
        if (jq.column_int(3) > 0)
            in.fragments[jq.column_int(0)] = {jq.column_int(4), jq.column_int(3) + jq.column_int(4)};
    }
    // Flows that reached an uplink (the NAT point).
    auto uq = db.prepare(
        "SELECT DISTINCT j.flow_id FROM journeys j JOIN packets p ON p.journey_id = j.id "
        "JOIN points pt ON pt.id = p.point_id WHERE pt.role = ?1");
    uq.bind(1, name(Role::uplink));
    while (uq.step()) in.reached_uplink.insert(uq.column_int(0));
    // The end of each flow's forward path: the last point of its longest forward journey.
    auto pq = db.prepare(
        "SELECT flow_id, last_point FROM (SELECT flow_id, last_point, row_number() OVER (PARTITION BY flow_id "
        "ORDER BY sightings DESC, id) AS rn FROM journeys WHERE direction = ?1) WHERE rn = 1");
    pq.bind(1, name(FlowDirection::forward));
    while (pq.step()) in.path_end[pq.column_int(0)] = pq.column_int(1);
}

void load_error_verdicts(const store::Database& db, const Names& name_of, VerdictInputs& in) {
    std::set<std::int64_t> lost_errors;
    auto elq = db.prepare(
        "SELECT error_journey, after_point, expected_point, count FROM losses WHERE error_journey IS NOT NULL ORDER BY "
        "id");
    while (elq.step()) {
        lost_errors.insert(elq.column_int(0));
        in.error_losses[elq.column_int(0)].push_back(
            {name_of(elq.column_int(1)), name_of(elq.column_int(2)), elq.column_int(3)});
    }
    auto eq = db.prepare(
        "SELECT e.id, e.related_id, p.icmp_type, p.icmp_code, coalesce(p.icmp_mtu, 0), p.src, e.first_point "
        "FROM journeys e JOIN packets p ON p.journey_id = e.id AND p.hop = 0 "
        "WHERE (p.flags & ?1) != 0 ORDER BY e.id");
    eq.bind(1, k_icmp_error_bit);
    while (eq.step()) {
        ErrorInfo e{eq.column_int(0),          eq.column_is_null(1) ? 0 : eq.column_int(1),
                    eq.column_int(2),          eq.column_int(3),
                    eq.column_int(4),          eq.column_text(5),
                    name_of(eq.column_int(6)), false};
        e.lost = lost_errors.contains(e.journey);
        in.errors[e.journey] = e;
        if (e.probe != 0) in.error_of_probe.try_emplace(e.probe, e);
    }
    // Forward DF journeys (the flow's own packets, not pieces of one) with their size and last point.
    auto dq = db.prepare(
        "SELECT j.flow_id, j.id, p.ip_len, j.last_point FROM journeys j JOIN packets p ON p.journey_id = j.id "
        "AND p.hop = 0 WHERE j.direction = ?3 AND (p.flags & ?1) = 0 AND ((p.flags & ?2) != 0 OR "
        "p.ip_version = 6) AND (j.relation IS NULL OR j.relation IN (?4, ?5)) ORDER BY j.id");
    dq.bind(1, k_icmp_error_bit).bind(2, k_dont_fragment_bit).bind(3, name(FlowDirection::forward));
    dq.bind(4, name(Relation::repeats)).bind(5, name(Relation::answers));
    while (dq.step())
        in.df_journeys[dq.column_int(0)].push_back({dq.column_int(1), dq.column_int(2), dq.column_int(3)});
    // The ICMP error behind each loss one explains.
    auto vq = db.prepare(
        "SELECT flow_id, after_point, expected_point, direction, cause, evidence_id FROM losses "
        "WHERE evidence_id IS NOT NULL AND error_journey IS NULL");
    while (vq.step())
        in.evidence[vq.column_int(0)].push_back({name_of(vq.column_int(1)), name_of(vq.column_int(2)),
                                                 direction_of(vq.column_text(3)), cause_of(vq.column_text(4)),
                                                 vq.column_int(5)});
}

CaptureInfo load_capture_info(const store::Database& db) {
    CaptureInfo c;
    c.database = db.path();
    c.version = db.meta("hoptrace_version");
    c.command_line = db.meta("command_line").value_or("");
    if (c.command_line.empty()) c.command_line = db.meta("last_import").value_or("");
    c.host = db.meta("host").value_or("");
    c.masquerade = db.meta("masquerade").value_or("") == "yes";
    return c;
}

// ---------------------------------------------------------------------------------------------------------------
// The HTML page's samples (docs/cli.md, "How the size is bounded").

// Which flows the page draws in full and lists: the troubled ones (losses, ICMP errors) first, then the busiest;
// listed in the model's order.
void rank_flows(const ReportModel& m, HtmlSamples& h) {
    std::vector<std::size_t> ranked(m.flows.size());
    for (std::size_t i = 0; i < ranked.size(); ++i) ranked[i] = i;
    auto troubled = [&](const Flow& f) {
        std::int64_t lost = 0;
        for (const Loss& l : f.lost) lost += l.count;
        return lost > 0 || h.errors_of_flow.contains(f.id);
    };
    std::stable_sort(ranked.begin(), ranked.end(), [&](std::size_t a, std::size_t b) {
        const bool ta = troubled(m.flows[a]);
        const bool tb = troubled(m.flows[b]);
        if (ta != tb) return ta;
        return m.flows[a].packets > m.flows[b].packets;
    });
    std::set<std::size_t> listed;
    for (std::size_t k = 0; k < ranked.size(); ++k) {
        if (k < h.options.max_flows_drawn) h.drawn.insert(m.flows[ranked[k]].id);
        if (k < h.options.max_table_rows) listed.insert(ranked[k]);
    }
    h.listed.assign(listed.begin(), listed.end());
}

// The journeys a flow's ladder draws: evenly spread over its journeys in time order, plus notable ones (lost, ICMP
// errors) the sample missed; their sightings (never the bytes).
Ladder sample_ladder(const store::Database& db, const ReportModel& m, const HtmlSamples& h, const Flow& flow,
                     const std::map<std::int64_t, std::size_t>& error_of_journey) {
    Ladder ladder;
    ladder.total = static_cast<std::size_t>(std::max<std::int64_t>(flow.journeys, 0));
    std::set<std::int64_t> ids;
    const auto per_ladder = static_cast<std::int64_t>(std::max<std::size_t>(h.options.max_journeys_per_ladder, 1));
    if (ladder.total > 0) {
        // Row rn is taken when (rn-1)·M/total reaches a new integer, which picks min(M, total) rows.
        auto q = db.prepare(
            "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY first_ts_ns, id) AS rn FROM journeys "
            "WHERE flow_id = ?1) WHERE rn = 1 OR ((rn - 1) * ?2) / ?3 != ((rn - 2) * ?2) / ?3 LIMIT ?2");
        q.bind(1, flow.id).bind(2, per_ladder).bind(3, static_cast<std::int64_t>(ladder.total));
        while (q.step()) ids.insert(q.column_int(0));
    }
    std::size_t notable = 0;
    auto lq = db.prepare(
        "SELECT id FROM journeys WHERE flow_id = ?1 AND direction = ?2 AND last_point = ?3 "
        // a super-packet whose segments went on (GSO/TSO) was not lost where it ended
        "AND id NOT IN (SELECT related_id FROM journeys WHERE flow_id = ?1 AND relation = ?5) "
        "ORDER BY first_ts_ns, id LIMIT ?4");
    for (const Loss& l : flow.lost) {
        const auto point =
            std::find_if(m.points.begin(), m.points.end(), [&](const Point& p) { return p.name == l.after; });
        if (point == m.points.end()) continue;
        lq.reset();
        lq.bind(1, flow.id).bind(2, name(l.direction)).bind(3, point->id).bind(4, std::int64_t{3});
        lq.bind(5, name(Relation::segment_of));
        while (lq.step() && notable < h.options.max_notable_journeys) {
            if (ids.insert(lq.column_int(0)).second) ++notable;
        }
    }
    if (const auto it = h.errors_of_flow.find(flow.id); it != h.errors_of_flow.end()) {
        std::size_t k = 0;
        for (const std::size_t e : it->second) {
            if (notable >= h.options.max_notable_journeys || k++ >= 4) break;
            if (ids.insert(m.icmp_errors[e].journey).second) ++notable;
        }
    }
    auto jq = db.prepare("SELECT direction FROM journeys WHERE id = ?1");
    auto sq = db.prepare(
        "SELECT point_id, ts_ns, src, dst, sport, dport, ttl, flags, proto, icmp_type, icmp_code, icmp_seq, "
        "tcp_flags, payload_len FROM packets WHERE journey_id = ?1 AND hop IS NOT NULL ORDER BY hop LIMIT ?2");
    for (const std::int64_t id : ids) {
        jq.reset();
        jq.bind(1, id);
        if (!jq.step()) continue;
        LadderJourney j;
        j.id = id;
        j.reply = jq.column_text(0) == name(FlowDirection::reply);
        if (const auto it = error_of_journey.find(id); it != error_of_journey.end()) j.error = it->second;
        sq.reset();
        sq.bind(1, id).bind(2, static_cast<std::int64_t>(m.points.size() + 1));
        while (sq.step()) {
            j.sightings.push_back({sq.column_int(0), sq.column_int(1), sq.column_text(2), sq.column_text(3),
                                   sq.column_int(4), sq.column_int(5), sq.column_int(6), sq.column_int(8),
                                   sq.column_int(13), (sq.column_int(7) & k_icmp_error_bit) != 0, optional_int(sq, 9),
                                   optional_int(sq, 10), optional_int(sq, 11), optional_int(sq, 12)});
        }
        if (j.sightings.empty()) continue;
        j.icmp_error = j.error.has_value() || j.sightings.front().icmp_error;
        ladder.journeys.push_back(std::move(j));
    }
    std::sort(ladder.journeys.begin(), ladder.journeys.end(), [](const LadderJourney& a, const LadderJourney& b) {
        const std::int64_t ta = a.sightings.front().ts_ns;
        const std::int64_t tb = b.sightings.front().ts_ns;
        return ta != tb ? ta < tb : a.id < b.id;
    });
    return ladder;
}

// Hop times for the histograms of hop_totals: every step-th journey (by id) of the model's flows, at most
// max_histogram_journeys of them (ICMP errors apart, as in the totals).
void sample_histograms(const store::Database& db, const ReportModel& m, const Names& name_of, HtmlSamples& h) {
    if (m.hop_totals.empty()) return;  // the page has no histograms
    const std::size_t shown = std::min(m.hop_totals.size(), h.options.max_histograms);
    std::map<std::tuple<FlowDirection, std::string, std::string>, std::size_t> index;  // -> hop_totals index
    for (std::size_t i = 0; i < shown; ++i)
        index[{m.hop_totals[i].direction, m.hop_totals[i].from, m.hop_totals[i].to}] = i;
    h.histogram.assign(shown, {});
    std::int64_t journeys = 0;
    std::int64_t flows_stored = 0;
    {
        auto q = db.prepare("SELECT (SELECT count(*) FROM journeys), (SELECT count(*) FROM flows)");
        if (q.step()) {
            journeys = q.column_int(0);
            flows_stored = q.column_int(1);
        }
    }
    h.subset = static_cast<std::int64_t>(m.flows.size()) < flows_stored;
    std::string flow_ids = "[";  // a JSON array for json_each
    if (h.subset) {
        journeys = 0;
        for (const Flow& f : m.flows) {
            journeys += f.journeys;
            flow_ids.append(flow_ids.size() > 1 ? "," : "").append(std::to_string(f.id));
        }
    }
    flow_ids += "]";
    const auto cap = static_cast<std::int64_t>(std::max<std::size_t>(h.options.max_histogram_journeys, 1));
    h.histogram_step = std::max<std::int64_t>(1, (journeys + cap - 1) / cap);
    auto q = db.prepare(
        std::string("SELECT j.direction, a.point_id, b.point_id, b.ts_ns - a.ts_ns FROM journeys j "
                    "JOIN packets a ON a.journey_id = j.id JOIN packets b ON b.journey_id = j.id AND b.hop = a.hop + 1 "
                    "WHERE j.id % ?1 = 0 AND (a.flags & ?4) = 0 ") +
        (h.subset ? "AND j.flow_id IN (SELECT value FROM json_each(?3)) " : "") + "LIMIT ?2");
    q.bind(1, h.histogram_step).bind(2, cap * static_cast<std::int64_t>(m.points.size() + 1)).bind(4, k_icmp_error_bit);
    if (h.subset) q.bind(3, flow_ids);
    while (q.step()) {
        const auto it =
            index.find({direction_of(q.column_text(0)), name_of(q.column_int(1)), name_of(q.column_int(2))});
        if (it == index.end()) continue;
        h.histogram[it->second].push_back(q.column_int(3));
        ++h.histogram_sampled;
    }
}

HtmlSamples load_html_samples(const store::Database& db, const ReportModel& m, const HtmlOptions& options) {
    HtmlSamples h;
    h.options = options;
    // ICMP errors: as many as the page's table lists.
    std::map<std::int64_t, std::size_t> error_of_journey;
    for (std::size_t i = 0; i < m.icmp_errors.size() && i < options.max_table_rows; ++i) {
        error_of_journey[m.icmp_errors[i].journey] = i;
        h.errors_of_flow[m.icmp_errors[i].flow].push_back(i);
    }
    rank_flows(m, h);
    for (const Flow& f : m.flows)
        if (h.drawn.contains(f.id)) h.ladders[f.id] = sample_ladder(db, m, h, f, error_of_journey);
    sample_histograms(db, m, Names(m.points), h);
    return h;
}

// --flow: only the selected flows, their ICMP errors and their traceroute probes; hop_totals again over them.
void keep_selected(ReportModel& m, const store::Database& db, const FlowFilter& filter) {
    const auto selected = select_flows(db, filter);
    auto keep = [&](std::int64_t flow) { return selected.contains(flow); };
    std::erase_if(m.flows, [&](const Flow& f) { return !keep(f.id); });
    std::erase_if(m.icmp_errors, [&](const IcmpError& e) { return !keep(e.flow); });
    for (Traceroute& t : m.traceroutes) {
        for (TraceHop& h : t.hops) std::erase_if(h.probes, [&](const TraceProbe& p) { return !keep(p.flow); });
        std::erase_if(t.hops, [](const TraceHop& h) { return h.probes.empty(); });
    }
    std::erase_if(m.traceroutes, [](const Traceroute& t) { return t.hops.empty(); });
    m.hop_totals = hop_totals(db, keep);
    m.flow_filter = filter.to_string();
}

}  // namespace

Tuple make_tuple(std::int64_t proto, std::string src, std::string dst, std::int64_t sport, std::int64_t dport) {
    return {std::move(src), std::move(dst), sport, is_icmp(proto) ? 0 : dport};
}

const char* to_string(ConntrackState s) noexcept {
    switch (s) {
        case ConntrackState::agrees:
            return "agrees";
        case ConntrackState::differs:
            return "differs";
        case ConntrackState::not_reached:
            return "not-reached";
        case ConntrackState::before_path:
            return "before-path";
        case ConntrackState::not_found:
            break;
    }
    return "not found";
}

const char* to_string(FragNeeded f) noexcept {
    switch (f) {
        case FragNeeded::returned:
            return "returned";
        case FragNeeded::dropped_in_host:
            return "dropped-in-host";
        case FragNeeded::none:
            break;
    }
    return "none";
}

std::vector<Point> load_points(const store::Database& db) {
    std::vector<Point> points;
    auto q = db.prepare(
        "SELECT id, name, netns, ifname, role, packets, kernel_drops, path_order, source, note, role_evidence, "
        "complete FROM points ORDER BY path_order IS NULL, path_order, id");
    while (q.step()) {
        Point p{
            q.column_int(0),   q.column_text(1),      q.column_text(2),   q.column_text(3), role_of(q.column_text(4)),
            q.column_int(5),   q.column_int(6),       optional_int(q, 7), q.column_text(8), q.column_text(9),
            q.column_text(10), q.column_int(11) != 0, std::nullopt};
        points.push_back(std::move(p));
    }
    const auto containers = store::containers(db);
    for (Point& p : points)
        if (const auto it = containers.find(p.id); it != containers.end()) p.container = it->second;
    return points;
}

// A flow to a published port: DNATed (its destination port rewritten forward) from the port's host port to the
// container's port, with the port's protocol ("HOSTIP:HOSTPORT->PORT/PROTO" as docker inspect says it).
void find_published_ports(ReportModel& m) {
    for (Flow& f : m.flows) {
        const bool dnat = std::any_of(f.rewrites.begin(), f.rewrites.end(), [](const Rewrite& r) {
            return r.direction == FlowDirection::forward && (r.field == "dst" || r.field == "dport");
        });
        if (!dnat) continue;
        for (const Point& p : m.points) {
            if (!p.container) continue;
            for (const std::string& port : p.container->ports) {
                const auto arrow = port.find("->");
                const auto colon = port.rfind(':', arrow);
                const auto slash = port.find('/', arrow);
                if (arrow == std::string::npos || colon == std::string::npos || slash == std::string::npos) continue;
                const std::string host_port = port.substr(colon + 1, arrow - colon - 1);
                const std::string inner = port.substr(arrow + 2, slash - arrow - 2);
                if (port.substr(slash + 1) != proto_name(f.proto)) continue;
                if (host_port == std::to_string(f.original.dport) && inner == std::to_string(f.translated.dport))
                    f.published.push_back(port + " (" + p.container->name + ")");
            }
        }
    }
}

// Docker's userland proxy (proxies, read at the capture's start): a connection to a published host port that was not
// DNATed (delivered to the host, where docker-proxy listens) and the connection from a host address to the
// container's port that the proxy opened for it. Each proxy connection is tied to the one client connection that
// began within the second before it; with several, it stays undecided (never guessed).
void find_relays(const store::Database& db, ReportModel& m) {
    const auto proxies = store::proxies(db);
    if (proxies.empty()) return;
    const auto host = host_addresses(db);
    std::set<std::string> gateways;  // the proxy dials from the bridge's own address
    {
        auto q = db.prepare("SELECT addresses FROM points WHERE source = 'live' AND role = ?1");
        q.bind(1, name(Role::bridge));
        while (q.step()) {
            std::istringstream words(q.column_text(0));
            for (std::string a; words >> a;) gateways.insert(a.substr(0, a.find('/')));
        }
    }
    constexpr std::int64_t k_dial_ns = 1'000'000'000;
    for (const DockerProxy& x : proxies) {
        Relay base{x.pid,
                   x.host_ip + ":" + std::to_string(x.host_port) + "/" + x.proto,
                   x.container_ip + ":" + std::to_string(x.container_port),
                   "",
                   std::nullopt,
                   0};
        std::vector<Flow*> clients;
        std::vector<Flow*> dialled;
        for (Flow& f : m.flows) {
            if (proto_name(f.proto) != x.proto || f.relay) continue;
            const bool dnat = std::any_of(f.rewrites.begin(), f.rewrites.end(), [](const Rewrite& r) {
                return r.direction == FlowDirection::forward && (r.field == "dst" || r.field == "dport");
            });
            const bool any_address = x.host_ip == "0.0.0.0" || x.host_ip == "::";
            if (!dnat && f.original.dport == x.host_port && host.contains(f.original.dst) &&
                (any_address || f.original.dst == x.host_ip))
                clients.push_back(&f);
            else if (f.original.dst == x.container_ip && f.original.dport == x.container_port &&
                     gateways.contains(f.original.src))
                dialled.push_back(&f);
        }
        for (Flow* c : clients) {
            c->relay = base;
            c->relay->side = "client";
        }
        // A connection from the gateway to the container with no client connection just before it is not the
        // proxy's (a health check, the host's own): it is not labelled.
        for (Flow* d : dialled) {
            std::vector<Flow*> before;
            for (Flow* c : clients)
                if (c->first_ts_ns <= d->first_ts_ns && d->first_ts_ns - c->first_ts_ns <= k_dial_ns)
                    before.push_back(c);
            if (before.empty()) continue;
            d->relay = base;
            d->relay->side = "container";
            if (before.size() == 1 && !before.front()->relay->peer_flow) {
                d->relay->peer_flow = before.front()->id;
                before.front()->relay->peer_flow = d->id;
            } else {
                d->relay->undecided = static_cast<std::int64_t>(before.size());  // or one client, already paired
            }
        }
    }
}

ReportModel load_report(const store::Database& db, const Selection& selection) {
    ReportModel m;
    m.points = load_points(db);
    const Names name_of(m.points);
    m.flows = load_flows(db, name_of, m.hop_totals);
    load_firewall_verdicts(db, m);
    find_published_ports(m);
    find_relays(db, m);
    m.icmp_errors = load_icmp_errors(db, name_of);
    // Each flow says which ICMP errors answered it (a traceroute probe, a closed port).
    std::map<std::int64_t, std::vector<IcmpAnswer>> answers;
    for (const IcmpError& e : m.icmp_errors) answers[e.flow].push_back({e.icmp, e.type, e.code, e.reporter});
    for (Flow& f : m.flows) f.icmp_errors = take(answers, f.id);
    m.traceroutes = assemble_traceroutes(load_trace_groups(db), name_of);
    VerdictInputs verdicts;
    load_journey_kinds(db, verdicts);
    load_error_verdicts(db, name_of, verdicts);
    apply_verdicts(m, verdicts, name_of);
    m.capture = load_capture_info(db);
    if (selection.flows) keep_selected(m, db, *selection.flows);
    if (selection.html) m.html = load_html_samples(db, m, *selection.html);
    return m;
}

std::unordered_set<std::int64_t> select_flows(const store::Database& db, const FlowFilter& filter,
                                              std::uint64_t* total) {
    std::unordered_set<std::int64_t> out;
    auto q = db.prepare(
        "SELECT id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, trans_sport, trans_dport "
        "FROM flows");
    while (q.step()) {
        const FlowRow f{q.column_int(0),
                        static_cast<std::uint8_t>(q.column_int(1)),
                        q.column_text(2),
                        q.column_text(3),
                        static_cast<std::uint16_t>(q.column_int(4)),
                        static_cast<std::uint16_t>(q.column_int(5)),
                        q.column_text(6),
                        q.column_text(7),
                        static_cast<std::uint16_t>(q.column_int(8)),
                        static_cast<std::uint16_t>(q.column_int(9))};
        if (total != nullptr) ++*total;
        if (filter.matches(f)) out.insert(f.id);
    }
    return out;
}

std::uint64_t count_flows(const store::Database& db) {
    auto q = db.prepare("SELECT count(*) FROM flows");
    return q.step() ? static_cast<std::uint64_t>(q.column_int(0)) : 0;
}

void for_each_hop_sample(const store::Database& db, const std::function<void(const HopSample&)>& visit) {
    auto q = db.prepare(
        "SELECT j.flow_id, f.proto, j.direction, a.journey_id, a.point_id, b.point_id, a.ts_ns, b.ts_ns, a.flags & ?1 "
        "FROM packets a JOIN packets b ON b.journey_id = a.journey_id AND b.hop = a.hop + 1 "
        "JOIN journeys j ON j.id = a.journey_id JOIN flows f ON f.id = j.flow_id "
        "JOIN points pa ON pa.id = a.point_id JOIN points pb ON pb.id = b.point_id "
        "WHERE a.journey_id IS NOT NULL ORDER BY a.journey_id, a.hop");
    q.bind(1, k_icmp_error_bit);
    while (q.step()) {
        visit({q.column_int(0), q.column_int(1), direction_of(q.column_text(2)), q.column_int(3), q.column_int(4),
               q.column_int(5), q.column_int(6), q.column_int(7), q.column_int(8) != 0});
    }
}

std::vector<HopStats> hop_totals(const store::Database& db, const std::function<bool(std::int64_t flow)>& keep) {
    const std::vector<Point> points = load_points(db);
    const Names name_of(points);
    std::map<std::int64_t, std::int64_t> order;  // point -> path order (0 when it has none)
    for (const Point& p : points) order[p.id] = p.path_order.value_or(0);
    // Per direction, then the first point's place along it (replies inward), then the points.
    using Key = std::tuple<FlowDirection, std::int64_t, std::int64_t, std::int64_t>;
    std::map<Key, std::vector<std::int64_t>> samples;
    for_each_hop_sample(db, [&](const HopSample& s) {
        if (s.icmp_error || (keep && !keep(s.flow))) return;
        const std::int64_t at = s.direction == FlowDirection::reply ? -order[s.from_point] : order[s.from_point];
        samples[{s.direction, at, s.from_point, s.to_point}].push_back(s.to_ts_ns - s.from_ts_ns);
    });
    std::vector<HopStats> totals;
    for (auto& [key, v] : samples) {
        std::sort(v.begin(), v.end());
        const auto& [direction, at, from, to] = key;
        totals.push_back({name_of(from), name_of(to), direction, static_cast<std::int64_t>(v.size()), v.front(),
                          correlate::percentile(v, 50), correlate::percentile(v, 90), correlate::percentile(v, 99),
                          v.back()});
    }
    return totals;
}

// The previous sighting (hop - 1) and the observers (hop NULL: not counted among the journey's hops) come through
// the packets_journey index.
PointPackets::PointPackets(const store::Database& db, std::int64_t point_id)
    : m_query(db.prepare(
          "SELECT p.id, p.ts_ns, p.wire_len, p.direction, p.flags, p.ethertype, p.ip_version, p.proto, p.src, p.dst, "
          "p.sport, p.dport, p.fingerprint, p.journey_id, p.hop, j.flow_id, j.direction, "
          "j.sightings - (SELECT count(*) FROM packets o WHERE o.journey_id = p.journey_id AND o.hop IS NULL), "
          "q.point_id, q.ts_ns, q.src, q.dst, q.sport, q.dport, p.raw "
          "FROM packets p "
          "LEFT JOIN journeys j ON j.id = p.journey_id "
          "LEFT JOIN packets q ON q.journey_id = p.journey_id AND q.hop = p.hop - 1 "
          "WHERE p.point_id = ?1 "
          "ORDER BY p.ts_ns, p.id")) {
    m_query.bind(1, point_id);
}

bool PointPackets::next() {
    if (!m_query.step()) return false;
    const store::Statement& q = m_query;
    StoredPacket& p = m_packet;
    p.id = q.column_int(0);
    p.ts_ns = q.column_int(1);
    p.wire_len = q.column_int(2);
    p.direction = q.column_text(3);
    p.flags = static_cast<std::uint32_t>(q.column_int(4));
    p.ethertype = q.column_int(5);
    p.ip_version = q.column_int(6);
    p.proto = q.column_int(7);
    p.src = q.column_text(8);
    p.dst = q.column_text(9);
    p.sport = q.column_int(10);
    p.dport = q.column_int(11);
    p.fingerprint = q.column_int(12);
    p.journey = optional_int(q, 13);
    p.hop = optional_int(q, 14);
    p.flow = optional_int(q, 15);
    p.journey_direction = q.column_text(16);
    p.journey_hops = q.column_int(17);
    p.prev_point = optional_int(q, 18);
    p.prev_ts_ns = q.column_int(19);
    p.prev_src = q.column_text(20);
    p.prev_dst = q.column_text(21);
    p.prev_sport = q.column_int(22);
    p.prev_dport = q.column_int(23);
    p.raw = q.column_blob(24);
    return true;
}

std::map<std::int64_t, CapturedLengths> captured_lengths(const store::Database& db) {
    std::map<std::int64_t, CapturedLengths> out;
    auto q = db.prepare(
        "SELECT point_id, max(cap_len), max(CASE WHEN flags & ?1 THEN cap_len END) FROM packets GROUP BY point_id");
    q.bind(1, k_snapped_bit);
    while (q.step()) {
        out[q.column_int(0)] = {q.column_int(1),
                                q.column_is_null(2) ? std::nullopt : std::optional<std::int64_t>(q.column_int(2))};
    }
    return out;
}

}  // namespace hoptrace::report
