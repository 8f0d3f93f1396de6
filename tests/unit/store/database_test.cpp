#include "store/database.hpp"
#include "store/schema.hpp"

#include <gtest/gtest.h>

#include "temp_dir.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

namespace hoptrace::store {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

// An independent connection, to see the file as another process (the sqlite3 shell) would.
class RawConnection {
public:
    explicit RawConnection(const std::string& path) {
        sqlite3* db = nullptr;
        const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
        m_db.reset(db);
        if (rc != SQLITE_OK) {
            throw std::runtime_error("cannot open " + path);
        }
    }
    void exec(const std::string& sql) {
        if (sqlite3_exec(m_db.get(), sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
            throw std::runtime_error(sqlite3_errmsg(m_db.get()));
        }
    }
    std::string text(const std::string& sql) {
        Statement stmt(m_db.get(), sql);
        return stmt.step() ? stmt.column_text(0) : "(no row)";
    }

private:
    SqlitePtr m_db;
};

std::string open_error(const std::string& path) {
    try {
        Database::open(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// open_error() as an unprivileged user: root ignores file permissions, so a root test run forks and drops to
// nobody (65534) in the child.
std::string open_error_without_privileges(const std::string& path) {
    int fds[2];
    if (pipe(fds) != 0) {
        throw std::runtime_error("pipe failed");
    }
    const pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
            _exit(2);
        }
        const std::string message = open_error(path);
        const ssize_t written = write(fds[1], message.data(), message.size());
        _exit(written == static_cast<ssize_t>(message.size()) ? 0 : 3);
    }
    close(fds[1]);
    std::string message;
    char buffer[512];
    ssize_t got = 0;
    while ((got = read(fds[0], buffer, sizeof buffer)) > 0) {
        message.append(buffer, static_cast<std::size_t>(got));
    }
    close(fds[0]);
    int status = 0;
    waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    return message;
}

std::int64_t scalar(const Database& db, const std::string& sql) {
    Statement stmt = db.prepare(sql);
    EXPECT_TRUE(stmt.step()) << sql;
    return stmt.column_int(0);
}

Point make_point(const std::string& name) {
    Point point;
    point.name = name;
    point.netns = "ns-" + name;
    point.ifname = "eth0";
    point.role = "veth";
    point.ifindex = 7;
    point.link_type = 1;
    point.source = "live";
    point.note = "note of " + name;
    return point;
}

TEST(Database, memory_database_gets_every_table_and_the_schema_version) {
    const Database db = Database::open_memory();
    EXPECT_EQ(scalar(db, "PRAGMA user_version"), k_schema_version);
    std::set<std::string> tables;
    Statement stmt = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'");
    while (stmt.step()) {
        tables.insert(stmt.column_text(0));
    }
    const std::set<std::string> expected{"meta",          "points",     "packets", "flows",     "journeys",
                                         "nat_rewrites",  "hops",       "losses",  "conntrack", "rule_traces",
                                         "rule_counters", "containers", "proxies"};
    EXPECT_EQ(tables, expected);
    EXPECT_EQ(db.path(), ":memory:");
}

TEST(Database, new_file_gets_schema_version_and_wal_journal) {
    const TempDir dir;
    const std::string path = dir.file("capture.db");
    {
        const Database db = Database::open(path);
        EXPECT_EQ(db.path(), path);
        Statement mode = db.prepare("PRAGMA journal_mode");
        ASSERT_TRUE(mode.step());
        EXPECT_EQ(mode.column_text(0), "wal");
        EXPECT_EQ(scalar(db, "PRAGMA synchronous"), 1);  // NORMAL
        EXPECT_EQ(scalar(db, "PRAGMA foreign_keys"), 0);
    }
    RawConnection raw(path);
    EXPECT_EQ(raw.text("PRAGMA user_version"), std::to_string(k_schema_version));
    EXPECT_EQ(raw.text("PRAGMA journal_mode"), "wal");  // WAL is a property of the file, not the connection
}

TEST(Database, reopening_a_file_keeps_its_data) {
    const TempDir dir;
    const std::string path = dir.file("capture.db");
    {
        Database db = Database::open(path);
        db.add_point(make_point("container"));
        db.set_meta("command_line", "hoptrace capture --db capture.db");
    }
    Database db = Database::open(path);
    const std::optional<Point> point = db.find_point("container");
    ASSERT_TRUE(point.has_value());
    EXPECT_EQ(point->netns, "ns-container");
    EXPECT_EQ(db.meta("command_line"), "hoptrace capture --db capture.db");
    EXPECT_EQ(scalar(db, "PRAGMA user_version"), k_schema_version);
}

TEST(Database, empty_file_becomes_a_hoptrace_database) {
    const TempDir dir;
    const std::string path = dir.file("empty.db");
    std::ofstream(path).close();
    const Database db = Database::open(path);
    EXPECT_EQ(scalar(db, "PRAGMA user_version"), k_schema_version);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM points"), 0);
}

TEST(Database, version_1_file_is_upgraded_in_place_and_keeps_its_rows) {
    const TempDir dir;
    const std::string path = dir.file("v1.db");
    {
        Database db = Database::open(path);
        Point point;
        point.name = "c-eth0";
        db.add_point(point);
    }
    {
        // What hoptrace 1 wrote: the same tables without the version 2 columns.
        RawConnection raw(path);
        raw.exec(
            "ALTER TABLE packets DROP COLUMN inner_ip_id; ALTER TABLE packets DROP COLUMN inner_seq;"
            "ALTER TABLE journeys DROP COLUMN related_id; ALTER TABLE journeys DROP COLUMN relation;"
            "ALTER TABLE losses DROP COLUMN cause;"
            "ALTER TABLE points DROP COLUMN role_evidence; ALTER TABLE points DROP COLUMN addresses;"
            "ALTER TABLE points DROP COLUMN file_born_ns; ALTER TABLE points DROP COLUMN file_written_ns;"
            "ALTER TABLE packets DROP COLUMN frag_offset; ALTER TABLE packets DROP COLUMN icmp_mtu;"
            "ALTER TABLE journeys DROP COLUMN ambiguous;"
            "ALTER TABLE losses DROP COLUMN error_journey; ALTER TABLE losses DROP COLUMN evidence_id;"
            "ALTER TABLE losses DROP COLUMN outside_window;"
            "ALTER TABLE points DROP COLUMN complete;"
            "ALTER TABLE journeys DROP COLUMN loss_id; DROP TABLE rule_traces;"
            "PRAGMA user_version = 1;"
            "INSERT INTO flows VALUES (1, 17, 'a', 'b', 1, 2, 'a', 'b', 1, 2, 3, 1, 0, 0);"
            "INSERT INTO losses (flow_id, direction, after_point, expected_point, count) VALUES (1, 'forward', 1, 1, "
            "3);");
    }
    const Database db = Database::open(path);
    EXPECT_EQ(scalar(db, "PRAGMA user_version"), k_schema_version);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM points WHERE name = 'c-eth0'"), 1);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM losses WHERE cause = 'dropped' AND count = 3"), 1);
    EXPECT_EQ(
        scalar(db, "SELECT count(*) FROM pragma_table_info('packets') WHERE name IN ('inner_ip_id', 'inner_seq')"), 2);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM pragma_table_info('journeys') WHERE name IN ('related_id', 'relation')"),
              2);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM pragma_table_info('packets') WHERE name IN ('frag_offset', 'icmp_mtu')"),
              2);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM pragma_table_info('journeys') WHERE name = 'ambiguous'"), 1);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM points WHERE role_evidence = '' AND addresses = ''"), 1);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM points WHERE complete = 1"), 1);  // an old point was read to its end
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM pragma_table_info('journeys') WHERE name = 'loss_id'"), 1);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM rule_traces"), 0);  // version 5's table, empty
    // Opening it again is a no-op.
    EXPECT_EQ(scalar(Database::open(path), "PRAGMA user_version"), k_schema_version);
}

