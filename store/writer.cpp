#include "store/writer.hpp"

#include "store/schema.hpp"

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

// The columns the writer fills, in parameter order; journey_id and hop stay NULL until correlate fills them.
constexpr const char* k_packet_columns =
    "point_id, ts_ns, cap_len, wire_len, direction, flags, ethertype, vlan, ip_version, proto, src, dst, sport, "
    "dport, ip_id, ttl, ip_len, icmp_type, icmp_code, icmp_id, icmp_seq, tcp_seq, tcp_ack, tcp_flags, payload_len, "
    "inner_proto, inner_src, inner_dst, inner_sport, inner_dport, inner_ttl, inner_ip_id, inner_seq, fingerprint, raw, "
    "frag_offset, icmp_mtu";
constexpr int k_insert_parameters = 37;

// Rows per execution of the multi-row INSERT. Executing a statement has a fixed cost (open a write cursor, seek
// the table's last row for the new rowid, halt, close, reset) that was about as large as inserting the row
// itself; 32 rows spread it thin while the statement stays small (1056 parameters).
constexpr std::size_t k_rows_per_insert = 32;

constexpr const char* k_count_point_sql = "UPDATE points SET packets = packets + ?1 WHERE id = ?2 RETURNING id";
// RETURNING tells whether the marker was where the rows' chunk starts: rows of a chunk another process already
// stored must not go in twice.
constexpr const char* k_advance_spool_sql =
    "UPDATE meta SET value = ?2 WHERE key = 'spool_stored_bytes' AND value = ?1 RETURNING key";

// k_rows_per_insert, or fewer when this SQLite allows fewer parameters per statement (999 before 3.32).
std::size_t rows_per_insert(const Database& db) noexcept {
    const int limit = sqlite3_limit(db.handle(), SQLITE_LIMIT_VARIABLE_NUMBER, -1);
    return std::clamp<std::size_t>(static_cast<std::size_t>(std::max(limit, 0) / k_insert_parameters), 1,
                                   k_rows_per_insert);
}

// "INSERT INTO packets (…) VALUES (?, …), (?, …) …" with `rows` rows; parameters are numbered row by row.
std::string insert_sql(std::size_t rows) {
    std::string sql = "INSERT INTO packets (";
    sql += k_packet_columns;
    sql += ") VALUES ";
    for (std::size_t row = 0; row < rows; ++row) {
        sql += row == 0 ? "(" : ", (";
        for (int column = 0; column < k_insert_parameters; ++column) {
            sql += column == 0 ? "?" : ", ?";
        }
        sql += ")";
    }
    return sql;
}

std::int64_t i64(std::uint64_t value) noexcept { return static_cast<std::int64_t>(value); }

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

// Inserts a batch's rows, k_rows_per_insert per execution of a multi-row INSERT (the rest one by one), binding
// only the parameters whose value the statement does not hold already. Bindings survive sqlite3_reset(), and a
// packet shares most of its 35 values with the packet one statement earlier (point, direction, protocol,
// addresses, ports, the NULLs of the other protocols), while each sqlite3_bind_*() takes the connection's mutex
// and releases the old value: binding every parameter made up ~40% of the writer thread's instructions.
// Addresses are formatted once per distinct address and bound SQLITE_STATIC from m_text. Used only by the
// writer thread, inside its transaction.
class Writer::PacketInserter {
public:
    explicit PacketInserter(Database& db)
        : m_db(db),
          m_path(db.path()),
          m_many(db.prepare(insert_sql(rows_per_insert(db))), rows_per_insert(db)),
          m_one(db.prepare(insert_sql(1)), 1) {}

