#include "store/database.hpp"

#include "store/private_file.hpp"
#include "store/schema.hpp"

#include <cstddef>
#include <string>
#include <utility>

namespace hoptrace::store {

namespace {

// The connection is opened SQLITE_OPEN_FULLMUTEX, so every call is serialised on the connection's (recursive)
// mutex, but sqlite3_errmsg() read after a failed call could already describe another thread's call. Holding
// the mutex across "call + read the message" keeps the message ours. For connections without a mutex
// sqlite3_db_mutex() returns nullptr and these are no-ops.
class ConnectionLock {
public:
    explicit ConnectionLock(sqlite3* db) noexcept : m_mutex(sqlite3_db_mutex(db)) { sqlite3_mutex_enter(m_mutex); }
    ConnectionLock(const ConnectionLock&) = delete;
    ConnectionLock& operator=(const ConnectionLock&) = delete;
    ~ConnectionLock() { sqlite3_mutex_leave(m_mutex); }

private:
    sqlite3_mutex* m_mutex;
};

// How errors name a connection: the path it was opened with for Database, the file SQLite resolved for
// Statements (which only see the handle).
std::string connection_name(sqlite3* db) {
    const char* file = db != nullptr ? sqlite3_db_filename(db, "main") : nullptr;
    if (file == nullptr || *file == '\0') {
        return ":memory:";
    }
    return file;
}

// Appends instead of `"literal" + std::string&&`, which GCC 12 at -O2 flags with a false -Wrestrict.
template <typename... Parts>
std::string concat(const Parts&... parts) {
    std::string out;
    (out.append(std::string_view(parts)), ...);
    return out;
}

std::string one_line(std::string_view text) {
    std::string line(text);
    for (char& c : line) {
        if (c == '\n' || c == '\r' || c == '\t') {
            c = ' ';
        }
    }
    // Trim the runs of spaces the SQL's own indentation leaves.
    std::string out;
    out.reserve(line.size());
    for (char c : line) {
        if (c == ' ' && (out.empty() || out.back() == ' ')) {
            continue;
        }
        out.push_back(c);
    }
    while (!out.empty() && out.back() == ' ') {
        out.pop_back();
    }
    // An error line quotes the SQL so that a person can find it; the writer's 32-row INSERT would fill a screen.
    constexpr std::size_t k_max_quoted = 160;
    if (out.size() > k_max_quoted) {
        out.resize(k_max_quoted);
        out += " …";
    }
    return out;
}

[[noreturn]] void fail(std::string_view name, std::string_view what, std::string_view sqlite_message, int rc = 0) {
    std::string message(name);
    message += ": ";
    message += what;
    if (!sqlite_message.empty()) {
        message += ": ";
        message += sqlite_message;
    }
    throw Error(one_line(message), (rc & 0xff) == SQLITE_FULL);
}

void check_bind(sqlite3_stmt* stmt, int rc, int index) {
    if (rc != SQLITE_OK) {
        sqlite3* db = sqlite3_db_handle(stmt);
        fail(connection_name(db),
             concat("cannot bind parameter ", std::to_string(index), " of '", one_line(sqlite3_sql(stmt)), "'"),
             sqlite3_errstr(rc));
    }
}

// Runs SQL text that returns no rows we care about; returns the SQLite result code and, on failure, the message.
int exec_raw(sqlite3* db, const std::string& sql, std::string& error) {
    ConnectionLock lock(db);
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
        error = message != nullptr ? message : sqlite3_errmsg(db);
    }
    sqlite3_free(message);
    return rc;
}

constexpr const char* k_point_columns =
    "id, name, netns, ifname, role, ifindex, link_type, source, packets, kernel_drops, path_order, note, "
    "role_evidence, addresses, file_born_ns, "
    "file_written_ns, complete";

Point read_point(const Statement& stmt) {
    Point point;
    point.id = stmt.column_int(0);
    point.name = stmt.column_text(1);
    point.netns = stmt.column_text(2);
    point.ifname = stmt.column_text(3);
    point.role = stmt.column_text(4);
    point.ifindex = static_cast<std::uint32_t>(stmt.column_int(5));
    point.link_type = static_cast<std::uint32_t>(stmt.column_int(6));
    point.source = stmt.column_text(7);
    point.packets = static_cast<std::uint64_t>(stmt.column_int(8));
    point.kernel_drops = static_cast<std::uint64_t>(stmt.column_int(9));
    if (!stmt.column_is_null(10)) {
        point.path_order = static_cast<int>(stmt.column_int(10));
    }
    point.note = stmt.column_text(11);
    point.role_evidence = stmt.column_text(12);
    point.addresses = stmt.column_text(13);
    if (!stmt.column_is_null(14)) point.file_born_ns = stmt.column_int(14);
    if (!stmt.column_is_null(15)) point.file_written_ns = stmt.column_int(15);
    point.complete = stmt.column_int(16) != 0;
    return point;
}

// Binds every column but id and name, as parameters 1..10, 12 (role_evidence) and 13 (addresses).
void bind_point_fields(Statement& stmt, const Point& point) {
    stmt.bind(1, std::string_view(point.netns))
        .bind(2, std::string_view(point.ifname))
        .bind(3, std::string_view(point.role))
        .bind(4, static_cast<std::int64_t>(point.ifindex))
        .bind(5, static_cast<std::int64_t>(point.link_type))
        .bind(6, std::string_view(point.source))
        .bind(7, static_cast<std::int64_t>(point.packets))
        .bind(8, static_cast<std::int64_t>(point.kernel_drops));
    if (point.path_order) {
        stmt.bind(9, static_cast<std::int64_t>(*point.path_order));
    } else {
        stmt.bind_null(9);
    }
    stmt.bind(10, std::string_view(point.note));
    stmt.bind(12, std::string_view(point.role_evidence));
    stmt.bind(13, std::string_view(point.addresses));
    if (point.file_born_ns) stmt.bind(14, *point.file_born_ns);
    else stmt.bind_null(14);
    if (point.file_written_ns) stmt.bind(15, *point.file_written_ns);
    else stmt.bind_null(15);
    stmt.bind(16, std::int64_t{point.complete ? 1 : 0});
}

// What an existing file holds, read before we change anything in it (a foreign SQLite file must not be
// switched to WAL or get our tables).
struct FileState {
    int user_version = 0;
    int tables = 0;
    bool has_points = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Statement

Statement::Statement(sqlite3* db, std::string_view sql) : m_db(db) {
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = SQLITE_OK;
    std::string message;
    {
        ConnectionLock lock(db);
        rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, &tail);
        if (rc != SQLITE_OK) {
            message = sqlite3_errmsg(db);
        }
    }
    m_stmt.reset(stmt);
    if (rc != SQLITE_OK) {
        fail(connection_name(db), concat("cannot prepare '", one_line(sql), "'"), message);
    }
    if (m_stmt == nullptr) {
        fail(connection_name(db), concat("no SQL statement in '", one_line(sql), "'"), "");
    }
    const std::string_view rest = sql.substr(static_cast<std::size_t>(tail - sql.data()));
    if (rest.find_first_not_of(" \t\r\n;") != std::string_view::npos) {
        fail(connection_name(db), concat("more than one SQL statement in '", one_line(sql), "' (use Database::exec)"),
             "");
    }
}

Statement& Statement::bind(int index, std::int64_t value) {
    check_bind(m_stmt.get(), sqlite3_bind_int64(m_stmt.get(), index, value), index);
    return *this;
}

Statement& Statement::bind(int index, double value) {
    check_bind(m_stmt.get(), sqlite3_bind_double(m_stmt.get(), index, value), index);
    return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
    // A null pointer would bind SQL NULL; an empty string_view may carry one.
    const char* data = text.data() != nullptr ? text.data() : "";
    check_bind(m_stmt.get(), sqlite3_bind_text64(m_stmt.get(), index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
               index);
    return *this;
}

Statement& Statement::bind_blob(int index, std::span<const std::uint8_t> bytes) {
    int rc = SQLITE_OK;
    if (bytes.empty()) {
        // A null pointer would bind SQL NULL; an empty frame is an empty blob.
        rc = sqlite3_bind_zeroblob(m_stmt.get(), index, 0);
    } else {
        rc = sqlite3_bind_blob64(m_stmt.get(), index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    }
    check_bind(m_stmt.get(), rc, index);
    return *this;
}

Statement& Statement::bind_blob_static(int index, std::span<const std::uint8_t> bytes) {
    // Never a null pointer: that would bind SQL NULL instead of an empty blob.
    static constexpr std::uint8_t k_empty = 0;
    const void* data = bytes.empty() ? &k_empty : bytes.data();
    check_bind(m_stmt.get(), sqlite3_bind_blob64(m_stmt.get(), index, data, bytes.size(), SQLITE_STATIC), index);
    return *this;
}

Statement& Statement::bind_null(int index) {
    check_bind(m_stmt.get(), sqlite3_bind_null(m_stmt.get(), index), index);
    return *this;
}

bool Statement::step() {
    std::string message;
    int rc = SQLITE_OK;
    {
        ConnectionLock lock(m_db);
        rc = sqlite3_step(m_stmt.get());
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            message = sqlite3_errmsg(m_db);
        }
    }
    if (rc == SQLITE_ROW) {
        return true;
    }
    if (rc == SQLITE_DONE) {
        return false;
    }
    // Leave the statement reusable: a failed step must be reset before the next one.
    const int reset_rc = sqlite3_reset(m_stmt.get());
    static_cast<void>(reset_rc);  // repeats the step's error code, which we report below
    fail(connection_name(m_db), concat("'", one_line(sqlite3_sql(m_stmt.get())), "' failed"), message, rc);
}

void Statement::run() {
    while (step()) {
    }
}

void Statement::reset() {
    // sqlite3_reset() returns the code of the last step, already reported by step(); clear_bindings cannot fail
    // on a valid statement.
    const int reset_rc = sqlite3_reset(m_stmt.get());
    static_cast<void>(reset_rc);
    if (sqlite3_clear_bindings(m_stmt.get()) != SQLITE_OK) {
        fail(connection_name(m_db), concat("cannot clear bindings of '", one_line(sqlite3_sql(m_stmt.get())), "'"), "");
    }
}

void Statement::rewind() {
    const int reset_rc = sqlite3_reset(m_stmt.get());
    static_cast<void>(reset_rc);  // the last step's code, already reported by step()
}

std::int64_t Statement::column_int(int col) const { return sqlite3_column_int64(m_stmt.get(), col); }

double Statement::column_double(int col) const { return sqlite3_column_double(m_stmt.get(), col); }

std::string Statement::column_text(int col) const {
    const unsigned char* text = sqlite3_column_text(m_stmt.get(), col);
    if (text == nullptr) {
        return {};
    }
    const int size = sqlite3_column_bytes(m_stmt.get(), col);
    return {reinterpret_cast<const char*>(text), static_cast<std::size_t>(size)};
}

bool Statement::column_is_null(int col) const { return sqlite3_column_type(m_stmt.get(), col) == SQLITE_NULL; }

std::span<const std::uint8_t> Statement::column_blob(int col) const {
    const void* blob = sqlite3_column_blob(m_stmt.get(), col);
    if (blob == nullptr) {
        return {};
    }
    const int size = sqlite3_column_bytes(m_stmt.get(), col);
    return {static_cast<const std::uint8_t*>(blob), static_cast<std::size_t>(size)};
}

// ---------------------------------------------------------------------------------------------------------------
// Database

Database::Database(SqlitePtr db, std::string path) : m_db(std::move(db)), m_path(std::move(path)) {}

namespace {

SqlitePtr open_connection(const std::string& path, const std::string& name) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
    SqlitePtr db(raw);  // closes the handle SQLite allocates even when opening fails
    if (rc != SQLITE_OK) {
        if (db != nullptr)
            if (auto line = not_yours(path, sqlite3_system_errno(db.get()))) throw Error(*line);
        fail(name, "cannot open database", db != nullptr ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc));
    }
    if (sqlite3_extended_result_codes(db.get(), 1) != SQLITE_OK) {
        fail(name, "cannot enable extended result codes", sqlite3_errmsg(db.get()));
    }
    return db;
}

[[noreturn]] void throw_no_write_permission(const std::string& name) {
    throw Error(name + ": no permission to write it; hoptrace needs to write the file and to create " + name +
                "-wal and " + name + "-shm beside it");
}

FileState read_file_state(sqlite3* db, const std::string& name) {
    // The first read of the file: this is where a file that is not SQLite at all shows itself.
    sqlite3_stmt* raw = nullptr;
    const char* sql =
        "SELECT (SELECT user_version FROM pragma_user_version), "
        "(SELECT count(*) FROM sqlite_schema WHERE type = 'table'), "
        "(SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'points')";
    int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
    StatementPtr stmt(raw);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt.get());
    }
    if ((rc & 0xff) == SQLITE_NOTADB) {
        throw Error(name + ": not a hoptrace database (file is not a database)");
    }
    if ((rc & 0xff) == SQLITE_READONLY) {
        throw_no_write_permission(name);  // a WAL file whose directory we cannot write (for its -shm)
    }
    if (rc != SQLITE_ROW) {
        fail(name, "cannot read database", sqlite3_errmsg(db));
    }
    FileState state;
    state.user_version = sqlite3_column_int(stmt.get(), 0);
    state.tables = sqlite3_column_int(stmt.get(), 1);
    state.has_points = sqlite3_column_int(stmt.get(), 2) != 0;
    return state;
}