TEST(Database, file_holds_points_asks_without_changing_or_creating_the_file) {
    // capture refuses a database that holds a capture before opening it to write (which would upgrade an old one).
    const TempDir dir;
    const std::string old = dir.file("v1.db");
    {
        Database db = Database::open(old);
        Point point;
        point.name = "c-eth0";
        db.add_point(point);
    }
    RawConnection(old).exec("PRAGMA user_version = 1;");
    ASSERT_FALSE(std::filesystem::exists(old + "-wal"));  // an older hoptrace's (its version is enough here)
    EXPECT_TRUE(Database::file_holds_points(old));
    EXPECT_EQ(RawConnection(old).text("PRAGMA user_version"), "1") << "not upgraded";
    EXPECT_FALSE(std::filesystem::exists(old + "-wal") || std::filesystem::exists(old + "-shm"))
        << "nothing left beside the file";

    const std::string empty_db = dir.file("empty.db");
    { Database::open(empty_db); }
    EXPECT_FALSE(Database::file_holds_points(empty_db));
    const std::string text = dir.file("notes.txt");
    { std::ofstream(text) << "not a database\n"; }
    EXPECT_FALSE(Database::file_holds_points(text));
    EXPECT_FALSE(Database::file_holds_points(dir.file("missing.db")));
    EXPECT_FALSE(std::filesystem::exists(dir.file("missing.db")));
}

