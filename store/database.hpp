#pragma once
// RAII over SQLite: a Database (one connection), prepared Statements, scope-guard Transactions.
// Every SQLite return code is checked against its named constant; failures throw store::Error whose
// message names the database file and what SQLite said. Destructors never throw.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::store {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, bool disk_full = false)
        : std::runtime_error(message), m_disk_full(disk_full) {}
    // SQLite said SQLITE_FULL (or a write failed with ENOSPC/EDQUOT): the file system has no room left.
    [[nodiscard]] bool disk_full() const noexcept { return m_disk_full; }

private:
    bool m_disk_full = false;
};

struct SqliteCloser {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
    void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteCloser>;
using StatementPtr = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// A capture point as stored in the `points` table.
struct Point {
    std::int64_t id = 0;
    std::string name;
    std::string netns;
    std::string ifname;
    std::string role = "other";  // container | veth | bridge | uplink | other
    std::uint32_t ifindex = 0;
    std::uint32_t link_type = 0;
    std::string source;
    std::uint64_t packets = 0;
    std::uint64_t kernel_drops = 0;
    std::optional<int> path_order;
    std::string note;
    std::string role_evidence;  // how the role was found ("live topology", "given", "name veth…", "traffic: …")
    std::string addresses;      // the interface's addresses ("172.17.0.1/16 fd00:17::1/64"), live captures
    // An imported file's creation (statx btime) and last write (mtime): the capture that wrote it ran from no later
    // than the first to no earlier than the second. Unknown for live points (meta has the capture window).
    std::optional<std::int64_t> file_born_ns;
    std::optional<std::int64_t> file_written_ns;
    // False while an import is reading the point's file, true once it read it to its end (or to the damage that
    // ended it, which the import reported): a point left false was cut short (the import was killed).
    bool complete = true;
};

class Statement {
public:
    Statement(sqlite3* db, std::string_view sql);  // throws Error naming the SQL on failure

    // Binders take 1-based indexes, like sqlite3_bind_*.
    Statement& bind(int index, std::int64_t value);
    Statement& bind(int index, double value);
    Statement& bind(int index, std::string_view text);                     // SQLITE_TRANSIENT copy
    Statement& bind_blob(int index, std::span<const std::uint8_t> bytes);  // SQLITE_TRANSIENT copy
    Statement& bind_null(int index);
    // Like bind_blob, without the copy: `bytes` must stay valid until the statement has been stepped and then
    // reset() (or the parameter rebound). For the packet writer's hot loop.
    Statement& bind_blob_static(int index, std::span<const std::uint8_t> bytes);

    bool step();    // true: a row is ready; false: done. Throws Error on anything else.
    void run();     // step() until done, for statements without rows
    void reset();   // reset + clear bindings, ready for the next bind/step
    void rewind();  // reset, keeping the bindings: for loops that rebind every parameter of every row

    [[nodiscard]] std::int64_t column_int(int col) const;
    [[nodiscard]] double column_double(int col) const;
    [[nodiscard]] std::string column_text(int col) const;  // "" for NULL
    [[nodiscard]] bool column_is_null(int col) const;
    [[nodiscard]] std::span<const std::uint8_t> column_blob(int col) const;  // valid until the next step/reset

    [[nodiscard]] sqlite3_stmt* handle() const noexcept { return m_stmt.get(); }

private:
    sqlite3* m_db;
    StatementPtr m_stmt;
};

class Database {
public:
    // Opens (creating if needed) a hoptrace database: WAL journal, synchronous=NORMAL, foreign keys off for
    // bulk speed, schema created when new. Throws Error with a one-line message naming `path` when the file
    // cannot be opened, is not an SQLite database, or has a schema version newer than this build knows.
    static Database open(const std::string& path);
    static Database open_memory();  // for tests
    // Opens an existing hoptrace database for the commands that only read it (report, export): SQLITE_OPEN_READONLY,
    // so the file is never created, upgraded or changed (for a WAL file SQLite may leave FILE-wal and FILE-shm beside
    // it, as any reader does). Throws Error naming `path` when it cannot be opened or read, is not a hoptrace
    // database (an empty file included), or has a schema version other than this build's.
    static Database open_read_only(const std::string& path);
    // Whether the existing file `path` is a hoptrace database (of any schema version) with points in it, read
    // without changing it — before open() would upgrade an older one. False for anything else (open() says why).
    [[nodiscard]] static bool file_holds_points(const std::string& path);

    Database() = default;  // no connection (handle() == nullptr): a placeholder to move a database into
    Database(Database&&) noexcept = default;
    Database& operator=(Database&&) noexcept = default;
    ~Database() = default;

    [[nodiscard]] sqlite3* handle() const noexcept { return m_db.get(); }
    [[nodiscard]] const std::string& path() const noexcept { return m_path; }

    void exec(std::string_view sql);  // one or more statements, no rows
    [[nodiscard]] Statement prepare(std::string_view sql) const { return {m_db.get(), sql}; }

    // Points. add_point fails (Error naming the point) if the name is taken; find_point looks one up by name.
    std::int64_t add_point(const Point& point);
    [[nodiscard]] std::optional<Point> find_point(std::string_view name) const;
    [[nodiscard]] std::vector<Point> points() const;  // ordered by path_order (NULLs last), then id
    void update_point(const Point& point);            // every column but id and name, by id

    void set_meta(std::string_view key, std::string_view value);
    [[nodiscard]] std::optional<std::string> meta(std::string_view key) const;
    void remove_meta(std::string_view key);

    // Begins a read transaction that lasts as long as the connection (report, export): one WAL snapshot, so a
    // correlate that runs meanwhile (in batches) is never half seen.
    void begin_snapshot();
    // Deletes every packet, point, conntrack dump and meta row (a capture that failed to start, on a file it
    // did not create), in one transaction.
    void clear();

    void build_indexes();  // store/schema.hpp k_index_sql

private:
    Database(SqlitePtr db, std::string path);
    SqlitePtr m_db;
    std::string m_path;
};

// BEGIN IMMEDIATE on construction; ROLLBACK in the destructor unless commit() ran.
// While it is open the transaction also holds the connection's mutex, so other threads using the same Database
// (the Writer's thread, or the main thread while a Writer runs) wait for it instead of having their statements
// land inside it, or failing to BEGIN their own. So: never wait for a Writer (flush, close, a blocking add)
// while holding a Transaction on its Database.
class Transaction {
public:
    explicit Transaction(Database& db);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& m_db;
    bool m_done = false;
};

}  // namespace hoptrace::store