void exec_or_fail(sqlite3* db, const std::string& name, const std::string& sql, std::string_view what) {
    std::string error;
    if (const int rc = exec_raw(db, sql, error); rc != SQLITE_OK) {
        fail(name, what, error, rc);
    }
}

// Settings for a connection: WAL so readers (the sqlite3 shell, report) never block the writer; NORMAL sync
// is durable across application crashes in WAL mode and much faster than FULL; foreign keys stay off while
// packets stream in (the writer checks point ids itself).
void configure(sqlite3* db, const std::string& name, bool file) {
    if (sqlite3_busy_timeout(db, 10'000) != SQLITE_OK) {
        fail(name, "cannot set busy timeout", sqlite3_errmsg(db));
    }
    exec_or_fail(db, name,
                 "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536; "
                 "PRAGMA foreign_keys = OFF;",
                 "cannot configure database");
    if (!file) {
        return;
    }
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &raw, nullptr);
    StatementPtr stmt(raw);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt.get());
    }
    if (rc != SQLITE_ROW) {
        fail(name, "cannot switch to WAL journal", sqlite3_errmsg(db));
    }
    const unsigned char* mode = sqlite3_column_text(stmt.get(), 0);
    if (mode == nullptr || std::string_view(reinterpret_cast<const char*>(mode)) != "wal") {
        fail(name, "cannot switch to WAL journal",
             std::string("journal mode stays ") + (mode != nullptr ? reinterpret_cast<const char*>(mode) : "?"));
    }
}

