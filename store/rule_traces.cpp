#include "store/rule_traces.hpp"

namespace hoptrace::store {

void insert_rule_traces(Database& db, const std::string& netns, std::span<const RuleTraceEvent> events) {
    auto st = db.prepare(
        "INSERT INTO rule_traces (ts_ns, trace_id, walk, netns, family, tbl, chain, type, handle, rule, verdict, "
        "target, iif, oif, ip_version, proto, src, dst, sport, dport, ip_id, ip_len) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    Transaction txn(db);
    for (const RuleTraceEvent& e : events) {
        st.bind(1, e.ts_ns).bind(2, std::int64_t{e.trace_id}).bind(3, static_cast<std::int64_t>(e.packet));
        st.bind(4, netns).bind(5, e.family).bind(6, e.table).bind(7, e.chain).bind(8, e.type);
        if (e.type == "rule") st.bind(9, static_cast<std::int64_t>(e.handle));
        else st.bind_null(9);
        st.bind(10, e.rule).bind(11, e.verdict).bind(12, e.target);
        st.bind(13, std::int64_t{e.iif}).bind(14, std::int64_t{e.oif});
        const TracedPacket& p = e.headers;
        st.bind(15, std::int64_t{p.ip_version}).bind(16, std::int64_t{p.proto});
        st.bind(17, p.ip_version != 0 ? p.src.to_string() : std::string());
        st.bind(18, p.ip_version != 0 ? p.dst.to_string() : std::string());
        st.bind(19, std::int64_t{p.sport}).bind(20, std::int64_t{p.dport});
        st.bind(21, std::int64_t{p.ip_id}).bind(22, std::int64_t{p.ip_len});
        st.run();
        st.reset();
    }
    txn.commit();
}

void insert_rule_counts(Database& db, const std::string& netns, std::span<const RuleCount> counts) {
    auto st = db.prepare(
        "INSERT INTO rule_counters (netns, family, tbl, chain, handle, rule, packets) VALUES (?, ?, ?, ?, ?, ?, ?)");
    Transaction txn(db);
    for (const RuleCount& c : counts) {
        st.bind(1, netns).bind(2, c.family).bind(3, c.table).bind(4, c.chain);
        st.bind(5, static_cast<std::int64_t>(c.handle)).bind(6, c.rule).bind(7, static_cast<std::int64_t>(c.packets));
        st.run();
        st.reset();
    }
    txn.commit();
}

std::vector<TracedHeader> rule_trace_headers(const Database& db) {
    std::vector<TracedHeader> out;
    auto q = db.prepare(
        "SELECT walk, ts_ns, proto, src, dst, sport, dport, ip_id, ip_len FROM rule_traces WHERE ip_version != 0");
    while (q.step()) {
        const auto src = IpAddr::parse(q.column_text(3));
        const auto dst = IpAddr::parse(q.column_text(4));
        if (!src || !dst) continue;
        TracedHeader h;
        h.walk = static_cast<std::uint64_t>(q.column_int(0));
        h.ts_ns = q.column_int(1);
        h.proto = static_cast<std::uint8_t>(q.column_int(2));
        h.src = *src;
        h.dst = *dst;
        h.sport = static_cast<std::uint16_t>(q.column_int(5));
        h.dport = static_cast<std::uint16_t>(q.column_int(6));
        h.ip_id = static_cast<std::uint16_t>(q.column_int(7));
        h.ip_len = static_cast<std::uint32_t>(q.column_int(8));
        out.push_back(h);
    }
    return out;
}

void set_rule_trace_journeys(Database& db, std::span<const std::pair<std::uint64_t, std::int64_t>> walk_journey) {
    auto st = db.prepare("UPDATE rule_traces SET journey_id = ? WHERE walk = ?");
    Transaction txn(db);
    db.exec("UPDATE rule_traces SET journey_id = NULL WHERE journey_id IS NOT NULL");
    for (const auto& [walk, journey] : walk_journey) {
        st.bind(1, journey).bind(2, static_cast<std::int64_t>(walk));
        st.run();
        st.reset();
    }
    txn.commit();
}

}  // namespace hoptrace::store