    void insert(const PacketRows& batch) {
        if (!m_indexed) {
            // packets_point_ts grows with the rows instead of being built after the load (Database::build_indexes
            // then finds it). Rows arrive in time order per point, so each entry lands at the right edge of its
            // point's range: cheaper than a scan of the whole table and a sort afterwards (measured: 0.33 vs
            // 0.45 us of CPU per packet).
            // Here rather than in the constructor so that a read-only database fails in the writer like any write.
            m_db.exec(k_load_index_sql);
            m_indexed = true;
        }
        const std::size_t rows = batch.records.size();
        std::size_t i = 0;
        for (; rows - i >= m_many.rows; i += m_many.rows) {
            for (std::size_t row = 0; row < m_many.rows; ++row) {
                bind(m_many, row, batch, i + row);
            }
            m_many.stmt.run();
            m_many.stmt.rewind();  // keeps the bindings: the next rows rebind only what changed
        }
        for (; i < rows; ++i) {
            bind(m_one, 0, batch, i);
            m_one.stmt.run();
            m_one.stmt.rewind();
        }
        // The raw bindings point into this batch's bytes: drop every binding. With no address text bound any
        // more, this is also where the texts of a capture with very many addresses (a scan) may start over.
        m_many.forget();
        m_one.forget();
        if (m_text.size() > k_max_addresses) {
            m_text.clear();
        }
    }

private:
    static constexpr std::size_t k_max_addresses = 65536;

    enum class Kind : std::uint8_t { unknown, null, integer, text };
    struct Slot {
        Kind kind = Kind::unknown;
        std::int64_t value = 0;  // integer, or the Direction of a direction text
        IpAddr addr;             // an address text
    };
    // A prepared INSERT of `rows` rows and what each of its parameters is bound to.
    struct Shape {
        Shape(Statement statement, std::size_t row_count)
            : stmt(std::move(statement)), rows(row_count), slots(row_count * k_insert_parameters) {}
        void forget() {
            stmt.reset();
            std::fill(slots.begin(), slots.end(), Slot{});
        }
        Statement stmt;
        std::size_t rows;
        std::vector<Slot> slots;  // parameter n (1-based) is slots[n - 1]
    };

    // Binds record `index` of the batch as row `row` of the shape's statement.
    void bind(Shape& shape, std::size_t row, const PacketRows& batch, std::size_t index) {
        const PacketRecord& r = batch.records[index];
        const std::span<const std::uint8_t> raw(batch.bytes.data() + batch.offsets[index],
                                                batch.offsets[index + 1] - batch.offsets[index]);
        Binding b{*this, shape, static_cast<int>(row) * k_insert_parameters};
        b.integer(1, i64(r.point_id));
        b.integer(2, r.ts_ns);
        b.integer(3, i64(r.cap_len));
        b.integer(4, i64(r.wire_len));
        b.direction(5, r.direction);
        b.integer(6, i64(r.flags));
        b.integer(7, i64(r.ethertype));
        b.integer(8, i64(r.vlan));
        b.integer(9, i64(r.ip_version));
        b.integer(10, i64(r.proto));
        b.address(11, r.src);
        b.address(12, r.dst);
        b.integer(13, i64(r.sport));
        b.integer(14, i64(r.dport));
        b.integer(15, i64(r.ip_id));
        b.integer(16, i64(r.ttl));
        b.integer(17, i64(r.ip_len));
        // Columns that only mean something for one protocol are NULL elsewhere, so a query cannot mistake a
        // zero that was never on the wire for a value.
        if (r.proto == k_proto_icmp || r.proto == k_proto_icmpv6) {
            b.integer(18, i64(r.icmp_type));
            b.integer(19, i64(r.icmp_code));
            b.integer(20, i64(r.icmp_id));
            b.integer(21, i64(r.icmp_seq));
        } else {
            for (int column = 18; column <= 21; ++column) {
                b.null(column);
            }
        }
        if (r.proto == k_proto_tcp) {
            b.integer(22, i64(r.tcp_seq));
            b.integer(23, i64(r.tcp_ack));
            b.integer(24, i64(r.tcp_flags));
        } else {
            for (int column = 22; column <= 24; ++column) {
                b.null(column);
            }
        }
        b.integer(25, i64(r.payload_len));
        if ((r.flags & packet_flag::k_icmp_error) != 0 && r.inner_ip_version != 0) {
            b.integer(26, i64(r.inner_proto));
            b.address(27, r.inner_src);
            b.address(28, r.inner_dst);
            b.integer(29, i64(r.inner_sport));
            b.integer(30, i64(r.inner_dport));
            b.integer(31, i64(r.inner_ttl));
            if (r.inner_ip_version == 4) {
                b.integer(32, i64(r.inner_ip_id));
            } else {
                b.null(32);
            }
            if (r.has_inner_seq) {
                b.integer(33, i64(r.inner_seq));
            } else {
                b.null(33);
            }
        } else {
            for (int column = 26; column <= 33; ++column) {
                b.null(column);
            }
        }
        b.integer(34, std::bit_cast<std::int64_t>(r.fingerprint));
        b.raw(35, raw);
        b.integer(36, i64(r.frag_offset));
        if (r.icmp_mtu != 0) {
            b.integer(37, i64(r.icmp_mtu));
        } else {
            b.null(37);
        }
    }

