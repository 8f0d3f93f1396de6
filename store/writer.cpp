#include "store/writer.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
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

constexpr int k_insert_parameters = 33;

struct IpAddrHash {
    std::size_t operator()(const IpAddr& addr) const noexcept {
        std::uint64_t lo = 0;
        std::uint64_t hi = 0;
        std::memcpy(&lo, addr.bytes.data(), sizeof lo);
        std::memcpy(&hi, addr.bytes.data() + sizeof lo, sizeof hi);
        const std::uint64_t mixed = (lo ^ (hi * 0x9e3779b97f4a7c15ULL) ^ addr.family) * 0xff51afd7ed558ccdULL;
        return static_cast<std::size_t>(mixed ^ (mixed >> 32));
    }
};

}  // namespace

// Binds the INSERT's parameters, skipping every one whose value the statement already holds. Bindings survive
// sqlite3_reset(), and a packet shares most of its 33 values with the one before (point, direction, protocol,
// addresses, ports, the NULLs of the other protocols), while each sqlite3_bind_*() takes the connection's mutex
// and releases the old value: binding all of them made up ~40% of the writer thread's instructions.
// Addresses are formatted once per distinct address and bound SQLITE_STATIC from here, which outlives the
// statement's use of them (see forget()). Used only by the writer thread.
class Writer::PacketBinder {
public:
    explicit PacketBinder(Statement& stmt) noexcept : m_stmt(stmt) {}

    void bind(const PacketRecord& r, std::span<const std::uint8_t> raw) {
        integer(1, i64(r.point_id));
        integer(2, r.ts_ns);
        integer(3, i64(r.cap_len));
        integer(4, i64(r.wire_len));
        direction(5, r.direction);
        integer(6, i64(r.flags));
        integer(7, i64(r.ethertype));
        integer(8, i64(r.vlan));
        integer(9, i64(r.ip_version));
        integer(10, i64(r.proto));
        address(11, r.src);
        address(12, r.dst);
        integer(13, i64(r.sport));
        integer(14, i64(r.dport));
        integer(15, i64(r.ip_id));
        integer(16, i64(r.ttl));
        integer(17, i64(r.ip_len));
        // Columns that only mean something for one protocol are NULL elsewhere, so a query cannot mistake a
        // zero that was never on the wire for a value.
        if (r.proto == k_proto_icmp || r.proto == k_proto_icmpv6) {
            integer(18, i64(r.icmp_type));
            integer(19, i64(r.icmp_code));
            integer(20, i64(r.icmp_id));
            integer(21, i64(r.icmp_seq));
        } else {
            null(18);
            null(19);
            null(20);
            null(21);
        }
        if (r.proto == k_proto_tcp) {
            integer(22, i64(r.tcp_seq));
            integer(23, i64(r.tcp_ack));
            integer(24, i64(r.tcp_flags));
        } else {
            null(22);
            null(23);
            null(24);
        }
        integer(25, i64(r.payload_len));
        if ((r.flags & packet_flag::k_icmp_error) != 0 && r.inner_ip_version != 0) {
            integer(26, i64(r.inner_proto));
            address(27, r.inner_src);
            address(28, r.inner_dst);
            integer(29, i64(r.inner_sport));
            integer(30, i64(r.inner_dport));
            integer(31, i64(r.inner_ttl));
        } else {
            for (int index = 26; index <= 31; ++index) {
                null(index);
            }
        }
        integer(32, std::bit_cast<std::int64_t>(r.fingerprint));
        // Always rebound: it points into the batch, which outlives the row (never an empty pointer: that would
        // bind NULL instead of an empty blob).
        static constexpr std::uint8_t k_empty = 0;
        check(33, sqlite3_bind_blob64(m_stmt.handle(), 33, raw.empty() ? &k_empty : raw.data(), raw.size(),
                                      SQLITE_STATIC));
    }