TEST(Database, newer_schema_version_is_refused_with_upgrade_hint) {
    const TempDir dir;
    const std::string path = dir.file("future.db");
    Database::open(path);
    RawConnection(path).exec("PRAGMA user_version = " + std::to_string(k_schema_version + 1));
    EXPECT_EQ(open_error(path), path + ": schema version " + std::to_string(k_schema_version + 1) +
                                    " is newer than this hoptrace (" + std::to_string(k_schema_version) +
                                    "); upgrade hoptrace");
}

TEST(Database, file_that_is_not_sqlite_is_refused_and_left_alone) {
    const TempDir dir;
    const std::string path = dir.file("notes.txt");
    const std::string content = "these are not the packets you are looking for, padded past one page of text\n";
    {
        std::ofstream out(path);
        for (int i = 0; i < 100; ++i) {
            out << content;
        }
    }
    const auto size_before = fs::file_size(path);
    EXPECT_EQ(open_error(path), path + ": not a hoptrace database (file is not a database)");
    EXPECT_EQ(fs::file_size(path), size_before);
    EXPECT_FALSE(fs::exists(path + "-wal"));
}

TEST(Database, foreign_sqlite_database_is_refused_and_keeps_its_journal_mode) {
    const TempDir dir;
    const std::string path = dir.file("other.db");
    RawConnection(path).exec("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('ada');");
    EXPECT_EQ(open_error(path), path + ": not a hoptrace database");
    EXPECT_EQ(RawConnection(path).text("PRAGMA journal_mode"), "delete");
}

TEST(Database, sqlite_database_with_points_but_no_version_is_refused) {
    const TempDir dir;
    const std::string path = dir.file("lookalike.db");
    RawConnection(path).exec("CREATE TABLE points (id INTEGER PRIMARY KEY, name TEXT)");
    EXPECT_EQ(open_error(path), path + ": not a hoptrace database");
}

