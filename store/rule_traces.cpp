#include "store/rule_traces.hpp"

#include "tracer/packet.hpp"

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

std::uint64_t tie_rule_traces(Database& db, std::int64_t window_ns) {
    {
        auto any = db.prepare("SELECT 1 FROM rule_traces LIMIT 1");
        if (!any.step()) return 0;
    }
    Transaction txn(db);
    db.exec("UPDATE rule_traces SET journey_id = NULL WHERE journey_id IS NOT NULL");
    // An ICMP echo's id is the sighting's sport (and dport, as in our tuples); the trace has it in sport only. The
    // points join first, so that each point's (point_id, ts_ns) index finds the sightings in the window.
    auto tie = db.prepare(
        "WITH candidates AS ("
        "  SELECT DISTINCT t.walk, p.journey_id, p.ip_len != t.ip_len AS by_fragment"
        "  FROM rule_traces t CROSS JOIN points pt JOIN packets p"
        "    ON p.point_id = pt.id AND p.ts_ns BETWEEN t.ts_ns - ?1 AND t.ts_ns + ?1"
        "   AND p.proto = t.proto AND p.src = t.src AND p.dst = t.dst AND p.ip_id = t.ip_id"
        // The hooks see a fragmented datagram whole (conntrack reassembles it first): where no point saw it whole,
        // its first fragment's sighting (which carries the ports, and is shorter) stands in for it.
        "   AND (p.ip_len = t.ip_len OR ((p.flags & ?2) != 0 AND p.frag_offset = 0 AND p.ip_len < t.ip_len))"
        "   AND p.sport = t.sport AND (p.proto IN (1, 58) OR p.dport = t.dport)"
        "  WHERE t.ip_version != 0 AND p.journey_id IS NOT NULL),"
        " best AS (SELECT c.* FROM candidates c WHERE c.by_fragment = (SELECT min(by_fragment) FROM candidates d"
        "   WHERE d.walk = c.walk)),"
        " one AS (SELECT walk, min(journey_id) AS journey FROM best GROUP BY walk HAVING count(*) = 1)"
        "UPDATE rule_traces SET journey_id = (SELECT journey FROM one WHERE one.walk = rule_traces.walk)"
        " WHERE walk IN (SELECT walk FROM one)");
    tie.bind(1, window_ns).bind(2, static_cast<std::int64_t>(packet_flag::k_fragment));
    tie.run();
    auto count = db.prepare("SELECT count(DISTINCT walk) FROM rule_traces WHERE journey_id IS NOT NULL");
    const std::uint64_t tied = count.step() ? static_cast<std::uint64_t>(count.column_int(0)) : 0;
    txn.commit();
    return tied;
}

}  // namespace hoptrace::store