    // One row's parameters: column c (1-based) of the row is parameter base + c.
    struct Binding {
        PacketInserter& inserter;
        Shape& shape;
        int base;

        [[nodiscard]] Slot& slot(int column) const noexcept {
            return shape.slots[static_cast<std::size_t>(base + column - 1)];
        }
        [[nodiscard]] sqlite3_stmt* handle() const noexcept { return shape.stmt.handle(); }

        void check(int column, int rc) const {
            if (rc != SQLITE_OK) {
                throw Error(inserter.m_path + ": cannot bind parameter " + std::to_string(base + column) +
                            " of the packet insert: " + sqlite3_errstr(rc));
            }
        }

        void integer(int column, std::int64_t value) const {
            Slot& s = slot(column);
            if (s.kind == Kind::integer && s.value == value) {
                return;
            }
            check(column, sqlite3_bind_int64(handle(), base + column, value));
            s.kind = Kind::integer;
            s.value = value;
        }

        void null(int column) const {
            Slot& s = slot(column);
            if (s.kind == Kind::null) {
                return;
            }
            check(column, sqlite3_bind_null(handle(), base + column));
            s.kind = Kind::null;
        }

        void static_text(int column, std::string_view text) const {
            // Never a null pointer (that would bind NULL); an empty string_view may carry one.
            check(column, sqlite3_bind_text64(handle(), base + column, text.data() != nullptr ? text.data() : "",
                                              text.size(), SQLITE_STATIC, SQLITE_UTF8));
        }

        void direction(int column, Direction d) const {
            Slot& s = slot(column);
            const auto value = static_cast<std::int64_t>(d);
            if (s.kind == Kind::text && s.value == value) {
                return;
            }
            static_text(column, to_string(d));  // a string literal
            s.kind = Kind::text;
            s.value = value;
        }

        void address(int column, const IpAddr& addr) const {
            Slot& s = slot(column);
            if (s.kind == Kind::text && s.addr == addr) {
                return;
            }
            auto it = inserter.m_text.find(addr);
            if (it == inserter.m_text.end()) {
                it = inserter.m_text.emplace(addr, addr.to_string()).first;
            }
            static_text(column, it->second);  // node-based map: the text stays put until insert() clears it
            s.kind = Kind::text;
            s.addr = addr;
        }

        // Always rebound: it points into the batch, which outlives the statement's use of it.
        void raw(int column, std::span<const std::uint8_t> bytes) const {
            static constexpr std::uint8_t k_empty = 0;  // never a null pointer: that would bind NULL, not x''
            check(column, sqlite3_bind_blob64(handle(), base + column, bytes.empty() ? &k_empty : bytes.data(),
                                              bytes.size(), SQLITE_STATIC));
        }
    };

    Database& m_db;
    std::string m_path;
    bool m_indexed = false;
    std::unordered_map<IpAddr, std::string, IpAddrHash> m_text;  // before the statements: outlives their bindings
    Shape m_many;
    Shape m_one;
};

Writer::Writer(Database& db, std::size_t batch_rows)
    : m_db(db),
      m_batch_rows(std::max<std::size_t>(batch_rows, 1)),
      m_inserter(std::make_unique<PacketInserter>(db)),
      m_count_point(db.prepare(k_count_point_sql)),
      m_advance_spool(db.prepare(k_advance_spool_sql)),
      m_queue(k_max_pending_batches, {.process = [this](Batch& batch) { write_batch(batch); },
                                      .done = [this](Batch& batch) { m_rows_written += batch.rows.size(); },
                                      .lost = {}}) {}

Writer::~Writer() {
    try {
        close();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented: call close() to see the error
    }
}

bool Writer::filling_is_full() const noexcept {
    return m_filling.rows.size() >= m_batch_rows || m_filling.rows.bytes.size() >= k_max_batch_bytes;
}

