#pragma once
// What `hoptrace correlate` reads from the store and writes back, as typed rows: the packets' dissected fields,
// the conntrack dumps and the points' capture windows in; every packet's journey and hop, and the flows, journeys,
// rewrites, hop statistics, losses and path order out (docs/schema.md). The only correlation-side SQL.

#include "store/database.hpp"
#include "tracer/conntrack.hpp"
#include "tracer/packet.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hoptrace::store {

// One dissected packet (fingerprint != 0) as stored: the columns the matcher reads, with the addresses parsed
// (an address the store holds as text that does not parse is the empty IpAddr).
struct PacketFields {
    std::int64_t packet_id = 0;
    std::uint32_t point = 0;
    std::int64_t ts_ns = 0;
    std::uint64_t fingerprint = 0;
    std::uint32_t flags = 0;  // tracer/packet.hpp packet_flag
    std::uint8_t proto = 0;
    IpAddr src;
    IpAddr dst;
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;
    std::uint8_t icmp_type = 0;
    std::uint8_t icmp_code = 0;
    std::uint16_t icmp_id = 0;
    // The packet an ICMP error quotes, when it quotes one.
    std::optional<std::uint8_t> inner_proto;
    IpAddr inner_src;
    IpAddr inner_dst;
    std::uint16_t inner_sport = 0;
    std::uint16_t inner_dport = 0;
    std::optional<std::uint16_t> inner_ip_id;
    std::optional<std::uint32_t> inner_seq;
    std::uint8_t ttl = 0;
    std::uint8_t tcp_flags = 0;
    std::uint16_t ip_id = 0;
    std::uint32_t seq = 0;  // TCP sequence or ICMP echo sequence, 0 when neither
    std::uint32_t ack = 0;
    std::uint32_t payload_len = 0;
    std::uint32_t ip_len = 0;
    std::uint16_t frag_offset = 0;
    std::uint32_t icmp_mtu = 0;
};

// How many dissected packets there are, and each of them in id order.
[[nodiscard]] std::size_t count_dissected_packets(const Database& db);
void for_each_dissected_packet(const Database& db, const std::function<void(const PacketFields&)>& visit);

// The distinct entries of every conntrack dump (store/conntrack.hpp wrote them).
[[nodiscard]] std::vector<ConntrackEntry> conntrack_entries(const Database& db);

// Per point id: the first and the last packet's timestamp.
[[nodiscard]] std::map<std::uint32_t, std::pair<std::int64_t, std::int64_t>> packet_windows(const Database& db);

// Ids below are the stored ones (1-based); a NULL column is an empty optional.
struct AddressTuple {
    std::string src;
    std::string dst;
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;
};

struct FlowRow {
    std::int64_t id = 0;
    std::uint8_t proto = 0;
    AddressTuple original;
    AddressTuple translated;
    std::uint64_t packets = 0;
    std::uint64_t journeys = 0;
    std::int64_t first_ts_ns = 0;
    std::int64_t last_ts_ns = 0;
};

struct JourneyRow {
    std::int64_t id = 0;
    std::int64_t flow_id = 0;
    std::string direction;
    std::uint64_t fingerprint = 0;
    std::uint64_t sightings = 0;
    std::int64_t first_point = 0;
    std::int64_t last_point = 0;
    std::int64_t first_ts_ns = 0;
    std::int64_t last_ts_ns = 0;
    std::optional<std::int64_t> related_id;  // with `relation`
    std::string relation;
    bool ambiguous = false;
    std::optional<std::int64_t> loss_id;  // the loss it is one of
};

struct RewriteRow {
    std::int64_t flow_id = 0;
    std::string direction;
    std::string field;
    std::string from;
    std::string to;
    std::int64_t from_point = 0;
    std::int64_t to_point = 0;
    std::uint64_t packets = 0;
};

struct HopRow {
    std::optional<std::int64_t> flow_id;  // empty: the totals over every flow
    std::string direction;
    std::int64_t from_point = 0;
    std::int64_t to_point = 0;
    std::uint64_t count = 0;
    std::int64_t min_ns = 0;
    std::int64_t p50_ns = 0;
    std::int64_t p90_ns = 0;
    std::int64_t p99_ns = 0;
    std::int64_t max_ns = 0;
};

struct LossRow {
    std::int64_t id = 0;
    std::int64_t flow_id = 0;
    std::string direction;
    std::int64_t after_point = 0;
    std::int64_t expected_point = 0;
    std::uint64_t count = 0;
    std::string cause;
    std::optional<std::int64_t> error_journey;
    std::optional<std::int64_t> evidence_id;
    bool outside_window = false;
};

// A packet's place in its journey: `hop` empty for an observer (a bridge that saw a frame it switched between
// two ports belongs to the journey but is no hop of it).
struct Assignment {
    std::int64_t packet_id = 0;
    std::int64_t journey_id = 0;
    std::optional<std::int64_t> hop;
};

// Writes one correlation, replacing the last. Construction clears it: meta's correlated_ns first (so a correlate
// killed before commit() leaves a database that report calls "not correlated yet"), then every result table and
// every packet's journey and hop, in transactions of a bounded number of packet rows (the WAL, and the room it
// takes, stays a few MiB however large the capture; each packet row holds its frame). Then assign() sets the
// packets' journeys in the same bounded transactions; the rows after it go into one transaction that commit()
// ends by setting correlated_ns. The packets' journey index is rebuilt by the caller (Database::build_indexes).
class CorrelationWriter {
public:
    explicit CorrelationWriter(Database& db);
    CorrelationWriter(const CorrelationWriter&) = delete;
    CorrelationWriter& operator=(const CorrelationWriter&) = delete;
    ~CorrelationWriter();

    // In packet id order (rows are visited in rowid order: visiting the frames' table in journey order would
    // touch its pages at random).
    void assign(std::span<const Assignment> by_packet_id);

    void add(const FlowRow& row);
    void add(const JourneyRow& row);
    void add(const RewriteRow& row);
    void add(const HopRow& row);
    void add(const LossRow& row);
    void set_path_order(std::span<const std::uint32_t> points);  // points.path_order = position
    void commit();

private:
    Transaction& result();  // the result tables' transaction, begun at the first row

    Database& m_db;
    std::optional<Transaction> m_result;
    std::optional<Statement> m_flow;
    std::optional<Statement> m_journey;
    std::optional<Statement> m_rewrite;
    std::optional<Statement> m_hop;
    std::optional<Statement> m_loss;
};

}  // namespace hoptrace::store
