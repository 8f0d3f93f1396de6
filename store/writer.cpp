#include "store/writer.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <string>
#include <utility>

namespace hoptrace::store {

namespace {

constexpr std::uint8_t k_proto_icmp = 1;
constexpr std::uint8_t k_proto_tcp = 6;
constexpr std::uint8_t k_proto_icmpv6 = 58;

// Column order of the INSERT below; journey_id and hop stay NULL until correlate fills them.
constexpr const char* k_insert_packet_sql =
    "INSERT INTO packets (point_id, ts_ns, cap_len, wire_len, direction, flags, ethertype, vlan, ip_version, proto, "
    "src, dst, sport, dport, ip_id, ttl, ip_len, icmp_type, icmp_code, icmp_id, icmp_seq, tcp_seq, tcp_ack, "
    "tcp_flags, payload_len, inner_proto, inner_src, inner_dst, inner_sport, inner_dport, inner_ttl, fingerprint, "
    "raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, "
    "?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)";

constexpr const char* k_count_point_sql = "UPDATE points SET packets = packets + ?1 WHERE id = ?2 RETURNING id";

std::int64_t i64(std::uint64_t value) noexcept { return static_cast<std::int64_t>(value); }

// The text of recently seen addresses. A capture repeats a handful of addresses over and over, and
// formatting one (inet_ntop) costs more than the rest of the row's binding.
class AddressText {
public:
    const std::string& operator()(const IpAddr& addr) {
        for (const Entry& entry : m_entries) {
            if (entry.valid && entry.addr == addr) {
                return entry.text;
            }
        }
        Entry& entry = m_entries[m_next];
        m_next = (m_next + 1) % m_entries.size();
        entry.valid = true;
        entry.addr = addr;
        entry.text = addr.to_string();
        return entry.text;
    }

private:
    struct Entry {
        bool valid = false;
        IpAddr addr;
        std::string text;
    };
    std::array<Entry, 8> m_entries;
    std::size_t m_next = 0;
};

void bind_packet(Statement& stmt, AddressText& text, const PacketRecord& r, std::span<const std::uint8_t> raw) {
    stmt.bind(1, i64(r.point_id))
        .bind(2, r.ts_ns)
        .bind(3, i64(r.cap_len))
        .bind(4, i64(r.wire_len))
        .bind(5, to_string(r.direction))
        .bind(6, i64(r.flags))
        .bind(7, i64(r.ethertype))
        .bind(8, i64(r.vlan))
        .bind(9, i64(r.ip_version))
        .bind(10, i64(r.proto))
        .bind(11, std::string_view(text(r.src)))
        .bind(12, std::string_view(text(r.dst)))
        .bind(13, i64(r.sport))
        .bind(14, i64(r.dport))
        .bind(15, i64(r.ip_id))
        .bind(16, i64(r.ttl))
        .bind(17, i64(r.ip_len));
    // Columns that only mean something for one protocol are NULL elsewhere, so a query cannot mistake a
    // zero that was never on the wire for a value.
    if (r.proto == k_proto_icmp || r.proto == k_proto_icmpv6) {
        stmt.bind(18, i64(r.icmp_type)).bind(19, i64(r.icmp_code)).bind(20, i64(r.icmp_id)).bind(21, i64(r.icmp_seq));
    } else {
        stmt.bind_null(18).bind_null(19).bind_null(20).bind_null(21);
    }
    if (r.proto == k_proto_tcp) {
        stmt.bind(22, i64(r.tcp_seq)).bind(23, i64(r.tcp_ack)).bind(24, i64(r.tcp_flags));
    } else {
        stmt.bind_null(22).bind_null(23).bind_null(24);
    }
    stmt.bind(25, i64(r.payload_len));
    if ((r.flags & packet_flag::k_icmp_error) != 0 && r.inner_ip_version != 0) {
        stmt.bind(26, i64(r.inner_proto))
            .bind(27, std::string_view(text(r.inner_src)))
            .bind(28, std::string_view(text(r.inner_dst)))
            .bind(29, i64(r.inner_sport))
            .bind(30, i64(r.inner_dport))
            .bind(31, i64(r.inner_ttl));
    } else {
        stmt.bind_null(26).bind_null(27).bind_null(28).bind_null(29).bind_null(30).bind_null(31);
    }
    stmt.bind(32, std::bit_cast<std::int64_t>(r.fingerprint));
    stmt.bind_blob_static(33, raw);  // the batch outlives the row
}

}  // namespace

Writer::Writer(Database& db, std::size_t batch_rows)
    : m_db(db),
      m_batch_rows(std::max<std::size_t>(batch_rows, 1)),
      m_insert_packet(db.prepare(k_insert_packet_sql)),
      m_count_point(db.prepare(k_count_point_sql)) {
    m_filling.offsets.push_back(0);
    m_thread = std::thread([this] { run(); });
}

Writer::~Writer() {
    try {
        close();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented: call close() to see the error
    }
}

bool Writer::filling_is_full() const noexcept {
    return m_filling.records.size() >= m_batch_rows || m_filling.bytes.size() >= k_max_batch_bytes;
}

void Writer::enqueue_filling(std::unique_lock<std::mutex>& lock, bool only_if_full) {
    m_cv_space.wait(lock, [this] { return m_pending.size() < k_max_pending_batches || m_error != nullptr; });
    if (m_error != nullptr) {
        std::rethrow_exception(m_error);
    }
    if (m_filling.records.empty() || (only_if_full && !filling_is_full())) {
        return;  // another thread handed this batch over while we waited
    }
    m_pending.push_back(std::move(m_filling));
    m_filling = Batch{};
    m_filling.records.reserve(m_batch_rows);
    m_filling.offsets.reserve(m_batch_rows + 1);
    m_filling.offsets.push_back(0);
    ++m_enqueued_batches;
    m_peak_pending = std::max(m_peak_pending, m_pending.size());
    m_cv_work.notify_one();
}

void Writer::add(const PacketRecord& record, std::span<const std::uint8_t> raw) {
    std::unique_lock lock(m_mutex);
    if (m_error != nullptr) {
        std::rethrow_exception(m_error);
    }
    if (m_closed) {
        throw Error(m_db.path() + ": packet added to a closed writer");
    }
    if (m_filling.bytes.size() + raw.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw Error(m_db.path() + ": frame too large for a batch");  // cannot happen below k_max_batch_bytes
    }
    m_filling.records.push_back(record);
    m_filling.bytes.insert(m_filling.bytes.end(), raw.begin(), raw.end());
    m_filling.offsets.push_back(static_cast<std::uint32_t>(m_filling.bytes.size()));
    if (filling_is_full()) {
        enqueue_filling(lock, true);
    }
}

void Writer::flush() {
    std::unique_lock lock(m_mutex);
    if (m_error != nullptr) {
        std::rethrow_exception(m_error);
    }
    if (m_closed) {
        return;  // close() already wrote everything
    }
    enqueue_filling(lock, false);
    const std::uint64_t target = m_enqueued_batches;
    m_cv_space.wait(lock, [&] { return m_written_batches >= target || m_error != nullptr; });
    if (m_error != nullptr) {
        std::rethrow_exception(m_error);
    }
}

void Writer::close() {
    {
        std::unique_lock lock(m_mutex);
        if (!m_closed) {
            m_closed = true;  // add() refuses from now on, so m_filling only shrinks
            if (m_error == nullptr) {
                try {
                    enqueue_filling(lock, false);
                } catch (...) {  // NOLINT(bugprone-empty-catch): m_error holds it; rethrown below after the join
                }
            }
            m_stop = true;
            m_cv_work.notify_all();
        }
    }
    if (m_thread.joinable()) {
        m_thread.join();
    }
    const std::lock_guard lock(m_mutex);
    if (m_error != nullptr) {
        std::rethrow_exception(m_error);
    }
}

std::uint64_t Writer::rows_written() const noexcept {
    const std::lock_guard lock(m_mutex);
    return m_rows_written;
}

std::size_t Writer::peak_pending_batches() const noexcept {
    const std::lock_guard lock(m_mutex);
    return m_peak_pending;
}

void Writer::run() noexcept {
    for (;;) {
        Batch batch;
        {
            std::unique_lock lock(m_mutex);
            m_cv_work.wait(lock, [this] { return !m_pending.empty() || m_stop; });
            if (m_pending.empty()) {
                return;  // stopped, and everything handed over is written
            }
            batch = std::move(m_pending.front());
            m_pending.pop_front();
            m_cv_space.notify_all();
        }
        try {
            write_batch(batch);
        } catch (...) {
            const std::lock_guard lock(m_mutex);
            m_error = std::current_exception();
            m_pending.clear();
            m_cv_space.notify_all();  // producers waiting for room, flush() and close() see the error
            return;
        }
        const std::lock_guard lock(m_mutex);
        ++m_written_batches;
        m_rows_written += batch.records.size();
        m_cv_space.notify_all();
    }
}

void Writer::write_batch(const Batch& batch) {
    // Per-point counts of this batch; a batch usually holds one or a handful of points.
    std::vector<std::pair<std::uint32_t, std::int64_t>> per_point;
    AddressText text;
    Transaction txn(m_db);
    for (std::size_t i = 0; i < batch.records.size(); ++i) {
        const PacketRecord& record = batch.records[i];
        const std::span<const std::uint8_t> raw(batch.bytes.data() + batch.offsets[i],
                                                batch.offsets[i + 1] - batch.offsets[i]);
        bind_packet(m_insert_packet, text, record, raw);
        m_insert_packet.run();
        m_insert_packet.rewind();  // every parameter is bound again for the next row
        auto it = std::find_if(per_point.begin(), per_point.end(),
                               [&](const auto& entry) { return entry.first == record.point_id; });
        if (it == per_point.end()) {
            per_point.emplace_back(record.point_id, 1);
        } else {
            ++it->second;
        }
    }
    m_insert_packet.reset();  // drop the bindings that point into this batch's bytes
    for (const auto& [point_id, count] : per_point) {
        m_count_point.bind(1, count).bind(2, static_cast<std::int64_t>(point_id));
        const bool known = m_count_point.step();
        m_count_point.reset();
        if (!known) {
            // Foreign keys are off for speed, so this is where a packet for a point nobody added is caught.
            throw Error(m_db.path() + ": packets for point id " + std::to_string(point_id) +
                        ", which is not in the points table");
        }
    }
    txn.commit();
}

}  // namespace hoptrace::store
