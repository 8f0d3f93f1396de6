#include "store/correlation.hpp"

#include <chrono>
#include <unordered_map>

namespace hoptrace::store {
namespace {

// Rows of `packets` changed per transaction (see CorrelationWriter).
constexpr std::int64_t k_packet_rows_per_transaction = 1024;

class AddressCache {
public:
    const IpAddr& get(const std::string& text) {
        auto [it, inserted] = m_cache.try_emplace(text);
        if (inserted) it->second = IpAddr::parse(text).value_or(IpAddr{});
        return it->second;
    }

private:
    std::unordered_map<std::string, IpAddr> m_cache;
};

template <class T>
T column(const Statement& q, int col) {
    return static_cast<T>(q.column_int(col));
}

template <class T>
std::optional<T> nullable(const Statement& q, int col) {
    if (q.column_is_null(col)) return std::nullopt;
    return static_cast<T>(q.column_int(col));
}

void bind(Statement& st, int index, const std::optional<std::int64_t>& value) {
    if (value) st.bind(index, *value);
    else st.bind_null(index);
}

void bind(Statement& st, int first, const AddressTuple& t) {
    st.bind(first, t.src).bind(first + 1, t.dst);
    st.bind(first + 2, std::int64_t{t.sport}).bind(first + 3, std::int64_t{t.dport});
}

std::int64_t as_int(std::uint64_t n) { return static_cast<std::int64_t>(n); }

}  // namespace

std::size_t count_dissected_packets(const Database& db) {
    auto count = db.prepare("SELECT count(*) FROM packets WHERE fingerprint != 0");
    return count.step() ? static_cast<std::size_t>(count.column_int(0)) : 0;
}

void for_each_dissected_packet(const Database& db, const std::function<void(const PacketFields&)>& visit) {
    auto q = db.prepare(
        "SELECT id, point_id, ts_ns, fingerprint, flags, proto, src, dst, sport, dport, icmp_type, icmp_code, "
        "icmp_id, inner_proto, inner_src, inner_dst, inner_sport, inner_dport, ttl, tcp_flags, ip_id, "
        "coalesce(tcp_seq, icmp_seq, 0), coalesce(tcp_ack, 0), payload_len, inner_ip_id, inner_seq, ip_len, "
        "frag_offset, coalesce(icmp_mtu, 0) FROM packets WHERE fingerprint != 0 ORDER BY id");
    AddressCache addresses;
    PacketFields p;
    while (q.step()) {
        p.packet_id = q.column_int(0);
        p.point = column<std::uint32_t>(q, 1);
        p.ts_ns = q.column_int(2);
        p.fingerprint = column<std::uint64_t>(q, 3);
        p.flags = column<std::uint32_t>(q, 4);
        p.proto = column<std::uint8_t>(q, 5);
        p.src = addresses.get(q.column_text(6));
        p.dst = addresses.get(q.column_text(7));
        p.sport = column<std::uint16_t>(q, 8);
        p.dport = column<std::uint16_t>(q, 9);
        p.icmp_type = column<std::uint8_t>(q, 10);
        p.icmp_code = column<std::uint8_t>(q, 11);
        p.icmp_id = column<std::uint16_t>(q, 12);
        p.inner_proto = nullable<std::uint8_t>(q, 13);
        p.inner_src = p.inner_proto ? addresses.get(q.column_text(14)) : IpAddr{};
        p.inner_dst = p.inner_proto ? addresses.get(q.column_text(15)) : IpAddr{};
        p.inner_sport = column<std::uint16_t>(q, 16);
        p.inner_dport = column<std::uint16_t>(q, 17);
        p.ttl = column<std::uint8_t>(q, 18);
        p.tcp_flags = column<std::uint8_t>(q, 19);
        p.ip_id = column<std::uint16_t>(q, 20);
        p.seq = column<std::uint32_t>(q, 21);
        p.ack = column<std::uint32_t>(q, 22);
        p.payload_len = column<std::uint32_t>(q, 23);
        p.inner_ip_id = nullable<std::uint16_t>(q, 24);
        p.inner_seq = nullable<std::uint32_t>(q, 25);
        p.ip_len = column<std::uint32_t>(q, 26);
        p.frag_offset = column<std::uint16_t>(q, 27);
        p.icmp_mtu = column<std::uint32_t>(q, 28);
        visit(p);
    }
}

std::vector<ConntrackEntry> conntrack_entries(const Database& db) {
    std::vector<ConntrackEntry> out;
    auto q = db.prepare(
        "SELECT DISTINCT proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst, reply_sport, "
        "reply_dport FROM conntrack");
    while (q.step()) {
        out.push_back(ConntrackEntry{column<std::uint8_t>(q, 0), q.column_text(1), q.column_text(2),
                                     column<std::uint16_t>(q, 3), column<std::uint16_t>(q, 4), q.column_text(5),
                                     q.column_text(6), column<std::uint16_t>(q, 7), column<std::uint16_t>(q, 8)});
    }
    return out;
}

std::map<std::uint32_t, std::pair<std::int64_t, std::int64_t>> packet_windows(const Database& db) {
    std::map<std::uint32_t, std::pair<std::int64_t, std::int64_t>> out;
    auto q = db.prepare("SELECT point_id, min(ts_ns), max(ts_ns) FROM packets GROUP BY point_id");
    while (q.step()) out[column<std::uint32_t>(q, 0)] = {q.column_int(1), q.column_int(2)};
    return out;
}

CorrelationWriter::CorrelationWriter(Database& db) : m_db(db) {
    {
        Transaction txn(db);
        db.exec(
            "DELETE FROM meta WHERE key = 'correlated_ns';"
            "DELETE FROM losses; DELETE FROM hops; DELETE FROM nat_rewrites; DELETE FROM journeys; DELETE FROM flows;"
            "UPDATE rule_traces SET journey_id = NULL WHERE journey_id IS NOT NULL;"
            // Rebuilt by build_indexes once the journeys are written: cheaper than a million index updates.
            "DROP INDEX IF EXISTS packets_journey;"
            "UPDATE points SET path_order = NULL;");
        txn.commit();
    }
    std::int64_t max_id = 0;
    {
        auto last = db.prepare("SELECT coalesce(max(id), 0) FROM packets");
        if (last.step()) max_id = last.column_int(0);
    }
    auto clear = db.prepare(
        "UPDATE packets SET journey_id = NULL, hop = NULL WHERE id >= ? AND id < ? AND journey_id IS NOT NULL");
    for (std::int64_t from = 0; from <= max_id; from += k_packet_rows_per_transaction) {
        Transaction txn(db);
        clear.bind(1, from).bind(2, from + k_packet_rows_per_transaction);
        clear.run();
        clear.reset();
        txn.commit();
    }
}

CorrelationWriter::~CorrelationWriter() = default;  // an uncommitted result rolls back (Transaction)

void CorrelationWriter::assign(std::span<const Assignment> by_packet_id) {
    auto packet = m_db.prepare("UPDATE packets SET journey_id = ?, hop = ? WHERE id = ?");
    const auto batch = static_cast<std::size_t>(k_packet_rows_per_transaction);
    for (std::size_t start = 0; start < by_packet_id.size(); start += batch) {
        Transaction txn(m_db);
        for (const Assignment& a : by_packet_id.subspan(start, std::min(batch, by_packet_id.size() - start))) {
            packet.bind(1, a.journey_id).bind(3, a.packet_id);
            bind(packet, 2, a.hop);
            packet.run();
            packet.reset();
        }
        txn.commit();
    }
}

Transaction& CorrelationWriter::result() {
    if (!m_result) m_result.emplace(m_db);
    return *m_result;
}

void CorrelationWriter::add(const FlowRow& row) {
    result();
    if (!m_flow)
        m_flow.emplace(m_db.prepare(
            "INSERT INTO flows (id, proto, orig_src, orig_dst, orig_sport, orig_dport, trans_src, trans_dst, "
            "trans_sport, trans_dport, packets, journeys, first_ts_ns, last_ts_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    Statement& st = *m_flow;
    st.bind(1, row.id).bind(2, std::int64_t{row.proto});
    bind(st, 3, row.original);
    bind(st, 7, row.translated);
    st.bind(11, as_int(row.packets)).bind(12, as_int(row.journeys)).bind(13, row.first_ts_ns).bind(14, row.last_ts_ns);
    st.run();
    st.reset();
}

void CorrelationWriter::add(const JourneyRow& row) {
    result();
    if (!m_journey)
        m_journey.emplace(m_db.prepare(
            "INSERT INTO journeys (id, flow_id, direction, fingerprint, sightings, first_point, last_point, "
            "first_ts_ns, last_ts_ns, related_id, relation, ambiguous, loss_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    Statement& st = *m_journey;
    st.bind(1, row.id).bind(2, row.flow_id).bind(3, row.direction).bind(4, as_int(row.fingerprint));
    st.bind(5, as_int(row.sightings)).bind(6, row.first_point).bind(7, row.last_point);
    st.bind(8, row.first_ts_ns).bind(9, row.last_ts_ns);
    bind(st, 10, row.related_id);
    if (row.related_id) st.bind(11, row.relation);
    else st.bind_null(11);
    st.bind(12, std::int64_t{row.ambiguous ? 1 : 0});
    bind(st, 13, row.loss_id);
    st.run();
    st.reset();
}

void CorrelationWriter::add(const RewriteRow& row) {
    result();
    if (!m_rewrite)
        m_rewrite.emplace(m_db.prepare(
            "INSERT INTO nat_rewrites (flow_id, direction, field, from_value, to_value, from_point, to_point, "
            "packets) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
    Statement& st = *m_rewrite;
    st.bind(1, row.flow_id).bind(2, row.direction).bind(3, row.field).bind(4, row.from).bind(5, row.to);
    st.bind(6, row.from_point).bind(7, row.to_point).bind(8, as_int(row.packets));
    st.run();
    st.reset();
}

void CorrelationWriter::add(const HopRow& row) {
    result();
    if (!m_hop)
        m_hop.emplace(m_db.prepare(
            "INSERT INTO hops (flow_id, direction, from_point, to_point, count, min_ns, p50_ns, p90_ns, p99_ns, "
            "max_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    Statement& st = *m_hop;
    bind(st, 1, row.flow_id);
    st.bind(2, row.direction).bind(3, row.from_point).bind(4, row.to_point).bind(5, as_int(row.count));
    st.bind(6, row.min_ns).bind(7, row.p50_ns).bind(8, row.p90_ns).bind(9, row.p99_ns).bind(10, row.max_ns);
    st.run();
    st.reset();
}

void CorrelationWriter::add(const LossRow& row) {
    result();
    if (!m_loss)
        m_loss.emplace(m_db.prepare(
            "INSERT INTO losses (flow_id, direction, after_point, expected_point, count, cause, error_journey, "
            "evidence_id, outside_window, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    Statement& st = *m_loss;
    st.bind(1, row.flow_id).bind(2, row.direction).bind(3, row.after_point).bind(4, row.expected_point);
    st.bind(5, as_int(row.count)).bind(6, row.cause);
    bind(st, 7, row.error_journey);
    bind(st, 8, row.evidence_id);
    st.bind(9, std::int64_t{row.outside_window ? 1 : 0});
    st.bind(10, row.id);
    st.run();
    st.reset();
}

void CorrelationWriter::set_path_order(std::span<const std::uint32_t> points) {
    result();
    auto order = m_db.prepare("UPDATE points SET path_order = ? WHERE id = ?");
    for (std::size_t i = 0; i < points.size(); ++i) {
        order.bind(1, static_cast<std::int64_t>(i)).bind(2, std::int64_t{points[i]});
        order.run();
        order.reset();
    }
}

void CorrelationWriter::commit() {
    result();
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    m_db.set_meta("correlated_ns", std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()));
    m_result->commit();
    m_result.reset();
}

}  // namespace hoptrace::store