void create_schema(sqlite3* db, const std::string& name) {
    exec_or_fail(db, name, "BEGIN IMMEDIATE", "cannot create schema");
    std::string error;
    std::string sql = k_schema_sql;
    sql += concat("PRAGMA user_version = ", std::to_string(k_schema_version), ";");
    if (exec_raw(db, sql, error) != SQLITE_OK || exec_raw(db, "COMMIT", error) != SQLITE_OK) {
        std::string ignored;
        static_cast<void>(exec_raw(db, "ROLLBACK", ignored));  // best effort; the first error is the one to report
        fail(name, "cannot create schema", error);
    }
}

// Brings a file written by an older hoptrace up to k_schema_version, in one transaction. Every step only adds:
// what the older version stored keeps its meaning, and the new columns are NULL (or their default) in old rows.
void migrate(sqlite3* db, const std::string& name, int from_version) {
    std::string sql;
    if (from_version < 2) {
        sql +=
            "ALTER TABLE packets ADD COLUMN inner_ip_id INTEGER;"
            "ALTER TABLE packets ADD COLUMN inner_seq INTEGER;"
            "ALTER TABLE journeys ADD COLUMN related_id INTEGER REFERENCES journeys(id);"
            "ALTER TABLE journeys ADD COLUMN relation TEXT;"
            "ALTER TABLE losses ADD COLUMN cause TEXT NOT NULL DEFAULT 'dropped';";
    }
    if (from_version < 3) {
        sql +=
            "ALTER TABLE points ADD COLUMN role_evidence TEXT NOT NULL DEFAULT '';"
            "ALTER TABLE points ADD COLUMN addresses TEXT NOT NULL DEFAULT '';"
            "ALTER TABLE points ADD COLUMN file_born_ns INTEGER;"
            "ALTER TABLE points ADD COLUMN file_written_ns INTEGER;"
            "ALTER TABLE packets ADD COLUMN frag_offset INTEGER NOT NULL DEFAULT 0;"
            "ALTER TABLE packets ADD COLUMN icmp_mtu INTEGER;"
            "ALTER TABLE journeys ADD COLUMN ambiguous INTEGER NOT NULL DEFAULT 0;"
            "ALTER TABLE losses ADD COLUMN error_journey INTEGER REFERENCES journeys(id);"
            "ALTER TABLE losses ADD COLUMN evidence_id INTEGER REFERENCES journeys(id);"
            "ALTER TABLE losses ADD COLUMN outside_window INTEGER NOT NULL DEFAULT 0;";
    }
    if (from_version < 4) {
        sql += "ALTER TABLE points ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;";
    }
    if (from_version < 5) {
        // rule_traces comes with the schema's CREATE TABLE IF NOT EXISTS, run below.
        sql += "ALTER TABLE journeys ADD COLUMN loss_id INTEGER REFERENCES losses(id);";
        sql += k_schema_sql;
    }
    sql += concat("PRAGMA user_version = ", std::to_string(k_schema_version), ";");
    exec_or_fail(db, name, "BEGIN IMMEDIATE", "cannot upgrade the schema");
    std::string error;
    if (read_file_state(db, name).user_version >= k_schema_version) {  // another process was first
        exec_or_fail(db, name, "COMMIT", "cannot upgrade the schema");
        return;
    }
    if (exec_raw(db, sql, error) != SQLITE_OK || exec_raw(db, "COMMIT", error) != SQLITE_OK) {
        std::string ignored;
        static_cast<void>(exec_raw(db, "ROLLBACK", ignored));
        fail(name, concat("cannot upgrade the schema from version ", std::to_string(from_version)), error);
    }
}

}  // namespace

