// store::WriterLock: one writer at a time, and a lock that does not cost SQLite its own locks.
#include "store/lock.hpp"
#include "store/database.hpp"
#include "tests/unit/temp_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <sys/stat.h>
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

TEST(WriterLock, another_users_file_says_whose_it_is_and_what_to_do_to_writers_and_readers) {
    // The case behind most EACCES: a capture made with sudo (0600, root's) opened by the user without it.
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to try as another user";
    test::TempDir dir;
    std::filesystem::permissions(dir.file(""), std::filesystem::perms(0755));
    const std::string path = dir.file("root.db");
    { Database::open(path); }
    ::chmod(path.c_str(), 0600);
    int pipe_fds[2] = {-1, -1};
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t child = ::fork();
    if (child == 0) {
        ::close(pipe_fds[0]);
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
        const auto lock = WriterLock::acquire(path);
        std::string text = lock ? std::string("acquired") : lock.error();
        try {  // a reader (report, export) says the same
            Database::open_read_only(path);
            text += "\nopened";
        } catch (const Error& e) {
            if (e.what() != text) text += std::string("\nread-only: ") + e.what();
        }
        const auto written = ::write(pipe_fds[1], text.data(), text.size());
        ::_exit(written == static_cast<ssize_t>(text.size()) ? 0 : 3);
    }
    ::close(pipe_fds[1]);
    std::string said;
    char buf[512];
    for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) said.append(buf, static_cast<std::size_t>(n));
    ::close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_EQ(WEXITSTATUS(status), 0);
    // One line naming the file and the owner the test gave it, and how to get in.
    EXPECT_EQ(said.rfind(path + ": permission denied", 0), 0U) << said;
    EXPECT_NE(said.find("uid 0;"), std::string::npos) << said;
    EXPECT_NE(said.find("sudo"), std::string::npos) << said;
    EXPECT_EQ(said.find('\n'), std::string::npos) << said;
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