TEST(Database, unopenable_path_error_names_the_file_on_one_line) {
    const TempDir dir;
    const std::string path = dir.file("no/such/dir/capture.db");
    const std::string error = open_error(path);
    EXPECT_EQ(error.rfind(path + ": ", 0), 0U) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST(Database, file_the_user_cannot_write_gets_a_clear_error) {
    const TempDir dir;
    const std::string path = dir.file("captured-with-sudo.db");
    Database::open(path);
    const std::string expected = path + ": no permission to write it; hoptrace needs to write the file and to create " +
                                 path + "-wal and " + path + "-shm beside it";
    fs::permissions(fs::path(path).parent_path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                                      fs::perms::others_read | fs::perms::others_exec);
    // The file is read-only for the user.
    fs::permissions(path,
                    fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
    EXPECT_EQ(open_error_without_privileges(path), expected);
    // The file is writable, but its directory is not, so SQLite cannot create the WAL index (-shm) beside it.
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                              fs::perms::group_write | fs::perms::others_read | fs::perms::others_write);
    EXPECT_EQ(open_error_without_privileges(path), expected);
}

// ---- Read-only: report and export ----------------------------------------------------------------------------

std::string read_only_error(const std::string& path) {
    try {
        Database::open_read_only(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(DatabaseReadOnly, reads_a_database_and_cannot_change_it) {
    const TempDir dir;
    const std::string path = dir.file("capture.db");
    {
        Database db = Database::open(path);
        db.add_point(make_point("c1"));
        db.set_meta("correlated_ns", "1");
    }
    Database db = Database::open_read_only(path);
    ASSERT_EQ(db.points().size(), 1U);
    EXPECT_EQ(db.meta("correlated_ns"), "1");
    EXPECT_THROW(db.set_meta("k", "v"), Error);
    EXPECT_THROW(db.add_point(make_point("c2")), Error);
    EXPECT_EQ(RawConnection(path).text("SELECT count(*) FROM points"), "1");
    EXPECT_EQ(RawConnection(path).text("SELECT count(*) FROM meta WHERE key = 'k'"), "0");
}

TEST(DatabaseReadOnly, an_empty_file_is_refused_and_stays_empty) {
    const TempDir dir;
    const std::string path = dir.file("empty.db");
    std::ofstream(path).close();
    const std::string error = read_only_error(path);
    EXPECT_EQ(error.rfind(path + ": not a hoptrace database", 0), 0U) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    EXPECT_EQ(fs::file_size(path), 0U);
    EXPECT_FALSE(fs::exists(path + "-wal"));
    EXPECT_EQ(RawConnection(path).text("SELECT count(*) FROM sqlite_schema"), "0");
}

TEST(DatabaseReadOnly, a_missing_file_is_not_created) {
    const TempDir dir;
    const std::string path = dir.file("missing.db");
    const std::string error = read_only_error(path);
    EXPECT_EQ(error.rfind(path + ": cannot open database", 0), 0U) << error;
    EXPECT_FALSE(fs::exists(path));
}

TEST(DatabaseReadOnly, foreign_and_newer_and_older_files_are_refused_unchanged) {
    const TempDir dir;
    const std::string foreign = dir.file("other.db");
    RawConnection(foreign).exec("CREATE TABLE contacts (name TEXT)");
    EXPECT_EQ(read_only_error(foreign), foreign + ": not a hoptrace database");

    const std::string text = dir.file("notes.txt");
    std::ofstream(text) << std::string(8192, 'x');
    EXPECT_EQ(read_only_error(text), text + ": not a hoptrace database (file is not a database)");

    const std::string newer = dir.file("newer.db");
    Database::open(newer);
    RawConnection(newer).exec("PRAGMA user_version = " + std::to_string(k_schema_version + 1));
    EXPECT_NE(read_only_error(newer).find("is newer than this hoptrace"), std::string::npos);

    const std::string older = dir.file("older.db");
    Database::open(older);
    RawConnection(older).exec("PRAGMA user_version = 1");
    EXPECT_EQ(read_only_error(older), older +
                                          ": written by an older hoptrace (schema version 1); upgrade it once "
                                          "with 'hoptrace correlate --db " +
                                          older + "'");
    EXPECT_EQ(RawConnection(older).text("PRAGMA user_version"), "1");
}

TEST(Database, open_accepts_memory_like_open_memory) {
    const Database db = Database::open(":memory:");
    EXPECT_EQ(scalar(db, "PRAGMA user_version"), k_schema_version);
    EXPECT_EQ(db.path(), ":memory:");
}

TEST(Database, points_are_added_found_and_updated) {
    Database db = Database::open_memory();
    Point point = make_point("veth");
    point.packets = 3;
    point.kernel_drops = 4;
    point.path_order = 1;
    const std::int64_t id = db.add_point(point);
    EXPECT_GT(id, 0);

    std::optional<Point> found = db.find_point("veth");
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->id, id);
    EXPECT_EQ(found->name, "veth");
    EXPECT_EQ(found->netns, "ns-veth");
    EXPECT_EQ(found->ifname, "eth0");
    EXPECT_EQ(found->role, "veth");
    EXPECT_EQ(found->ifindex, 7U);
    EXPECT_EQ(found->link_type, 1U);
    EXPECT_EQ(found->source, "live");
    EXPECT_EQ(found->packets, 3U);
    EXPECT_EQ(found->kernel_drops, 4U);
    EXPECT_EQ(found->path_order, 1);
    EXPECT_EQ(found->note, "note of veth");
    EXPECT_FALSE(db.find_point("bridge").has_value());

    found->netns = "";
    found->role = "bridge";
    found->ifindex = 4'000'000'000U;  // does not fit an int32
    found->kernel_drops = 12;
    found->path_order.reset();
    found->note = "renamed";
    found->name = "ignored: update keeps the name";
    db.update_point(*found);
    const std::optional<Point> updated = db.find_point("veth");
    ASSERT_TRUE(updated.has_value());
    EXPECT_EQ(updated->netns, "");
    EXPECT_EQ(updated->role, "bridge");
    EXPECT_EQ(updated->ifindex, 4'000'000'000U);
    EXPECT_EQ(updated->kernel_drops, 12U);
    EXPECT_FALSE(updated->path_order.has_value());
    EXPECT_EQ(updated->note, "renamed");
    // Empty strings are stored as '', never NULL (the columns are NOT NULL).
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM points WHERE netns = ''"), 1);
}

TEST(Database, default_point_gets_the_schema_defaults) {
    Database db = Database::open_memory();
    Point point;
    point.name = "bare";
    db.add_point(point);
    const std::optional<Point> found = db.find_point("bare");
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->role, "other");
    EXPECT_EQ(found->packets, 0U);
    EXPECT_FALSE(found->path_order.has_value());
}

TEST(Database, points_are_listed_by_path_order_with_unordered_last) {
    Database db = Database::open_memory();
    const auto add = [&](const std::string& name, std::optional<int> order) {
        Point point = make_point(name);
        point.path_order = order;
        return db.add_point(point);
    };
    add("unordered-a", std::nullopt);
    add("uplink", 2);
    add("container", 0);
    add("unordered-b", std::nullopt);
    add("bridge", 1);
    std::vector<std::string> names;
    for (const Point& point : db.points()) {
        names.push_back(point.name);
    }
    EXPECT_EQ(names, (std::vector<std::string>{"container", "bridge", "uplink", "unordered-a", "unordered-b"}));
}

TEST(Database, duplicate_point_name_error_names_the_point) {
    Database db = Database::open_memory();
    db.add_point(make_point("eth0@container"));
    try {
        db.add_point(make_point("eth0@container"));
        FAIL() << "no error for a duplicate name";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), ":memory:: a point named 'eth0@container' already exists");
    }
    EXPECT_EQ(db.points().size(), 1U);
}

TEST(Database, updating_a_missing_point_is_an_error) {
    Database db = Database::open_memory();
    Point point = make_point("ghost");
    point.id = 42;
    EXPECT_THROW(db.update_point(point), Error);
}

TEST(Database, meta_round_trips_and_overwrites) {
    Database db = Database::open_memory();
    EXPECT_FALSE(db.meta("host").has_value());
    db.set_meta("host", "lab-1");
    db.set_meta("start_ns", "1700000000123456789");
    db.set_meta("empty", "");
    EXPECT_EQ(db.meta("host"), "lab-1");
    EXPECT_EQ(db.meta("start_ns"), "1700000000123456789");
    EXPECT_EQ(db.meta("empty"), "");
    db.set_meta("host", "lab-2");
    EXPECT_EQ(db.meta("host"), "lab-2");
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM meta"), 3);
}

TEST(Database, build_indexes_creates_the_schema_indexes) {
    Database db = Database::open_memory();
    db.build_indexes();
    db.build_indexes();  // idempotent
    EXPECT_EQ(scalar(db,
                     "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name IN "
                     "('packets_point_ts', 'packets_journey', 'journeys_flow')"),
              3);
}

TEST(Transaction, committed_changes_stay) {
    Database db = Database::open_memory();
    {
        Transaction txn(db);
        db.set_meta("k", "v");
        txn.commit();
    }
    EXPECT_EQ(db.meta("k"), "v");
}

TEST(Transaction, uncommitted_changes_are_rolled_back) {
    Database db = Database::open_memory();
    {
        const Transaction txn(db);
        db.set_meta("k", "v");
        db.add_point(make_point("p"));
    }
    EXPECT_FALSE(db.meta("k").has_value());
    EXPECT_TRUE(db.points().empty());
    EXPECT_NE(sqlite3_get_autocommit(db.handle()), 0);  // no transaction left open
}

TEST(Transaction, exception_unwinding_rolls_back) {
    Database db = Database::open_memory();
    db.add_point(make_point("existing"));
    try {
        const Transaction txn(db);
        db.set_meta("k", "v");
        db.add_point(make_point("existing"));  // throws: duplicate name
        FAIL() << "duplicate point accepted";
    } catch (const Error&) {
    }
    EXPECT_FALSE(db.meta("k").has_value());
    EXPECT_NE(sqlite3_get_autocommit(db.handle()), 0);
    // The connection is usable afterwards.
    Transaction txn(db);
    db.set_meta("k", "after");
    txn.commit();
    EXPECT_EQ(db.meta("k"), "after");
}

TEST(Transaction, file_database_rollback_is_invisible_to_other_connections) {
    const TempDir dir;
    const std::string path = dir.file("txn.db");
    Database db = Database::open(path);
    {
        const Transaction txn(db);
        db.set_meta("k", "v");
    }
    EXPECT_EQ(RawConnection(path).text("SELECT count(*) FROM meta"), "0");
}

TEST(Statement, empty_text_and_blob_are_values_not_null) {
    Database db = Database::open_memory();
    db.exec("CREATE TABLE t (s TEXT, b BLOB)");
    Statement insert = db.prepare("INSERT INTO t VALUES (?1, ?2)");
    insert.bind(1, std::string_view()).bind_blob(2, std::span<const std::uint8_t>());
    insert.run();
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM t WHERE s = '' AND b = x''"), 1);
}

TEST(Statement, values_round_trip_and_reset_allows_reuse) {
    Database db = Database::open_memory();
    db.exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB, n INTEGER)");
    Statement insert = db.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)");
    const std::uint8_t bytes[] = {0x00, 0xff, 0x10, 0x00};
    for (std::int64_t i = 0; i < 2; ++i) {
        insert.bind(1, INT64_MIN + i)
            .bind(2, 0.5)
            .bind(3, std::string_view("é\0x", 4))
            .bind_blob(4, bytes)
            .bind_null(5);
        insert.run();
        insert.reset();
    }
    Statement select = db.prepare("SELECT i, d, s, b, n FROM t ORDER BY i");
    ASSERT_TRUE(select.step());
    EXPECT_EQ(select.column_int(0), INT64_MIN);
    EXPECT_DOUBLE_EQ(select.column_double(1), 0.5);
    EXPECT_EQ(select.column_text(2), std::string("é\0x", 4));
    const std::span<const std::uint8_t> blob = select.column_blob(3);
    EXPECT_EQ(std::vector<std::uint8_t>(blob.begin(), blob.end()), std::vector<std::uint8_t>(bytes, bytes + 4));
    EXPECT_TRUE(select.column_is_null(4));
    EXPECT_EQ(select.column_text(4), "");
    ASSERT_TRUE(select.step());
    EXPECT_EQ(select.column_int(0), INT64_MIN + 1);
    EXPECT_FALSE(select.step());
}