Database Database::open(const std::string& path) {
    const std::string& name = path;
    SqlitePtr db = open_connection(path, name);
    if (sqlite3_db_readonly(db.get(), "main") == 1) {
        // SQLite falls back to read-only when the file is write-protected (a capture made with sudo, read by a
        // user); its first read would then fail with a puzzling "attempt to write a readonly database".
        throw_no_write_permission(name);
    }
    const FileState state = read_file_state(db.get(), name);
    if (state.user_version > k_schema_version) {
        throw Error(name + ": schema version " + std::to_string(state.user_version) + " is newer than this hoptrace (" +
                    std::to_string(k_schema_version) + "); upgrade hoptrace");
    }
    const bool fresh = state.tables == 0 && state.user_version == 0;
    if (!fresh && (!state.has_points || state.user_version == 0)) {
        throw Error(name + ": not a hoptrace database");
    }
    const char* file = sqlite3_db_filename(db.get(), "main");
    configure(db.get(), name, file != nullptr && *file != '\0');  // ":memory:" and "" have no file for WAL
    if (fresh) {
        // k_schema_sql is CREATE … IF NOT EXISTS, so a second process creating the same file at once is harmless.
        create_schema(db.get(), name);
    }
    if (!fresh && state.user_version < k_schema_version) {
        migrate(db.get(), name, state.user_version);
    }
    return {std::move(db), path};
}