    // The statement's bindings were cleared (Statement::reset): nothing is known to be bound any more. Only now,
    // with no address text bound, may the address texts be dropped.
    void forget() noexcept {
        m_slots.fill(Slot{});
        if (m_text.size() > k_max_addresses) {
            m_text.clear();
        }
    }

private:
    // A capture with more distinct addresses than this (a scan) starts over between batches.
    static constexpr std::size_t k_max_addresses = 65536;

    enum class Kind : std::uint8_t { unknown, null, integer, text };
    struct Slot {
        Kind kind = Kind::unknown;
        std::int64_t value = 0;  // integer, or the Direction of a direction text
        IpAddr addr;             // an address text
    };

    Slot& slot(int index) noexcept { return m_slots[static_cast<std::size_t>(index - 1)]; }

    void check(int index, int rc) const {
        if (rc != SQLITE_OK) {
            throw Error(std::string(sqlite3_db_filename(sqlite3_db_handle(m_stmt.handle()), "main")) +
                        ": cannot bind parameter " + std::to_string(index) + " of the packet insert: " +
                        sqlite3_errstr(rc));
        }
    }

    void integer(int index, std::int64_t value) {
        Slot& s = slot(index);
        if (s.kind == Kind::integer && s.value == value) {
            return;
        }
        check(index, sqlite3_bind_int64(m_stmt.handle(), index, value));
        s.kind = Kind::integer;
        s.value = value;
    }

    void null(int index) {
        Slot& s = slot(index);
        if (s.kind == Kind::null) {
            return;
        }
        check(index, sqlite3_bind_null(m_stmt.handle(), index));
        s.kind = Kind::null;
    }

    void static_text(int index, std::string_view text) {
        // Never a null pointer (that would bind NULL); an empty string_view may carry one.
        check(index, sqlite3_bind_text64(m_stmt.handle(), index, text.data() != nullptr ? text.data() : "",
                                         text.size(), SQLITE_STATIC, SQLITE_UTF8));
    }

    void direction(int index, Direction d) {
        Slot& s = slot(index);
        const auto value = static_cast<std::int64_t>(d);
        if (s.kind == Kind::text && s.value == value) {
            return;
        }
        static_text(index, to_string(d));  // a string literal
        s.kind = Kind::text;
        s.value = value;
    }

    void address(int index, const IpAddr& addr) {
        Slot& s = slot(index);
        if (s.kind == Kind::text && s.addr == addr) {
            return;
        }
        auto it = m_text.find(addr);
        if (it == m_text.end()) {
            it = m_text.emplace(addr, addr.to_string()).first;
        }
        static_text(index, it->second);  // node-based map: the text stays put until forget() drops it
        s.kind = Kind::text;
        s.addr = addr;
    }

    Statement& m_stmt;
    std::array<Slot, k_insert_parameters> m_slots{};
    std::unordered_map<IpAddr, std::string, IpAddrHash> m_text;
};

Writer::Writer(Database& db, std::size_t batch_rows)
    : m_db(db),
      m_batch_rows(std::max<std::size_t>(batch_rows, 1)),
      m_insert_packet(db.prepare(k_insert_packet_sql)),
      m_count_point(db.prepare(k_count_point_sql)),
      m_binder(std::make_unique<PacketBinder>(m_insert_packet)) {
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
    Transaction txn(m_db);
    for (std::size_t i = 0; i < batch.records.size(); ++i) {
        const PacketRecord& record = batch.records[i];
        const std::span<const std::uint8_t> raw(batch.bytes.data() + batch.offsets[i],
                                                batch.offsets[i + 1] - batch.offsets[i]);
        m_binder->bind(record, raw);
        m_insert_packet.run();
        m_insert_packet.rewind();  // keeps the bindings: the binder rebinds only what changed
        auto it = std::find_if(per_point.begin(), per_point.end(),
                               [&](const auto& entry) { return entry.first == record.point_id; });
        if (it == per_point.end()) {
            per_point.emplace_back(record.point_id, 1);
        } else {
            ++it->second;
        }
    }
    m_insert_packet.reset();  // drop the bindings that point into this batch's bytes
    m_binder->forget();
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