void Writer::enqueue_filling(Lock& lock, bool only_if_full) {
    m_queue.wait_for_room(lock);
    if (m_filling.empty() || (only_if_full && !filling_is_full())) {
        return;  // another thread handed this batch over while we waited
    }
    m_queue.push(lock, std::move(m_filling));  // there is room: the lock was held since the wait
    m_filling = Batch{};
    m_filling.rows.records.reserve(m_batch_rows);
    m_filling.rows.offsets.reserve(m_batch_rows + 1);
}

void Writer::enqueue_after_filling(Lock& lock, Batch batch) {
    m_queue.throw_if_failed(lock);
    if (m_closed) {
        throw Error(m_db.path() + ": rows added to a closed writer");
    }
    enqueue_filling(lock, false);  // what add() collected so far goes first
    m_queue.push(lock, std::move(batch));
}

void Writer::PacketRows::add(const PacketRecord& record, std::span<const std::uint8_t> raw) {
    if (bytes.size() + raw.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw Error("frame too large for a batch");  // cannot happen below k_max_batch_bytes or a chunk's size
    }
    records.push_back(record);
    bytes.insert(bytes.end(), raw.begin(), raw.end());
    offsets.push_back(static_cast<std::uint32_t>(bytes.size()));
}

void Writer::add_rows(PacketRows rows, std::uint64_t spool_from, std::uint64_t spool_to) {
    Batch batch;
    batch.rows = std::move(rows);
    batch.spooled.emplace(spool_from, spool_to);
    Lock lock = m_queue.lock();
    enqueue_after_filling(lock, std::move(batch));
}

void Writer::add(const PacketRecord& record, std::span<const std::uint8_t> raw) {
    Lock lock = m_queue.lock();
    m_queue.throw_if_failed(lock);
    if (m_closed) {
        throw Error(m_db.path() + ": packet added to a closed writer");
    }
    m_filling.rows.add(record, raw);
    if (filling_is_full()) {
        enqueue_filling(lock, true);
    }
}

void Writer::flush() {
    Lock lock = m_queue.lock();
    m_queue.throw_if_failed(lock);
    if (m_closed) {
        return;  // close() already wrote everything
    }
    enqueue_filling(lock, false);
    m_queue.drain(lock);
}

void Writer::close() {
    {
        Lock lock = m_queue.lock();
        if (!m_closed) {
            m_closed = true;  // add() refuses from now on, so m_filling only shrinks
            try {
                enqueue_filling(lock, false);
            } catch (...) {  // NOLINT(bugprone-empty-catch): the queue holds the failure; its close() rethrows it
            }
        }
    }
    m_queue.close();
}

std::uint64_t Writer::rows_written() const noexcept {
    const Lock lock = m_queue.lock();
    return m_rows_written;
}

std::size_t Writer::peak_pending_batches() const noexcept {
    const Lock lock = m_queue.lock();
    return m_queue.peak(lock);
}

void Writer::write_batch(const Batch& batch) {
    // Per-point counts of this batch; a batch usually holds one or a handful of points.
    std::vector<std::pair<std::uint32_t, std::int64_t>> per_point;
    for (const PacketRecord& record : batch.rows.records) {
        auto it = std::find_if(per_point.begin(), per_point.end(),
                               [&](const auto& entry) { return entry.first == record.point_id; });
        if (it == per_point.end()) {
            per_point.emplace_back(record.point_id, 1);
        } else {
            ++it->second;
        }
    }
    Transaction txn(m_db);
    if (!batch.rows.empty()) {
        m_inserter->insert(batch.rows);
    }
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
    if (batch.spooled) {
        const auto [from, to] = *batch.spooled;
        m_advance_spool.bind(1, std::to_string(from)).bind(2, std::to_string(to));
        const bool advanced = m_advance_spool.step();
        m_advance_spool.run();  // finish the statement: an UPDATE left in progress would make the COMMIT fail
        m_advance_spool.reset();
        if (!advanced) {
            throw Error(m_db.path() + ": the capture spool's bytes from " + std::to_string(from) +
                        " are stored already: another process stored them meanwhile (their rows were not added "
                        "twice)");
        }
    }
    txn.commit();
}

}  // namespace hoptrace::store