Database Database::open_memory() {
    const std::string name = ":memory:";
    SqlitePtr db = open_connection(name, name);
    configure(db.get(), name, false);
    create_schema(db.get(), name);
    return {std::move(db), name};
}

void Database::exec(std::string_view sql) {
    exec_or_fail(m_db.get(), m_path, std::string(sql), concat("'", one_line(sql), "' failed"));
}

std::int64_t Database::add_point(const Point& point) {
    // RETURNING instead of sqlite3_last_insert_rowid(): the writer thread may insert on this connection in between.
    Statement stmt = prepare(
        "INSERT INTO points (netns, ifname, role, ifindex, link_type, source, packets, kernel_drops, path_order, "
        "note, name, role_evidence, addresses, file_born_ns, file_written_ns, complete) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) "
        "RETURNING id");
    bind_point_fields(stmt, point);
    stmt.bind(11, std::string_view(point.name));
    int rc = SQLITE_OK;
    std::string message;
    std::int64_t id = 0;
    {
        // Step to the row and finish the statement under one lock: a statement left in progress on this
        // connection would make the writer thread's COMMIT fail ("SQL statements in progress").
        ConnectionLock lock(m_db.get());
        rc = sqlite3_step(stmt.handle());
        if (rc == SQLITE_ROW) {
            id = sqlite3_column_int64(stmt.handle(), 0);
            const int done = sqlite3_step(stmt.handle());
            if (done != SQLITE_DONE) {
                rc = done;
                message = sqlite3_errmsg(m_db.get());
            }
        } else {
            message = sqlite3_errmsg(m_db.get());
        }
        sqlite3_reset(stmt.handle());
    }
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        throw Error(m_path + ": a point named '" + point.name + "' already exists");
    }
    if (rc != SQLITE_ROW) {
        fail(m_path, concat("cannot add point '", point.name, "'"), message);
    }
    return id;
}

