// store::WriterLock: one writer at a time, and a lock that does not cost SQLite its own locks.
#include "store/database.hpp"
#include "store/lock.hpp"
#include "tests/unit/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

namespace hoptrace::store {
namespace {

TEST(WriterLock, a_second_writer_is_refused_naming_the_file_until_the_first_lets_go) {
    test::TempDir dir;
    const std::string path = dir.file("run.db");
    { Database::open(path); }
    auto first = WriterLock::acquire(path);
    ASSERT_TRUE(first) << first.error();
    // flock locks belong to open file descriptions: a second acquire in this process conflicts just like another
    // process would.
    auto second = WriterLock::acquire(path);
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().find(path + ": another hoptrace"), std::string::npos) << second.error();
    // Another process sees the same.
    const pid_t child = ::fork();
    if (child == 0) ::_exit(WriterLock::acquire(path) ? 0 : 3);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_EQ(WEXITSTATUS(status), 3);
    *first = WriterLock();
    EXPECT_TRUE(WriterLock::acquire(path));
}

TEST(WriterLock, a_missing_file_is_one_line_naming_it) {
    test::TempDir dir;
    const auto lock = WriterLock::acquire(dir.file("none.db"));
    ASSERT_FALSE(lock);
    EXPECT_EQ(lock.error().rfind(dir.file("none.db") + ": cannot open it: ", 0), 0U) << lock.error();
}

TEST(WriterLock, held_while_the_database_is_written_keeps_sqlite_working) {
    // The lock's own descriptor stays open while SQLite has the file: closing a second descriptor of a file would
    // drop SQLite's POSIX locks, so the lock is only released after the database is closed.
    test::TempDir dir;
    const std::string path = dir.file("run.db");
    { Database::open(path); }
    auto lock = WriterLock::acquire(path);
    ASSERT_TRUE(lock);
    Database db = Database::open(path);
    db.set_meta("k", "v");
    Database reader = Database::open_read_only(path);
    EXPECT_EQ(reader.meta("k"), "v");
}

}  // namespace
}  // namespace hoptrace::store