TEST(Statement, rewind_keeps_bindings_and_static_blobs_are_stored) {
    Database db = Database::open_memory();
    db.exec("CREATE TABLE t (i INTEGER, b BLOB NOT NULL)");
    Statement insert = db.prepare("INSERT INTO t VALUES (?1, ?2)");
    const std::vector<std::uint8_t> bytes = {1, 2, 3};
    insert.bind(1, std::int64_t{7}).bind_blob_static(2, bytes);
    insert.run();
    insert.rewind();
    insert.run();  // the same bindings again
    insert.reset();
    insert.bind(1, std::int64_t{8}).bind_blob_static(2, std::span<const std::uint8_t>());
    insert.run();
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM t WHERE i = 7 AND b = x'010203'"), 2);
    EXPECT_EQ(scalar(db, "SELECT count(*) FROM t WHERE i = 8 AND b = x''"), 1);
}

TEST(Statement, errors_name_the_database_and_the_sql) {
    const TempDir dir;
    const std::string path = dir.file("errors.db");
    Database db = Database::open(path);
    try {
        static_cast<void>(db.prepare("SELECT nothing FROM nowhere"));
        FAIL() << "bad SQL prepared";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0U) << e.what();
        EXPECT_NE(std::string(e.what()).find("nowhere"), std::string::npos) << e.what();
    }
    try {  // a long statement is quoted only as far as a line can hold
        std::string sql = "SELECT 1";
        for (int i = 0; i < 100; ++i) sql += ", nothing" + std::to_string(i);
        static_cast<void>(db.prepare(sql + " FROM nowhere"));
        FAIL() << "bad SQL prepared";
    } catch (const Error& e) {
        EXPECT_LT(std::string(e.what()).size(), 400U) << e.what();
        EXPECT_NE(std::string(e.what()).find("SELECT 1, nothing0"), std::string::npos) << e.what();
    }
    db.exec("CREATE TABLE t (x INTEGER NOT NULL)");
    Statement insert = db.prepare("INSERT INTO t VALUES (?1)");
    insert.bind_null(1);
    try {
        insert.run();
        FAIL() << "NULL accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0U) << e.what();
        EXPECT_NE(std::string(e.what()).find("NOT NULL"), std::string::npos) << e.what();
    }
    insert.reset();  // reusable after a failure
    insert.bind(1, std::int64_t{1});
    insert.run();
    EXPECT_THROW(db.exec("INSERT INTO missing VALUES (1)"), Error);
    EXPECT_THROW(static_cast<void>(db.prepare("SELECT 1; SELECT 2")), Error);
}

}  // namespace
}  // namespace hoptrace::store