std::optional<Point> Database::find_point(std::string_view name) const {
    Statement stmt = prepare(std::string("SELECT ") + k_point_columns + " FROM points WHERE name = ?1");
    stmt.bind(1, name);
    if (!stmt.step()) {
        return std::nullopt;
    }
    return read_point(stmt);
}

std::vector<Point> Database::points() const {
    Statement stmt =
        prepare(std::string("SELECT ") + k_point_columns + " FROM points ORDER BY path_order IS NULL, path_order, id");
    std::vector<Point> result;
    while (stmt.step()) {
        result.push_back(read_point(stmt));
    }
    return result;
}

void Database::update_point(const Point& point) {
    Statement stmt = prepare(
        "UPDATE points SET netns = ?1, ifname = ?2, role = ?3, ifindex = ?4, link_type = ?5, source = ?6, "
        "packets = ?7, kernel_drops = ?8, path_order = ?9, note = ?10, role_evidence = ?12, addresses = ?13, "
        "file_born_ns = ?14, file_written_ns = ?15, complete = ?16 "
        "WHERE id = ?11 RETURNING id");
    bind_point_fields(stmt, point);
    stmt.bind(11, point.id);
    int rc = SQLITE_OK;
    std::string message;
    {
        // As in add_point: step to the row and finish under one lock, so that no write statement is left in
        // progress for the writer thread's COMMIT to trip over.
        ConnectionLock lock(m_db.get());
        rc = sqlite3_step(stmt.handle());
        if (rc == SQLITE_ROW) rc = sqlite3_step(stmt.handle());
        else if (rc == SQLITE_DONE) rc = SQLITE_NOTFOUND;  // no row came back: no such id
        if (rc != SQLITE_DONE && rc != SQLITE_NOTFOUND) message = sqlite3_errmsg(m_db.get());
        sqlite3_reset(stmt.handle());
    }
    if (rc == SQLITE_NOTFOUND) {
        throw Error(m_path + ": cannot update point '" + point.name + "': no point with id " +
                    std::to_string(point.id));
    }
    if (rc != SQLITE_DONE) fail(m_path, concat("cannot update point '", point.name, "'"), message);
}

void Database::set_meta(std::string_view key, std::string_view value) {
    Statement stmt =
        prepare("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    stmt.bind(1, key).bind(2, value);
    stmt.run();
}

void Database::remove_meta(std::string_view key) {
    Statement stmt = prepare("DELETE FROM meta WHERE key = ?1");
    stmt.bind(1, key);
    stmt.run();
}

void Database::begin_snapshot() { exec("BEGIN"); }

void Database::clear() {
    Transaction txn(*this);
    exec(
        "DELETE FROM packets; DELETE FROM points; DELETE FROM conntrack; DELETE FROM rule_traces; "
        "DELETE FROM rule_counters; DELETE FROM containers; DELETE FROM proxies; DELETE FROM meta;");
    txn.commit();
}

std::optional<std::string> Database::meta(std::string_view key) const {
    Statement stmt = prepare("SELECT value FROM meta WHERE key = ?1");
    stmt.bind(1, key);
    if (!stmt.step()) {
        return std::nullopt;
    }
    return stmt.column_text(0);
}

void Database::build_indexes() {
    Transaction txn(*this);
    exec(k_index_sql);
    // The planner's statistics from a sample: a full ANALYZE reads every entry of every index (~0.1 us of CPU
    // per packet). SQLite's documentation recommends 100-1000 for this limit.
    exec("PRAGMA analysis_limit = 1000; ANALYZE");
    txn.commit();
}

// ---------------------------------------------------------------------------------------------------------------
// Transaction

Transaction::Transaction(Database& db) : m_db(db) {
    // Held until commit/rollback: the other threads sharing this connection (the Writer's, the main thread) wait
    // instead of running their statements inside our transaction or failing to BEGIN their own.
    sqlite3_mutex_enter(sqlite3_db_mutex(m_db.handle()));
    try {
        m_db.exec("BEGIN IMMEDIATE");
    } catch (...) {
        sqlite3_mutex_leave(sqlite3_db_mutex(m_db.handle()));
        throw;
    }
}

Transaction::~Transaction() {
    if (!m_done) {
        sqlite3* db = m_db.handle();
        // After some errors (SQLITE_FULL, SQLITE_IOERR …) SQLite has already rolled back; ROLLBACK would fail.
        if (sqlite3_get_autocommit(db) == 0) {
            const int rc = sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            static_cast<void>(rc);  // a destructor cannot report it; SQLite rolls back on close regardless
        }
        sqlite3_mutex_leave(sqlite3_db_mutex(db));
    }
}

void Transaction::commit() {
    if (m_done) {
        throw Error(m_db.path() + ": transaction committed twice");
    }
    m_db.exec("COMMIT");  // on failure the transaction stays open; the destructor rolls it back
    m_done = true;
    sqlite3_mutex_leave(sqlite3_db_mutex(m_db.handle()));
}

// ---------------------------------------------------------------------------------------------------------------
// Read-only access (report, export): apart from Database::open, so that nothing here creates or changes a file.

Database Database::open_read_only(const std::string& path) {
    const std::string& name = path;
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr);
    SqlitePtr db(raw);
    if (rc != SQLITE_OK) {
        if (db != nullptr)
            if (auto line = not_yours(path, sqlite3_system_errno(db.get()))) throw Error(*line);
        fail(name, "cannot open database", db != nullptr ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc));
    }
    if (sqlite3_extended_result_codes(db.get(), 1) != SQLITE_OK) {
        fail(name, "cannot enable extended result codes", sqlite3_errmsg(db.get()));
    }
    if (sqlite3_busy_timeout(db.get(), 10'000) != SQLITE_OK) {
        fail(name, "cannot set busy timeout", sqlite3_errmsg(db.get()));
    }
    const FileState state = read_file_state(db.get(), name);
    if (state.tables == 0 && state.user_version == 0) {
        throw Error(name +
                    ": not a hoptrace database (it holds no tables); create one with 'hoptrace import' or "
                    "'hoptrace capture'");
    }
    if (!state.has_points || state.user_version == 0) {
        throw Error(name + ": not a hoptrace database");
    }
    if (state.user_version > k_schema_version) {
        throw Error(name + ": schema version " + std::to_string(state.user_version) + " is newer than this hoptrace (" +
                    std::to_string(k_schema_version) + "); upgrade hoptrace");
    }
    if (state.user_version < k_oldest_readable_version) {
        throw Error(name + ": written by an older hoptrace (schema version " + std::to_string(state.user_version) +
                    "); upgrade it once with 'hoptrace correlate --db " + name + "'");
    }
    exec_or_fail(db.get(), name, "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;",
                 "cannot configure database");
    return {std::move(db), path};
}

bool Database::file_holds_points(const std::string& path) {
    sqlite3* raw = nullptr;
    // Read-write (never create) although it only reads: the -wal and -shm a WAL file's reader makes are removed
    // again when the last connection closes, which a read-only one cannot do.
    const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
    SqlitePtr db(raw);
    if (rc != SQLITE_OK || sqlite3_busy_timeout(db.get(), 10'000) != SQLITE_OK) return false;
    try {
        if (!read_file_state(db.get(), path).has_points) return false;
    } catch (const Error&) {
        return false;
    }
    sqlite3_stmt* stmt_raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), "SELECT EXISTS (SELECT 1 FROM points)", -1, &stmt_raw, nullptr) != SQLITE_OK)
        return false;
    StatementPtr stmt(stmt_raw);
    return sqlite3_step(stmt.get()) == SQLITE_ROW && sqlite3_column_int(stmt.get(), 0) != 0;
}

}  // namespace hoptrace::store
